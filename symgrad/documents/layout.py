# ruff: noqa: UP031 - %-formatting keeps LaTeX braces readable (no {{ }} doubling)
"""Format dispatch: the document model (``documents/model.py``) printed for one format.

LaTeX, Markdown, HTML (KaTeX) and plain text. Long displays are broken at top-level
``+``/``-`` and inside parentheses (``latex_breaking``) into ``align*`` (LaTeX) or
``aligned`` (Markdown, HTML) lines; a line that still does not fit is set a little smaller,
never below :data:`MIN_SCALE`. Plain text is word-wrapped at the terminal's width, never
inside a bracket or a sum.
"""

from __future__ import annotations

import html
import re
import shutil
import textwrap
from collections.abc import Sequence

from symgrad.documents.latex_breaking import break_expression, break_products, visual_width
from symgrad.documents.model import (
    Code,
    Eq,
    M,
    Part,
    RenderedItem,
    RenderedSection,
    Section,
    T,
)
from symgrad.escape import latex_text

#: Between the lines of a multi-line display (a little air between stacked fractions).
LINE_SEP = " \\\\[0.5ex]\n"

#: Display lines wider than this (in estimated glyph widths) are broken.
LINE_WIDTH = 76.0

#: The smallest scale a display line is ever set at (below it math is hard to read).
MIN_SCALE = 0.85


def equation_lines(eq: Eq, width: float = LINE_WIDTH, left: float | None = None) -> list[str]:
    """The ``align``-ready lines of one equation: each has exactly one ``&`` before a
    relation or a continuation sign.

    ``left`` is the width of the block's left column (the widest left-hand side of the
    ``align`` this equation is one row of: every row's right side starts after it); by
    default this equation's own left-hand side."""
    sides = [s.tex for s in eq.sides]
    lhs, rhs = sides[0], sides[1:]
    left = max(visual_width(lhs), left or 0.0)
    whole = f"{lhs} &= " + " = ".join(rhs)
    if left + visual_width("= " + " = ".join(rhs)) <= width:
        return [whole]
    avail = max(width - left - 3.0, width * 0.55)
    lines: list[str] = []
    cur = ""  # right of "&= " on the current line
    first = True

    def flush(text: str, cont: bool = False) -> None:
        nonlocal first
        if cont:
            lines.append(r"&\qquad " + text)
        else:
            lines.append((lhs + " " if first else "") + "&= " + text)
            first = False

    for r in rhs:
        if cur and visual_width(cur + " = " + r) <= avail:
            cur += " = " + r
            continue
        if cur:
            flush(cur)
            cur = ""
        pieces = break_expression(r, avail)
        if len(pieces) == 1:
            cur = r
            continue
        flush(pieces[0])
        for p in pieces[1:]:
            flush(p, cont=True)
    if cur:
        flush(cur)
    return lines


def _esc_latex(s: str) -> str:
    # Names in the prose are user-controlled: one escaper for every LaTeX output.
    return latex_text(s)


def _esc_md(s: str) -> str:
    # Markdown specials, link brackets and HTML: the prose shows user names literally.
    return re.sub(r"([_*`\\$<>#|\[\]])", r"\\\1", s.replace("&", "&amp;"))


def _esc(p: str, to: str) -> str:
    if to == "text":
        return p
    if to == "latex":
        return _esc_latex(p)
    if to == "html":
        return html.escape(p, quote=False)
    return _esc_md(p)


def _code(text: str, to: str) -> str:
    if to == "latex":
        return r"\texttt{%s}" % _esc_latex(text).replace("-", "-{}")  # noqa: UP031
    if to == "html":
        return f"<code>{html.escape(text, quote=False)}</code>"
    return f"`{text}`"  # text, and a Markdown code span (shown literally)


def _inline(parts: Sequence[Part], to: str) -> str:
    out = []
    for p in parts:
        if isinstance(p, M):
            if to == "text":
                out.append(p.txt)
            elif to == "html":
                out.append(f'<span class="math">{html.escape(p.tex, quote=False)}</span>')
            else:
                out.append(f"${p.tex}$")
        elif isinstance(p, T):
            out.append(_inline([p.plain if to == "text" else p.rich], to))
        elif isinstance(p, Code):
            out.append(_code(p.text, to))
        else:
            out.append(_esc(p, to))
    return "".join(out)


#: Plain-text output width when no terminal says otherwise (tests, pipes).
TEXT_WIDTH = 100


def text_width() -> int:
    """The terminal's width (``COLUMNS`` or the tty), at least 40 columns."""
    return max(40, shutil.get_terminal_size((TEXT_WIDTH, 24)).columns)


_BRACKETS = re.compile(r"([()\[\]{}])")


def _wrap(
    text: str, width: int, indent: str = "", hang: str = "    ", protect: bool = False
) -> str:
    """Word-wrap one line with a hanging indent; never breaks inside a word, and prefers
    the top level: spaces inside parentheses and brackets do not break."""
    if len(indent) + len(text) <= width and "\n" not in text:
        return indent + text
    protected, depth = [], 0
    text = re.sub(r"\b(sum_\w+|sum_\{[^}]*\}) ", "\\1\x00", text)  # a sum keeps its body
    # a subscript or a bracket with nothing nested (``a2[s, i]``, ``[i == k]``) never breaks
    text = re.sub(r"\[[^\[\]()]*\]", lambda m: m.group(0).replace(" ", "\x00"), text)
    for chunk in _BRACKETS.split(text) if protect else (text,):  # runs between brackets
        if len(chunk) == 1 and chunk in "([{)]}":
            depth += 1 if chunk in "([{" else -1
        elif depth > 0:
            chunk = chunk.replace(" ", "\x00")
        protected.append(chunk)
    filled = textwrap.fill(
        "".join(protected),
        width=width,
        initial_indent=indent,
        subsequent_indent=indent + hang,
        break_long_words=False,
        break_on_hyphens=False,
    )
    if protect and any(len(ln) > width for ln in filled.splitlines()):
        return _wrap(text, width, indent, hang)  # a parenthesis wider than a line
    return filled.replace("\x00", " ")


def _left_column(lines: Sequence[str]) -> float:
    """The width of an ``align`` block's left column: its widest text before a ``&``."""
    return max((visual_width(ln.partition("&")[0]) for ln in lines), default=0.0)


def _fit_line(line: str, width: float = LINE_WIDTH, left: float | None = None) -> list[str]:
    """A LaTeX line the breaker could not bring under the page width (a long product with
    no sum left to break at): cut between its factors onto continuation lines, and what
    still does not fit is set smaller, never below :data:`MIN_SCALE`. Only what follows the
    line's ``&=`` / ``&\\qquad`` is touched.

    ``left`` is the width of the block's left column (by default this line's own left
    side): ``align`` starts every row's right side after the widest left side."""
    for mark in ("&= ", "&\\qquad "):
        head, sep, rest = line.partition(mark)
        if sep:
            break
    else:
        return [line]
    avail = max(width - max(visual_width(head), left or 0.0) - 3.0, width * 0.55)
    if visual_width(rest) <= avail * 0.95:
        return [line]
    code = re.fullmatch(r"\\texttt\{(.*)\}", rest.strip(), re.S)
    if code:  # code (a batched form with no mathematical notation): cut at its terms
        terms = _code_terms(code.group(1), avail)
        pieces = [r"\texttt{%s}" % c for t in terms for c in _code_chunks(t, avail)]
    else:
        pieces = break_products(rest, avail * 0.9)
    out = []
    for n, piece in enumerate(pieces):
        h, s = (head, sep) if n == 0 else ("", "&\\qquad ")
        have = visual_width(piece)
        if have > avail * 0.95:
            # the width estimate runs short on roots over fractions: a margin
            scale = max(MIN_SCALE, 0.85 * avail / have)
            piece = f"\\scalebox{{{scale:.2f}}}{{$\\displaystyle {piece}$}}"
        out.append(f"{h}{s}{piece}")
    return out


def _code_chunks(code: str, avail: float) -> list[str]:
    """One term of code cut after commas, operators or brackets into pieces that fit."""
    per = max(8, int(len(code) * 0.9 * avail / max(visual_width(r"\texttt{%s}" % code), 1.0)))
    out: list[str] = []
    while len(code) > per:
        cut = max((code.rfind(ch, 0, per) for ch in ",*+)( "), default=-1)
        cut = cut + 1 if cut > per // 3 else per
        while cut > 1 and code[cut - 1] == "\\":  # never inside an escape such as \_
            cut -= 1
        out.append(code[:cut])
        code = code[cut:]
    return [*out, code] if code else out


def _code_terms(code: str, avail: float) -> list[str]:
    """Code cut at its top-level `` + `` / `` - `` into lines about ``avail`` wide."""
    cuts, depth = [], 0
    for n, ch in enumerate(code):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth == 0 and code[n : n + 3] in (" + ", " - "):
            cuts.append(n)
    pieces, last = [], 0
    for cut in cuts:
        pieces.append(code[last:cut].strip())
        last = cut
    pieces.append(code[last:].strip())
    lines: list[str] = []
    for p in pieces:
        if lines and len(lines[-1]) + len(p) < avail * 0.9:
            lines[-1] += " " + p
        else:
            lines.append(p)
    return lines


#: A run of at least this many short one-line equations is set in two columns (LaTeX).
PAIR_ROWS = 2


def _line_width(line: str) -> float:
    lhs, _, rhs = line.partition("&")
    return visual_width(lhs) + visual_width(rhs)


def _fits(left: Sequence[str], right: Sequence[str], width: float) -> bool:
    """Two columns of equations side by side (with a gap) within the line."""
    return max(map(_line_width, left)) + max(map(_line_width, right)) + 4.0 <= width


def _column_groups(lines: Sequence[str], width: float = LINE_WIDTH) -> list[tuple[bool, list[str]]]:
    """The one-line equations of a display in runs: a run of short ones (a summary) is set
    as two ``align`` column pairs, read down the left column first (half the height,
    nothing smaller); the others keep the full width. ``(paired, lines)`` per run."""
    short = [_line_width(x) <= width / 2 for x in lines]
    runs: list[tuple[bool, list[str]]] = []
    for x, ok in zip(lines, short, strict=True):
        if runs and runs[-1][0] == ok:
            runs[-1][1].append(x)
        else:
            runs.append((ok, [x]))
    out: list[tuple[bool, list[str]]] = []
    for ok, run in runs:
        half = (len(run) + 1) // 2
        paired = ok and len(run) >= PAIR_ROWS and _fits(run[:half], run[half:], width)
        if paired:
            right = [*run[half:], ""]
            run = [a + (" & " + b if b else "") for a, b in zip(run[:half], right, strict=False)]
        if out and not paired and not out[-1][0]:
            out[-1][1].extend(run)
        else:
            out.append((paired, run))
    return out


def _latex_block(lines: list[str], paired: bool) -> str:
    if not paired:
        left = _left_column(lines)
        lines = [fit for ln in lines for fit in _fit_line(ln, left=left)]
    if len(lines) == 1 and not paired:
        return "\\[\n%s\n\\]" % lines[0].replace("&", "", 1)
    return "\\begin{align*}\n%s\n\\end{align*}" % LINE_SEP.join(lines)


def _display(eqs: Sequence[Eq], to: str, width: int = TEXT_WIDTH) -> str:
    if to == "text":
        return "\n".join(
            _wrap(" = ".join(s.txt for s in e.sides), width, "    ", "        ", protect=True)
            for e in eqs
        )
    left = max((visual_width(e.sides[0].tex) for e in eqs), default=0.0)
    lines = [ln for e in eqs for ln in equation_lines(e, left=left)]
    if to == "latex":
        groups = _column_groups(lines) if len(lines) == len(eqs) else [(False, lines)]
        if len(groups) > 1 or groups[0][0]:
            return "\n".join(_latex_block(g, paired) for paired, g in groups)
        left = _left_column(lines)
        lines = [fit for ln in lines for fit in _fit_line(ln, left=left)]
    if to == "html":
        body = (
            lines[0].replace("&", "", 1)
            if len(lines) == 1
            else ("\\begin{aligned}\n" + LINE_SEP.join(lines) + "\n\\end{aligned}")
        )
        return '<div class="math display">%s</div>' % html.escape(body, quote=False)
    if len(lines) == 1:
        body = lines[0].replace("&", "", 1)
        return f"\\[\n{body}\n\\]" if to == "latex" else f"$$\n{body}\n$$"
    inner = LINE_SEP.join(lines)
    if to == "latex":
        return f"\\begin{{align*}}\n{inner}\n\\end{{align*}}"
    return f"$$\n\\begin{{aligned}}\n{inner}\n\\end{{aligned}}\n$$"


def _list(entries: Sequence[Sequence[Part]], to: str, width: int = TEXT_WIDTH) -> str:
    texts = [_inline(e, to) for e in entries]
    if to == "text":
        return "\n".join(_wrap(f"{n}. {t}", width, "", "   ") for n, t in enumerate(texts, 1))
    if to == "latex":
        items = "\n".join(r"\item " + t for t in texts)
        return "\\begin{enumerate}\n" + items + "\n\\end{enumerate}"
    if to == "html":
        return "<ol>" + "".join(f"<li>{t}</li>" for t in texts) + "</ol>"
    return "\n".join(f"{n}. {t}" for n, t in enumerate(texts, 1))


def render_model(
    sections: Sequence[Section], to: str, width: int = TEXT_WIDTH
) -> list[RenderedSection]:
    """The sections printed for ``to`` (``latex``, ``markdown``, ``html`` or ``text``)."""
    out = []
    for s in sections:
        items = []
        for it in s.items:
            if it.kind == "math":
                if not it.eqs:  # an empty display does not compile
                    continue
                items.append(RenderedItem("math", _display(it.eqs, to, width)))
            elif it.kind == "list":
                items.append(RenderedItem("para", _list(it.entries, to, width)))
            elif to == "text" and it.kind == "para":
                items.append(RenderedItem("para", _wrap(_inline(it.parts, to), width, "", "")))
            else:
                items.append(RenderedItem(it.kind, _inline(it.parts, to)))
        out.append(RenderedSection(_inline(s.title, to), s.level, tuple(items), s.anchor, s.boxed))
    return out


__all__ = [
    "LINE_SEP",
    "LINE_WIDTH",
    "MIN_SCALE",
    "TEXT_WIDTH",
    "equation_lines",
    "render_model",
    "text_width",
]
