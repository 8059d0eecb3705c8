# ruff: noqa: UP031 - %-formatting keeps LaTeX braces readable (no {{ }} doubling)
"""The LaTeX of a lowered array program (a component fallback's batched form) in matrix
notation, where it is one: every sample's quantity is a matrix (its rows the positions of
a sequence), a contraction that is a matrix product per sample is juxtaposition
(``\\Delta^{[4]} A^{[2]}``), each sample's matrix transposed is ``^{\\top}``, an
elementwise product ``\\odot``, a sum over the last axis ``\\operatorname{rowsum}``
broadcast back along the rows by ``\\mathbf{1}^{\\top}``, a softmax along the last axis
the row softmax, and a parameter's gradient summed over the samples and positions
``\\sum_s (\\cdot)_s^{\\top} (\\cdot)_s``. Names are typeset as the rest of the document
types them (the printer's ``batched`` notation). A program with anything else (index
arithmetic, masks, broadcasts that are not a matrix product) has no such form: None, and
the caller shows the array program as code. Display only; read from the expression's
structure and the einsum's subscripts, never from what the arrays are called."""

from __future__ import annotations

import sympy as sp

from symgrad.calculus.einsum import AxisSoftmax, Einsum, Place
from symgrad.ir.einsum_blas import MatmulPlan, Side, matmul_plan


class RowSum(sp.Function):
    """For display: the sum over the last axis of an elementwise product, repeated along
    that axis (an einsum ``abd,abd->ab`` then ``[:, :, None]``). Args (Tuple(operands),
    ndim)."""

    nargs = 2

    def _sympystr(self, printer) -> str:
        # rowsum keeps the summed axis (a column), as the steps files and audits read it
        return "rowsum(%s)" % "*".join(printer._print(o) for o in self.args[0])


def rowsum_of(e: Einsum) -> RowSum | None:
    """The :class:`RowSum` an einsum is (same subscripts on every operand, the last
    letter summed, its axis restored as a unit axis), else None."""
    spec, slots, *ops = e.args
    ins, out = spec.name.split("->")
    subs = ins.split(",")
    full = subs[0]
    restore = "[" + ", ".join([":"] * (len(full) - 1) + ["None"]) + "]"
    if any(s != full for s in subs) or out != full[:-1] or slots.name != restore:
        return None
    return RowSum(sp.Tuple(*ops), sp.Integer(len(full)))


class _NoForm(Exception):
    """The program has no matrix notation."""


class ProgramLatex:
    """Typesets one program: ``printer`` is the document's LaTeX printer (batched
    notation), ``ndim`` the program's number of axes (the sample axis first, unless
    ``summed``: a parameter's gradient, summed over the samples), ``params`` the names of
    parameters (shared by the samples: typeset as matrices)."""

    def __init__(self, printer, ndim: int, params: frozenset[str], summed: bool) -> None:
        self.p = printer
        self.ndim = ndim
        self.params = params
        self.summed = summed

    def __call__(self, e: sp.Expr) -> str | None:
        try:
            return self.tex(e)
        except _NoForm:
            return None

    # -- names ---------------------------------------------------------------------------
    def name(self, sym: sp.Basic, transpose: bool = False, sub: tuple[str, ...] = ()) -> str:
        name = str(sym)
        return self.p._q(name, sub, transpose=transpose, matrix=name in self.params)

    def _whole(self, e: Place) -> str:
        """An array placed on every axis: as it is, or each sample's matrix transposed."""
        sym, pos, ndim, mine = e.args
        axes = ([0] if int(mine) else []) + [int(q) for q in pos]
        n = int(ndim)
        if axes == list(range(n)):
            return self.name(sym)
        if n >= 2 and axes == [*range(n - 2), n - 1, n - 2]:
            return self.name(sym, transpose=True)
        raise _NoForm

    # -- expressions ---------------------------------------------------------------------
    def tex(self, e: sp.Expr) -> str:
        if isinstance(e, Place):
            return self._whole(e)
        if isinstance(e, Einsum):
            return self.einsum(e)
        if isinstance(e, AxisSoftmax):
            return self.softmax(e)
        if isinstance(e, RowSum):
            return self.rowsum(e)
        if e.is_Add:
            return self.add(e)
        if e.is_Mul:
            return self.mul(e)
        if self.scalar(e):
            return self.p._print(e)
        raise _NoForm

    def scalar(self, e: sp.Basic) -> bool:
        """A number or an expression in sizes (``sqrt(d)``): an ordinary coefficient."""
        return all(isinstance(s, sp.Symbol) and s.is_integer for s in e.free_symbols) and not (
            e.atoms(Place, Einsum, AxisSoftmax, RowSum)
        )

    def add(self, e: sp.Add) -> str:
        terms = sorted(e.args, key=lambda t: (t.could_extract_minus_sign(), sp.default_sort_key(t)))
        out = ""
        for k, t in enumerate(terms):
            neg = t.could_extract_minus_sign()
            body = self.tex(-t if neg else t)
            if (-t if neg else t).is_Add:
                body = self.paren(body)
            out += (" - " if neg else (" + " if k else "")) + body
        return out.removeprefix(" ")

    def mul(self, e: sp.Mul) -> str:
        scal = [f for f in e.args if self.scalar(f)]
        arrays = [f for f in e.args if not self.scalar(f)]
        if not arrays:
            return self.p._print(e)
        num, den = sp.fraction(sp.Mul(*scal))
        neg = num.could_extract_minus_sign()
        if neg:
            num = -num
        # atoms first, then products, then sums: A \odot (G - rowsum(...))
        arrays.sort(key=lambda f: (f.is_Add, sp.default_sort_key(f)))
        # a sum, or a matrix product beside an elementwise one, in parentheses
        grouped = len(arrays) > 1
        parts = [
            self.paren(self.tex(f))
            if f.is_Add or (grouped and isinstance(f, Einsum))
            else self.tex(f)
            for f in arrays
        ]
        body = r" \odot ".join(parts)
        if den != 1:  # as the document writes a scale: \frac{1}{\sqrt{d}} A B
            body = r"\frac{%s}{%s} %s" % (self.p._print(num), self.p._print(den), body)
        elif num != 1:
            body = "%s %s" % (self.p._print(num), body)
        return "- " + body if neg else body

    @staticmethod
    def paren(tex: str) -> str:
        tall = any(t in tex for t in (r"\frac", r"\sum", r"\sqrt", r"\left"))
        return r"\left(%s\right)" % tex if tall else "(%s)" % tex

    def softmax(self, e: AxisSoftmax) -> str:
        """A softmax along the last axis: the row softmax, as the document writes it."""
        arg, axis = e.args
        if int(axis) != self.ndim - 1 or self.summed:
            raise _NoForm
        z = self.tex(arg)
        if " " in z:
            z = self.paren(z)
        return r"\frac{e^{%s}}{e^{%s} \mathbf{1}}" % (z, z)

    # -- contractions --------------------------------------------------------------------
    def einsum(self, e: Einsum) -> str:
        spec, slots, *ops = e.args
        plan = matmul_plan(spec.name)
        if plan is not None and not slots.name:
            return self.matmul(plan, ops, spec.name)
        raise _NoForm

    def matmul(self, plan: MatmulPlan, ops: list[sp.Basic], spec: str) -> str:
        left, right = plan.left, plan.right
        if left.merge or right.merge:
            return self.summed_product(plan, ops, spec)
        return "%s %s" % (self.side(left, ops), self.side(right, ops))

    def side(self, side: Side, ops: list[sp.Basic]) -> str:
        if side.units is not None:  # an operand broadcast along a middle axis
            raise _NoForm
        sym = ops[side.operand]
        if side.perm is None:
            return self.name(sym)
        n = len(side.perm)
        if side.perm == (*range(n - 2), n - 1, n - 2):
            return self.name(sym, transpose=True)
        raise _NoForm

    def summed_product(self, plan: MatmulPlan, ops: list[sp.Basic], spec: str) -> str:
        """``adb,adc->bc``: each sample's product summed over the samples (a parameter's
        gradient): ``\\sum_s X_s^{\\top} Y_s``."""
        ins, out = spec.split("->")
        x, y = ins.split(",")
        if not (self.summed and len(x) == 3 and len(y) == 3 and len(out) == 2):
            raise _NoForm
        left, right = plan.left, plan.right
        if not (left.merge == "front" and right.merge == "front" and x[0] == y[0]):
            raise _NoForm
        s = "s"
        lo, hi = ("0", r"N - 1") if self.p._settings["zero_based"] else ("1", "N")
        a = self.name(ops[left.operand], transpose=True, sub=(s,))
        b = self.name(ops[right.operand], sub=(s,))
        return r"\sum_{%s=%s}^{%s} %s %s" % (s, lo, hi, a, b)

    def rowsum(self, e: RowSum) -> str:
        """``\\operatorname{rowsum}(A \\odot B) \\mathbf{1}^{\\top}``."""
        ops, ndim = e.args
        if self.summed or int(ndim) != self.ndim:
            raise _NoForm
        inner = r" \odot ".join(self.name(o) for o in ops)
        return r"\operatorname{rowsum}%s \, \mathbf{1}^{\top}" % self.paren(inner)
