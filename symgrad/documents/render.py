"""Printing: derivation -> LaTeX/Markdown/plain-text lecture notes (the public API).

:func:`render` turns a :class:`~symgrad.calculus.reverse.Derivation` into a document: the
network and its notation, the forward equations, the loss, then every backward step in
the derivation's order (its local derivative with the reason for it, the chain rule, the
matrix forms per sample and batched), the four equations of backpropagation, the layer
Jacobians and the backward pass as computed. Nothing is derived here: every expression
comes from the derivation (``Step.component``, ``Step.local``, ``Step.local_raw``,
``Step.unfused``, ``Step.matrix``) or from its layout (``Step.batched``).

The document is built in parts (``doc_front``, ``doc_steps``, ``doc_local``,
``doc_tensor``, ``doc_summary`` on the model of ``model.py``), printed for one format by
``layout.py``; the Jinja2 templates in ``templates/`` only loop over printed strings.
"""

from __future__ import annotations

from symgrad.calculus.reverse import DISPLAY, Derivation
from symgrad.documents.doc_front import FrontMatter
from symgrad.documents.doc_steps import BackwardSteps
from symgrad.documents.doc_summary import Summaries
from symgrad.documents.latex_breaking import break_expression, split_terms, visual_width
from symgrad.documents.layout import (
    LINE_SEP,
    LINE_WIDTH,
    _display,
    equation_lines,
    render_model,
    text_width,
)
from symgrad.documents.model import Eq, RenderedItem, RenderedSection, Section
from symgrad.escape import latex_text
from symgrad.ir.plain import TextPrinter
from symgrad.templating import environment

TARGETS = ("latex", "markdown", "text")
FORMS = ("component", "matrix", "both")
_ALIASES = {"tex": "latex", "md": "markdown", "txt": "text", "plain": "text"}
_TEMPLATES = {
    "latex": "derivation.tex.j2",
    "markdown": "derivation.md.j2",
    "text": "doc_derivation.txt.j2",
}


class _Doc(FrontMatter, BackwardSteps, Summaries):
    """Builds the sections of the document for one derivation."""

    def build(self) -> list[Section]:
        self.intro()
        self.forward()
        self.loss()
        self.backward()
        self.summary_per_sample()
        self.layer_jacobians()
        self.summary()
        self.notes()
        return self.sections


def _title(d: Derivation, to: str) -> str:
    name = d.network.name
    if to == "latex":
        return r"Backpropagation for \texttt{%s}" % latex_text(name)  # noqa: UP031
    if to == "markdown":
        return f"Backpropagation for `{name}`"
    return f"Backpropagation for {name}"


def rendered_sections(
    d: Derivation, to: str, form: str = "both", width: int | None = None
) -> list[RenderedSection]:
    """The document's sections printed for one target (``"html"`` included: the page
    builder in ``documents/html.py`` lays them out)."""
    return render_model(_Doc(d, form).build(), to, width or text_width())


def render(
    d: Derivation,
    to: str = "markdown",
    form: str = "both",
    standalone: bool = True,
    width: int | None = None,
) -> str:
    """Render a derivation as lecture notes.

    Args:
        d: the derivation (``symgrad.derive(net)``).
        to: ``"latex"``, ``"markdown"`` or ``"text"``.
        form: ``"component"`` (index notation), ``"matrix"`` (per sample and batched)
            or ``"both"``.
        standalone: a complete document (LaTeX: ``\\documentclass`` ... ``\\end{document}``;
            Markdown: with its title) rather than a fragment to paste.
        width: text output only: the line width (default: the terminal's width).

    Returns:
        The document text.

    Raises:
        ValueError: for an unknown ``to`` or ``form``.
    """
    to = _ALIASES.get(to, to)
    if to not in TARGETS:
        raise ValueError(f"unknown target {to!r} (known: {', '.join(TARGETS)})")
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r} (known: {', '.join(FORMS)})")
    sections = rendered_sections(d, to, form, width)
    template = environment().get_template(_TEMPLATES[to])
    return template.render(
        title=_title(d, to),
        network=d.network.name,
        sections=sections,
        standalone=standalone,
        form=form,
    )


def render_fragment_for_jupyter(d: Derivation) -> str:
    """A ``_repr_latex_``-compatible string: the batched forward and backward equations in
    one ``$$\\begin{aligned} ... \\end{aligned}$$`` block (MathJax/KaTeX)."""
    doc = _Doc(d, "matrix")
    eqs: list[Eq] = []
    for f in d.forward:
        try:
            b = f.batched
        except ValueError:
            continue
        eqs.append(Eq((doc.q(f.stage.name, "batched"), doc.ex(b, "batched"))))
    for st in d.steps:
        if st.needed:
            lhs = doc.grad_lhs(st, "batched", [])
            eqs.append(Eq((lhs[0], doc.ex(st.batched, "batched"))))
    lines = [ln for e in eqs for ln in equation_lines(e)]
    return "$$\n\\begin{aligned}\n" + LINE_SEP.join(lines) + "\n\\end{aligned}\n$$"


__all__ = [
    "FORMS",
    "LINE_WIDTH",
    "TARGETS",
    "RenderedItem",
    "RenderedSection",
    "TextPrinter",
    "_display",
    "break_expression",
    "environment",
    "equation_lines",
    "render",
    "render_fragment_for_jupyter",
    "rendered_sections",
    "split_terms",
    "visual_width",
]


DISPLAY["markdown"] = lambda d: render(d, "markdown")
DISPLAY["latex"] = render_fragment_for_jupyter
