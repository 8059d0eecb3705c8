"""Stage 3 (derive), index arithmetic: contract Kronecker deltas through affine index expressions.

Convolution and pooling read their input at computed positions, ``a[c, h*s + kh - pad]``.
``sympy.diff`` of such a read with respect to an element ``a[c', q]`` gives the factor
``KroneckerDelta(h*s + kh - pad, q)``: the summed index does not stand alone in the delta,
so the plain rule of ``contraction.py`` (``Sum_j f(j) delta(j, k) = f(k)``) does not apply.
This pass solves the delta for the summed index instead:

    Sum_{kh=0}^{K-1} f(kh) delta(h*s + kh - pad, q)  =  f(q - h*s + pad) [0 <= q - h*s + pad <= K-1]

The range condition is kept as an explicit indicator factor :class:`InRange` (this is what
makes the backward pass of a convolution a *transposed* convolution: the kernel offset that
reaches ``q`` from output position ``h`` exists only for some ``h``). When the summed index
carries a coefficient ``s`` other than +-1 (a stride), the solution is an integer only when
``s`` divides the rest: that condition is the indicator :class:`Divisible`. The solver
prefers a summed index with unit coefficient, so a convolution's kernel index is solved
for rather than its output position, and no divisibility factor appears.

Out-of-range reads of a quantity are zeros (zero padding): a delta with the element
``a[c', q]`` (``q`` always inside ``a``'s range) never selects a padded position, so the
derivative needs no padding rule of its own.
"""

from __future__ import annotations

import sympy as sp

from symgrad.ir.indices import one_based  # noqa: F401 - re-exported (documents count from 1)


class InRange(sp.Function):
    """The indicator ``[lo <= e <= hi]`` of an integer expression (1 or 0)."""

    nargs = 3
    is_integer = True
    is_nonnegative = True

    @classmethod
    def eval(cls, e, lo, hi):
        if e.is_Integer and lo.is_Integer and hi.is_Integer:
            return sp.S.One if lo <= e <= hi else sp.S.Zero
        # Provably inside (e.g. e = q with q bound to the same range): the factor is 1.
        below, above = sp.expand(e - lo), sp.expand(hi - e)
        if below.is_nonnegative and above.is_nonnegative:
            return sp.S.One
        if below.is_negative or above.is_negative:
            return sp.S.Zero
        return None

    def _latex(self, printer):
        # documents count indices from 1: the shifted expression and bounds
        e, lo, hi = self.args
        return (
            rf"\left[{printer._print(lo + 1)} \le {printer._print(one_based(e))} "
            rf"\le {printer._print(hi + 1)}\right]"
        )

    def _sympystr(self, printer):
        e, lo, hi = (printer._print(a) for a in self.args)
        return f"[{lo} <= {e} <= {hi}]"


class Divisible(sp.Function):
    """The indicator ``[s | e]``: the integer ``e`` is a multiple of ``s`` (1 or 0)."""

    nargs = 2
    is_integer = True
    is_nonnegative = True

    @classmethod
    def eval(cls, e, s):
        if s in (sp.S.One, sp.S.NegativeOne):
            return sp.S.One
        if e.is_Integer and s.is_Integer:
            return sp.S.One if e % s == 0 else sp.S.Zero
        return None

    def _latex(self, printer):
        e, s = (printer._print(a) for a in self.args)
        return rf"\left[{s} \mid {e}\right]"

    def _sympystr(self, printer):
        e, s = (printer._print(a) for a in self.args)
        return f"[{s} | {e}]"


INDICATORS = (InRange, Divisible)


def affine_coefficient(e: sp.Expr, var: sp.Symbol) -> sp.Expr | None:
    """The coefficient of ``var`` in ``e`` when ``e`` is affine in it (else None)."""
    if not e.has(var):
        return sp.S.Zero
    poly = sp.expand(e)
    coeff = poly.coeff(var, 1)
    if coeff.has(var) or sp.expand(poly - coeff * var).has(var):
        return None
    if not coeff.is_Integer or coeff == 0:
        return None
    return coeff


def solve_for(delta: sp.KroneckerDelta, var: sp.Symbol) -> tuple[sp.Expr, sp.Expr] | None:
    """Solve ``delta``'s equation for ``var``: (solution, divisibility indicator), or None.

    ``delta(u, v)`` with ``u - v = c*var + r`` (``c`` a nonzero integer) holds when
    ``var = -r / c``; that is an integer only when ``c`` divides ``r``.
    """
    diff = sp.expand(delta.args[0] - delta.args[1])
    c = affine_coefficient(diff, var)
    if c is None or c == 0:
        return None
    rest = sp.expand(diff - c * var)
    if c == 1:
        return -rest, sp.S.One
    if c == -1:
        return rest, sp.S.One
    return -rest / c, Divisible(rest, abs(c))


def _deltas_on(term: sp.Expr, var: sp.Symbol) -> list[sp.KroneckerDelta]:
    return [f for f in sp.Mul.make_args(term) if isinstance(f, sp.KroneckerDelta) and f.has(var)]


def contract_affine(term: sp.Expr, var: sp.Symbol, lo: sp.Expr, hi: sp.Expr) -> sp.Expr | None:
    """``Sum_{var=lo}^{hi} term`` with one delta solved for ``var``, or None if none solves.

    Among the deltas on ``var`` one with a unit coefficient is preferred (no divisibility
    condition); the range of ``var`` becomes an :class:`InRange` factor, dropped when it
    provably holds.
    """
    best: tuple[sp.KroneckerDelta, sp.Expr, sp.Expr] | None = None
    for d in _deltas_on(term, var):
        sol = solve_for(d, var)
        if sol is None:
            continue
        if best is None or (best[2] != 1 and sol[1] == 1):
            best = (d, *sol)
    if best is None:
        return None
    d, value, divisible = best
    rest = sp.Mul(*[f for f in sp.Mul.make_args(term) if f is not d])
    return rest.xreplace({var: value}) * divisible * InRange(value, lo, hi)


def affine_parts(e: sp.Expr, names: tuple[sp.Symbol, ...]) -> tuple[dict, sp.Expr] | None:
    """``e`` as ``sum(c_v * v for v in names) + const``: ({v: c_v}, const), or None."""
    e = sp.expand(e)
    coeffs: dict[sp.Symbol, sp.Expr] = {}
    for v in names:
        c = affine_coefficient(e, v)
        if c is None:
            return None
        coeffs[v] = c
    const = sp.expand(e - sum(c * v for v, c in coeffs.items()))
    return coeffs, const
