"""Printing: derivation -> one self-contained HTML page.

:func:`render_html` lays out the same document as the LaTeX/Markdown notes (the sections
of :func:`symgrad.documents.render.rendered_sections`, printed for ``"html"``) with

- every backward step in a collapsible ``<details>`` block,
- the computational graph inline (SVG, when Graphviz ``dot`` is installed),
- the generated NumPy code beside the derivation, with two-way links: each statement of
  the backward pass links to its step (``#step-delta2``) and each step links to its first
  code line (``#code-delta2``),
- the math rendered offline by KaTeX, vendored in ``templates/html/`` (MIT licence) and
  inlined into the page with its fonts as data URIs: the page needs no network.

Nothing is derived here; the page reads the derivation and the generated code.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

from symgrad.calculus.reverse import Derivation
from symgrad.documents.graph import svg_of, to_dot
from symgrad.documents.render import RenderedItem, rendered_sections
from symgrad.escape import html_id
from symgrad.templating import environment, template_dir

#: An assignment (``delta2 = ...``, ``delta2 *= ...``) at the start of a code line.
_ASSIGN = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?:[-+*/@]?=)(?!=)")


@dataclass(frozen=True)
class _PageSection:
    title: str
    level: int
    items: tuple[RenderedItem, ...]
    anchor: str
    code_anchor: str
    boxed: bool


def _vendor() -> Path:
    return template_dir() / "html"


def katex_css() -> str:
    """KaTeX's stylesheet with each font as an inline woff2 data URI (no other formats:
    every browser that runs KaTeX reads woff2)."""
    folder = _vendor()
    css = (folder / "katex.min.css").read_text(encoding="utf-8")

    def font(m: re.Match[str]) -> str:
        name = m.group(1)
        data = base64.b64encode((folder / "fonts" / f"{name}.woff2").read_bytes()).decode()
        return f'src:url(data:font/woff2;base64,{data}) format("woff2")'

    return re.sub(r"src:url\(fonts/([\w-]+)\.woff2\)[^;}]*", font, css)


def katex_js() -> str:
    return (_vendor() / "katex.min.js").read_text(encoding="utf-8")


def _code_html(
    code: str, grads: set[str], forward: set[str], params: set[str]
) -> tuple[str, dict[str, str]]:
    """The code as linked lines, and grad name -> the id of its first line.

    Backward statements (after the ``Backward pass`` comment of ``loss_and_grads``) link
    to their step; the comment lines just above a step's first statement belong to it.
    """
    lines = code.splitlines()
    first: dict[str, str] = {}
    owner: list[str | None] = [None] * len(lines)
    in_grads = False
    backward = False
    for n, line in enumerate(lines):
        if line.startswith("def "):
            in_grads = line.startswith("def loss_and_grads")
            backward = False
        if in_grads and "# Backward pass" in line:
            backward = True
        m = _ASSIGN.match(line)
        if not (in_grads and m):
            continue
        name = m.group(1)
        if (backward and name in grads) or (not backward and name in forward):
            owner[n] = name
            if name not in first:
                k = n
                while k > 0 and lines[k - 1].strip().startswith("#") and owner[k - 1] is None:
                    k -= 1
                    if "Backward pass" in lines[k] or "Forward pass" in lines[k]:
                        k += 1
                        break
                for j in range(k, n):
                    owner[j] = name
                first[name] = f"code-L{k + 1}"
    out = []
    backward_line = next((n for n, ln in enumerate(lines) if "# Backward pass" in ln), None)
    for n, line in enumerate(lines):
        text = html.escape(line, quote=False) or " "  # a blank line keeps its height
        if line.strip().startswith("#"):
            text = f'<span class="c">{text}</span>'
        lid = "code-backward" if n == backward_line else f"code-L{n + 1}"
        name = owner[n]
        if name is None:
            out.append(f'<span class="ln" id="{lid}">{text}</span>')
            continue
        target = html_id(f"step-{name}") if name in grads else "sec-forward"
        cls = "ln param" if name in params else "ln back"
        if name in forward and name not in grads:
            cls = "ln"
        out.append(f'<a class="{cls}" id="{lid}" href="#{target}">{text}</a>')
    return "".join(_fold_checks(lines, out)), first


def _function_end(lines: list[str], n: int) -> int:
    """The line after the top-level function that starts at line ``n`` (blank lines and
    comments after it stay outside)."""
    end = n + 1
    while end < len(lines) and (
        not lines[end] or lines[end][0] in " )]" or lines[end].startswith("#")
    ):
        end += 1
    while end > n + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
        end -= 1
    return end


def _fold_section(lines: list[str], out: list[str]) -> list[str] | None:
    """The module's argument-checks section (from its ``# -- argument checks`` heading to
    the end of ``_check``, the function every public one calls) as one fold, or None."""
    start = next((n for n, ln in enumerate(lines) if ln.startswith("# -- argument checks")), None)
    if start is None:
        return None
    last = [n for n, ln in enumerate(lines) if n > start and ln.startswith("def _check(")]
    if not last:
        return None
    end = _function_end(lines, last[0])
    names = [ln[4:].split("(", 1)[0] for ln in lines[start:end] if ln.startswith("def ")]
    summary = html.escape(f"argument checks, {end - start} lines ({', '.join(names)})", quote=False)
    fold = f'<details class="fold"><summary>{summary}</summary>{"".join(out[start:end])}</details>'
    return [*out[:start], fold, *out[end:]]


def _fold_checks(lines: list[str], out: list[str]) -> list[str]:
    """The argument-checking helpers folded away: the code pane opens on the computation,
    and a click unfolds the checks (the whole section where the module marks it, else each
    top-level ``def _check...``)."""
    section = _fold_section(lines, out)
    if section is not None:
        return section
    folded: list[str] = []
    n = 0
    while n < len(lines):
        if not lines[n].startswith("def _check"):
            folded.append(out[n])
            n += 1
            continue
        end = n + 1
        while end < len(lines) and (
            not lines[end] or lines[end][0] in " )]" or lines[end].startswith("#")
        ):
            end += 1
        while end > n + 1 and not lines[end - 1].strip():  # blank lines stay outside
            end -= 1
        name = lines[n][4:].split("(", 1)[0]
        summary = html.escape(f"def {name}(...): argument checks, {end - n} lines", quote=False)
        folded.append(
            f'<details class="fold"><summary>{summary}</summary>{"".join(out[n:end])}</details>'
        )
        n = end
    return folded


def render_html(d: Derivation, form: str = "both", code: str | None = None) -> str:
    """The derivation as one self-contained HTML page.

    Args:
        d: the derivation (``symgrad.derive(net)``).
        form: ``"component"``, ``"matrix"`` or ``"both"`` (as for :func:`render`).
        code: the generated module to show beside the derivation; by default it is
            generated here (a network the code generator cannot handle gets a note).

    Returns:
        The page (UTF-8 text); it loads nothing from the network.
    """
    if code is None:
        try:
            from symgrad.backends.emit import generate

            code = generate(d)
        except Exception as exc:  # noqa: BLE001 - the page still shows the derivation
            code = f"# no code was generated for this network: {exc}"
    sections = rendered_sections(d, "html", form)
    grads = {st.grad for st in d.steps}
    forward = {st.name for st in d.network.stages}
    params = {st.grad for st in d.steps if st.kind == "param"}
    code_html, first = _code_html(code, grads, forward, params)
    page_sections = []
    for n, s in enumerate(sections):
        anchor = s.anchor or ("sec-forward" if s.title == "Forward pass" else f"sec-{n}")
        grad = anchor[len("step-") :] if anchor.startswith("step-") else ""
        page_sections.append(
            _PageSection(s.title, s.level, s.items, html_id(anchor), first.get(grad, ""), s.boxed)
        )
    svg = svg_of(to_dot(d))
    if svg is not None:
        svg = re.sub(r"^<\?xml[^>]*>\s*(<!DOCTYPE[^>]*>\s*)?", "", svg)
    template = environment().get_template("derivation.html.j2")
    return template.render(
        title=html.escape(f"Backpropagation for {d.network.name}", quote=False),
        sections=page_sections,
        graph_svg=svg,
        code_html=code_html,
        code_name=html.escape(f"{d.network.name}.py", quote=False),
        katex_css=katex_css(),
        katex_js=katex_js(),
    )


__all__ = ["katex_css", "katex_js", "render_html"]
