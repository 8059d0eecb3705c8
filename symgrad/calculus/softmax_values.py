"""Forward values in the adjoint of a softmax over an index of a tensor map.

The softmax stage ``a[t, u] = exp(z[t, u] - m[t]) / D[t]``, ``D[t] = sum_u' exp(z[t, u'] -
m[t])`` (``ir/softmax_split.py``) differentiates to exponentials over ``D``; wherever a
product holds ``exp(z[t, w] - m[t])`` and ``1/D[t]`` (or a sum over ``w`` of such terms
times ``1/D[t]``) it is the forward value ``a[t, w]``. Rewritten, the scores' adjoint reads
``a[c, w] (da[c, w] - sum_k a[c, k] da[c, k])``: ``P * (dP - rowsum(P * dP))``.
Found by structure (the stage's own body), never by a layer's name.
"""

from __future__ import annotations

import sympy as sp

from symgrad.ir.network import Stage
from symgrad.ir.reductions import ShiftMax


def _form(stage: Stage) -> tuple[sp.Expr, sp.Symbol, int] | None:
    """``(shifted, u, position of u)`` for a softmax stage ``exp(shifted) / sum_u exp``."""
    if not stage.indices:
        return None
    f = sp.Mul.make_args(stage.body)
    num = [x for x in f if isinstance(x, sp.exp)]
    den = [x for x in f if x.is_Pow and x.exp == -1 and isinstance(x.base, sp.Sum)]
    if len(f) != 2 or len(num) != 1 or len(den) != 1 or not num[0].has(ShiftMax):
        return None
    shifted = num[0].args[0]
    var = den[0].base.limits[0][0]
    for pos, u in enumerate(stage.indices):
        if den[0].base.function == sp.exp(shifted.xreplace({u: var})):
            return shifted, u, pos
    return None


def _values_at(e: sp.Expr, stage: Stage, shifted, u, pos) -> dict | None:
    """The index values at which ``e`` is ``shifted`` (its reads of the input give them)."""
    for ind in e.atoms(sp.Indexed):
        if ind.base == stage.inp and len(ind.indices) == len(stage.indices):
            at = dict(zip(stage.indices, ind.indices, strict=True))
            if shifted.xreplace(at) == e:
                return at
    return None


def rewrite_softmax(expr: sp.Expr, stage: Stage) -> sp.Expr:
    """``expr`` with ``exp(z - m) / D`` products replaced by the stage's output."""
    form = _form(stage)
    if form is None or not expr.has(sp.exp):
        return expr
    shifted, u, pos = form

    def row(d: sp.Expr) -> dict | None:  # D[t] -> {t: .., u: dummy}
        if not isinstance(d, sp.Sum) or len(d.limits) != 1 or not isinstance(d.function, sp.exp):
            return None
        at = _values_at(d.function.args[0], stage, shifted, u, pos)
        return at if at is not None and at[u] == d.limits[0][0] else None

    def mul(e: sp.Expr) -> sp.Expr:
        factors = list(sp.Mul.make_args(e))
        for k, f in enumerate(factors):
            r = row(f.base) if f.is_Pow and f.exp.is_Integer and f.exp < 0 else None
            if r is None:
                continue
            for m_, g in enumerate(factors):
                if m_ == k:
                    continue
                if isinstance(g, sp.exp):
                    at = _values_at(g.args[0], stage, shifted, u, pos)
                    if at is not None and all(at[i] == r[i] for i in stage.indices if i != u):
                        factors[m_] = stage.out[tuple(at[i] for i in stage.indices)]
                        factors[k] = f.base ** (f.exp + 1)
                        return mul(sp.Mul(*factors))
                if isinstance(g, sp.Sum) and len(g.limits) == 1:
                    v = g.limits[0][0]
                    inner = [x for x in sp.Mul.make_args(g.function) if isinstance(x, sp.exp)]
                    for x in inner:
                        at = _values_at(x.args[0], stage, shifted, u, pos)
                        if (
                            at is None
                            or at[u] != v
                            or any(at[i] != r[i] for i in stage.indices if i != u)
                        ):
                            continue
                        val = stage.out[tuple(at[i] for i in stage.indices)]
                        factors[m_] = sp.Sum(g.function.xreplace({x: val}), *g.limits)
                        factors[k] = f.base ** (f.exp + 1)
                        return mul(sp.Mul(*factors))
        return e

    def walk(e: sp.Expr) -> sp.Expr:
        if not e.args:
            return e
        e = e.func(*[walk(a) for a in e.args])
        return mul(e) if e.is_Mul else e

    return walk(expr)
