# ruff: noqa: UP031 - %-formatting keeps LaTeX braces readable (no {{ }} doubling)
"""The attention example's derivation in matrix notation: its batched backward lines are
typeset as per-sample matrix products (``dV = P^T dY``, ``dP = dY V^T``,
``dS = P (.) (dP - rowsum(dP (.) P) 1^T)``, ``dQ = dS K / sqrt(d)``, ``dK = dS^T Q /
sqrt(d)`` in the document's names), never as code, and the document compiles with
pdflatex without an overfull box."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_attention import TWO_HEADS
from test_render_doc import _UNDERFULL_DISPLAY, _pdflatex

from symgrad.documents.render import render
from symgrad.frontend.spec import load_spec, loads_spec
from symgrad.pipeline import derive

SPEC = Path(__file__).resolve().parent.parent / "examples" / "attention" / "attention.toml"

ADJ = r"\frac{\partial \mathcal{L}}{\partial %s}"
#: The batched backward lines of the attention block, by the adjoint they define.
LINES = {
    # dP = dY V^T
    ADJ % "A^{[4]}": ADJ % "A^{[5]}" + r" A^{[3]\top}",
    # dS = P (.) (dP - rowsum(P (.) dP) 1^T)
    r"\Delta^{[4]}": r"A^{[4]} \odot \left(%s - \operatorname{rowsum}\left(A^{[4]} \odot %s"
    r"\right) \, \mathbf{1}^{\top}\right)" % (ADJ % "A^{[4]}", ADJ % "A^{[4]}"),
    # dV = P^T dY
    ADJ % "A^{[3]}": r"A^{[4]\top} " + ADJ % "A^{[5]}",
    # dK = dS^T Q / sqrt(d), dQ = dS K / sqrt(d)
    ADJ % "A^{[2]}": r"\frac{1}{\sqrt{d}} \Delta^{[4]\top} A^{[1]}",
    ADJ % "A^{[1]}": r"\frac{1}{\sqrt{d}} \Delta^{[4]} A^{[2]}",
    # a projection's weight gradient: each sample's product summed over the samples
    ADJ % r"\mathrm{Wq}^{[1]}": r"\sum_{s=0}^{N - 1} \left(%s\right)^{\top} X_{s}"
    % (ADJ % "A^{[1]}_{s}"),
}


@pytest.fixture(scope="module")
def tex() -> str:
    return render(derive(load_spec(str(SPEC))), "latex")


def _backward(tex: str) -> str:
    start = tex.index(r"\section*{Backward pass")
    return tex[start : tex.index(r"\section*", start + 1)]


def _rows(section: str) -> dict[str, str]:
    """Each align row ``lhs &= rhs`` (or two side by side), its continuation rows
    (``&\\qquad ...``) joined: lhs -> the last side of the row (the first row for an lhs)."""
    logical: list[str] = []
    for line in section.splitlines():
        line = re.sub(r"\s*\\\\\[0\.5ex\]$", "", line.strip())
        if line.startswith("&") and logical:
            logical[-1] += " " + re.sub(r"^&(\\qquad)?\s*", "", line)
        elif "&=" in line:
            logical.append(line)
    rows: dict[str, str] = {}
    for row in logical:
        # short equations may sit side by side, the columns parted by a lone ``&``
        for column in re.split(r"(?<!\\)\s&\s(?!=)", row):
            if "&=" in column:
                lhs, rhs = column.split("&=", 1)
                rows.setdefault(lhs.strip(), rhs.split(" = ")[-1].strip())
    return rows


def test_backward_lines_are_matrix_products(tex):
    section = _backward(tex)
    batched = {k: v for k, v in _rows(section).items() if r"\mathcal{L}" in k or "Delta" in k}
    for lhs, want in LINES.items():
        assert lhs in batched, lhs
        got = batched[lhs]
        assert r"\texttt" not in got, (lhs, got)
        assert got.replace("  ", " ") == want, (lhs, got)


def test_no_line_is_code_and_index_arithmetic_reads_as_entries(tex):
    """No batched line is code: the one that reads a part of an array (``a5[:, 0, 0:d]``'s
    adjoint: index arithmetic), not a product, is written as its entries, the sample
    index explicit."""
    rows = _rows(_backward(tex))
    assert not [k for k, v in rows.items() if r"\texttt" in v]
    entries = [k for k, v in rows.items() if r"\right]_{s " in v]
    assert entries == [ADJ % "A^{[5]}"]


def test_the_reading_is_explained_once(tex):
    assert tex.count("each sample's quantity is a matrix") == 1
    assert tex.count("Correlation form, per sample and batched") == 1  # a5's, code


def test_text_shows_rowsum_and_products():
    text = render(derive(load_spec(str(SPEC))), "text")
    assert "delta4 = dL/dz4 = (da4 - rowsum(a4*da4))*a4" in text
    assert "dL/da3 = a4.mT @ da5" in text
    assert "einsum" not in text


@pytest.mark.slow
def test_pdflatex_compiles_without_overfull_boxes(tex, tmp_path):
    log = _pdflatex(tex, tmp_path)
    assert "Overfull \\hbox" not in log
    assert not _UNDERFULL_DISPLAY.search(log)


@pytest.mark.slow
def test_two_heads_document_compiles(tmp_path):
    """Per-head products typeset, the rest as entries (no line of math is code): still no
    overfull box."""
    tex = render(derive(loads_spec(TWO_HEADS)), "latex")
    assert r"\frac{1}{\sqrt{D}} \Delta^{[4]\top} A^{[1]}" in tex
    assert not [line for line in tex.splitlines() if "&=" in line and r"\texttt" in line]
    log = _pdflatex(tex, tmp_path)
    assert "Overfull \\hbox" not in log


def test_program_forms_by_structure():
    """Small programs: a matrix product beside an elementwise one is parenthesised, a
    transposed placement is each sample's transpose, and a broadcast (an array on some
    axes only) has no matrix form (None: the caller shows code)."""
    import sympy as sp

    from symgrad.calculus.einsum import Einsum, Place
    from symgrad.documents.batched_latex import ProgramLatex
    from symgrad.documents.latex_printer import SymgradLatexPrinter

    typeset = ProgramLatex(SymgradLatexPrinter({"notation": "batched"}), 3, frozenset(), False)
    d = sp.Symbol("d", integer=True, positive=True)

    def place(name, *pos):
        return Place(sp.Symbol(name), sp.Tuple(*pos), 3, 1)

    product = Einsum(sp.Symbol("abd,adc->abc"), sp.Symbol(""), sp.Symbol("a1"), sp.Symbol("a2"))
    assert (
        typeset(product * place("a3", 1, 2) / sp.sqrt(d))
        == r"\frac{1}{\sqrt{d}} (A^{[1]} A^{[2]}) \odot A^{[3]}"
    )
    assert typeset(place("a3", 2, 1) - 2 * place("a4", 1, 2)) == r"A^{[3]\top} - 2 A^{[4]}"
    assert typeset(place("a3", 2)) is None


def test_per_sample_fallback_lines_are_entries_in_components(tex):
    """A tensor map's per-sample line is the matrix of its entries in component notation
    (no bold vector carrying component indices), and a renamed index is primed."""
    assert r"\left[\frac{1}{\sqrt{d}} \sum_{e=0}^{9} a^{[1]}_{te} a^{[2]}_{ue}\right]_{t u}" in tex
    assert not re.search(r"\\mathbf\{[a-z]\}\^\{\[\d\]\}_\{[a-z]{2}\}", tex)
    assert r"\max_{u''}" in tex and "u_{}" not in tex and "u^{}" not in tex
