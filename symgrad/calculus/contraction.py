"""Stage 3 (derive), delta contraction: KroneckerDelta factors against the Sums binding them.

``sympy.diff`` of an Indexed expression with respect to an Indexed element yields
``KroneckerDelta`` factors inside unevaluated Sums. SymPy's own ``simplify`` is not
safe on these, so this pass owns the rule:

    Sum_j  f(j) * KroneckerDelta(j, k)   ->   f(k)        (k inside j's range)

Terms free of the summed index become ``f * (hi - lo + 1)``; deltas between free
indices stay as structure (they say a Jacobian is diagonal). The range condition
holds by construction: the engine only pairs an index with one of the same dimension.
"""

from __future__ import annotations

from collections.abc import Mapping

import sympy as sp

from symgrad.calculus.forward_values import pull_out
from symgrad.calculus.index_arithmetic import InRange, contract_affine


def contract(expr: sp.Expr, ranges: Mapping[sp.Symbol, sp.Expr] | None = None) -> sp.Expr:
    """Contract every Sum in ``expr`` against the KroneckerDeltas on its index.

    ``ranges`` gives the extent of free indices (an input element ``k`` of a map that reads
    part of an axis, ``a[i]`` for ``i < h`` of ``a``'s ``2h``): where a Sum's range does
    not cover an index's, ``Sum_j f(j) delta(j, k) = f(k) [lo <= k <= hi]``.
    """
    expr = _flatten_delta_powers(expr)
    return _walk(expr, dict(ranges or {}))


def _flatten_delta_powers(expr: sp.Expr) -> sp.Expr:
    return expr.replace(
        lambda e: e.is_Pow and isinstance(e.base, sp.KroneckerDelta) and e.exp.is_positive,
        lambda e: e.base,
    )


def _walk(expr: sp.Expr, ranges: dict) -> sp.Expr:
    if not expr.args or not expr.has(sp.Sum):
        return expr
    if isinstance(expr, sp.Sum):
        body = _walk(expr.function, ranges)
        # limits are stored innermost first: contract from the inside out.
        for var, lo, hi in expr.limits:
            # A delta on ``var`` may sit inside an inner Sum it does not depend on: pull
            # such factors out of inner Sums first so the delta meets its own Sum.
            body = _contract_sum(pull_out(body), var, lo, hi, ranges)
        return body
    return expr.func(*[_walk(a, ranges) for a in expr.args])


def _delta_on(term: sp.Expr, var: sp.Symbol) -> sp.KroneckerDelta | None:
    for f in sp.Mul.make_args(term):
        if isinstance(f, sp.KroneckerDelta) and var in f.args:
            return f
    return None


def _terms(body: sp.Expr, var: sp.Symbol) -> list[sp.Expr]:
    """Split ``body`` into additive terms, distributing products only where a delta on
    ``var`` hides inside a factor (so forward-value forms like a*(1 - a) survive)."""
    out: list[sp.Expr] = []
    for t in sp.Add.make_args(body):
        hidden = any(
            f.is_Add and any(var in d.args for d in f.atoms(sp.KroneckerDelta))
            for f in sp.Mul.make_args(t)
        )
        if hidden:
            out.extend(_terms(sp.expand_mul(t), var) if sp.expand_mul(t) != t else [t])
        else:
            out.append(t)
    return out


def _covers(other: sp.Expr, lo: sp.Expr, hi: sp.Expr, ranges: dict) -> bool:
    """Whether ``lo..hi`` holds every value of ``other`` (an index of known extent); an
    index of unknown extent is taken to run over the same range (the engine pairs an
    index with one of the same dimension)."""
    extent = ranges.get(other)
    if extent is None:
        return True
    below, above = sp.expand(lo), sp.expand(hi - (extent - 1))
    return bool(below.is_nonpositive and above.is_nonnegative)


def _contract_sum(
    body: sp.Expr, var: sp.Symbol, lo: sp.Expr, hi: sp.Expr, ranges: dict | None = None
) -> sp.Expr:
    kept: list[sp.Expr] = []
    done: list[sp.Expr] = []
    for t in _terms(body, var):
        if t.is_zero:
            continue
        if not t.has(var):
            done.append(t * (hi - lo + 1))
            continue
        d = _delta_on(t, var)
        if d is None:
            # The index may sit inside an index expression (a[h*s + kh]): solve for it.
            solved = contract_affine(t, var, lo, hi)
            if solved is None:
                kept.append(t)
            else:
                done.append(_flatten_delta_powers(solved))
            continue
        other = d.args[1] if d.args[0] == var else d.args[0]
        rest = sp.Mul(*[f for f in sp.Mul.make_args(t) if f is not d])
        solved = _flatten_delta_powers(rest.xreplace({var: other}))
        if not _covers(other, lo, hi, ranges or {}):
            solved = solved * InRange(other, lo, hi)
        done.append(solved)
    result = sp.Add(*done)
    if kept:
        result += sp.Sum(sp.Add(*kept), (var, lo, hi))
    return result


def has_delta(expr: sp.Expr, a: sp.Symbol, b: sp.Symbol) -> bool:
    """Whether every additive term of ``expr`` carries the factor KroneckerDelta(a, b)."""
    target = sp.KroneckerDelta(a, b)
    # The common case without expanding (expand_mul of a deeply nested derivative is
    # exponential): every top-level term already has the factor.
    if all(target in sp.Mul.make_args(t) for t in sp.Add.make_args(expr)):
        return True
    terms = sp.Add.make_args(sp.expand_mul(expr))
    return bool(terms) and all(target in sp.Mul.make_args(t) for t in terms if not t.is_zero)
