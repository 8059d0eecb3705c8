# ruff: noqa: UP031 - %-formatting keeps LaTeX braces readable (no {{ }} doubling)
"""How the documents show the batched form of a component fallback (``calculus.einsum``'s
``Batched``): a stage that states the samples itself (batch norm) as its component form in
every format, rows being samples, so that the text reads as mathematics as the LaTeX does;
any other as the array program it lowers to, with an index used as a value written as
NumPy writes it (``arange(d)`` broadcast along its axis, a slice ``0:d`` where it is a
whole position) rather than as an internal node. Display only."""

from __future__ import annotations

import sympy as sp

from symgrad.calculus.einsum import Arange, Batched, Einsum, Full, Gather, Masked
from symgrad.calculus.layout import N
from symgrad.documents.batched_latex import ProgramLatex, rowsum_of
from symgrad.documents.latex_printer import SymgradLatexPrinter
from symgrad.ir.einsum_blas import matmul_plan


class _Range(sp.Function):
    """``arange(size)`` on axis ``pos`` of ``ndim`` (broadcast over the others)."""

    nargs = 3

    def _sympystr(self, printer) -> str:
        size, pos, ndim = self.args
        text = "arange(%s)" % printer._print(size)
        if int(ndim) == 1:
            return text
        return text + "[%s]" % ", ".join(":" if k == int(pos) else "None" for k in range(ndim))


class _Slice(sp.Function):
    """A whole position of a gather: the slice ``0:size``."""

    nargs = 1

    def _sympystr(self, printer) -> str:
        return "0:%s" % printer._print(self.args[0])


def _unwrapped(text: str) -> str:
    """``text`` without one pair of parentheses around the whole of it (``(a @ b)``)."""
    if not (text.startswith("(") and text.endswith(")")):
        return text
    depth = 0
    for k, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0 and k < len(text) - 1:
            return text  # the first parenthesis closes before the end: (a) @ (b)
    return text[1:-1]


class _Program(sp.Function):
    """The lowered array program: as text, and in LaTeX in matrix notation where it has
    one (``batched_latex``), else as the entry of the batched array in components, the
    sample index explicit (``[2 a_{si}^2 g_{si} - ...]_{si}``; summed over the samples for
    a parameter's gradient). Args (program, its number of axes, whether it is summed over
    the samples, Tuple(parameter names), the component fallback)."""

    nargs = 5

    def _sympystr(self, printer) -> str:
        program, ndim, summed, params, comp = self.args
        names = frozenset(str(p) for p in params)
        typeset = ProgramLatex(SymgradLatexPrinter(), int(ndim), names, bool(summed))(program)
        if typeset is None:  # as the LaTeX: the entries, not an array program
            return _entries_text(printer, comp, bool(summed))
        return _unwrapped(printer._print(program))

    def _symgrad_latex(self, printer) -> str:
        program, ndim, summed, params, _ = self.args
        names = frozenset(str(p) for p in params)
        typeset = ProgramLatex(printer, int(ndim), names, bool(summed))(program)
        if typeset is not None:
            return typeset
        return _entries_latex(printer, self.args[4], bool(summed))


class Entries(sp.Function):
    """The array whose entry at the indices ``free`` is ``expr``: ``[expr]_(s, i)`` in
    text, ``\\left[expr\\right]_{s i}`` in LaTeX, in component notation in every form.
    For a line of a batched or matrix form that has only a component expression (a stage
    that states the samples itself). Args (expr, Tuple(free indices))."""

    nargs = 2

    def _sympystr(self, printer) -> str:
        expr, free = self.args
        if not free:
            return printer._print(expr)
        return "[%s]_(%s)" % (printer._print(expr), ", ".join(printer._print(f) for f in free))

    def _symgrad_latex(self, printer) -> str:
        expr, free = self.args
        if not free:
            return printer._print(expr)
        return printer.entries(expr, tuple(free))


def _entry(comp: sp.Expr, summed: bool) -> tuple[sp.Expr, tuple[sp.Symbol, ...]]:
    """A component fallback's batched form as one entry and its indices: every array that
    has a sample axis (not a parameter) read at the sample index ``s`` first, summed over
    the samples where the batched form is (a parameter's gradient)."""
    expr, free, _, names = comp.args
    params = {str(nm) for nm in names}
    taken = {str(x) for x in expr.atoms(sp.Symbol)}
    s = sp.Symbol(next(c for c in ("s", "t", "u", "v", "r") if c not in taken), integer=True)

    def with_sample(x: sp.Indexed) -> sp.Expr:
        return x.base[(s, *x.indices)]

    entry = expr.replace(
        lambda x: isinstance(x, sp.Indexed) and str(x.base.label) not in params, with_sample
    )
    if summed:
        return sp.Sum(entry, (s, 0, N - 1)), tuple(free)
    return entry, (s, *free)


def _entries_latex(printer, comp: sp.Expr, summed: bool) -> str:
    entry, at = _entry(comp, summed)
    return printer._print(Entries(entry, sp.Tuple(*at)))


def _entries_text(printer, comp: sp.Expr, summed: bool) -> str:
    entry, at = _entry(comp, summed)
    return printer._print(Entries(entry, sp.Tuple(*at)))


def _shown_program(lowered: sp.Expr) -> sp.Expr:
    def whole(g: sp.Basic) -> sp.Basic:
        sym, pos, mine = g.args
        new = [_Slice(p.args[0]) if isinstance(p, Arange) else p for p in pos]
        return Gather(sym, sp.Tuple(*new), mine)

    lowered = lowered.replace(lambda x: isinstance(x, Gather), whole)
    lowered = lowered.replace(
        lambda x: isinstance(x, Einsum) and rowsum_of(x) is not None, rowsum_of
    )
    return lowered.replace(lambda x: isinstance(x, Arange), lambda x: _Range(*x.args))


def shown(e: sp.Basic) -> sp.Basic:
    """``e`` with every batched fallback in its display form."""
    if not e.has(Batched):
        return e

    def form(b: Batched) -> sp.Basic:
        if b.samples_explicit:  # its component form, the sample index among its own
            comp = b.args[0]
            return Entries(comp.args[0], comp.args[1])
        comp, summed = b.args
        free, names = comp.args[1], comp.args[3]
        ndim = len(free) + (0 if int(summed) else 1)
        program = _shown_program(b.lowered())
        return _Program(program, sp.Integer(ndim), summed, sp.Tuple(*names), comp)

    return e.replace(lambda x: isinstance(x, Batched), form)


def matrix_products(e: sp.Basic) -> bool:
    """Whether ``e`` has a batched fallback whose program multiplies each sample's
    matrices (an einsum that is a matrix product or a row sum) and reads no part of an array (no
    index arithmetic, mask or broadcast): the documents then say how to read it."""
    for b in e.atoms(Batched):
        if b.samples_explicit:
            continue
        low = b.lowered()
        if low.atoms(Gather, Masked, Full):
            continue
        if any(
            matmul_plan(x.args[0].name) is not None or rowsum_of(x) is not None
            for x in low.atoms(Einsum)
        ):
            return True
    return False
