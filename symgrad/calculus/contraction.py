"""Stage 3a, delta contraction: eliminate KroneckerDelta factors against the Sums that bind them.

``sympy.diff`` of an Indexed expression with respect to an Indexed element yields
``KroneckerDelta`` factors inside unevaluated Sums. SymPy's own ``simplify`` is not
safe on these, so this pass owns the rule:

    Sum_j  f(j) * KroneckerDelta(j, k)   ->   f(k)        (k inside j's range)

Terms free of the summed index become ``f * (hi - lo + 1)``; deltas between free
indices stay as structure (they say a Jacobian is diagonal). The range condition
holds by construction: the engine only pairs an index with one of the same dimension.
"""

from __future__ import annotations

import sympy as sp

from symgrad.calculus.forward_values import pull_out
from symgrad.calculus.index_arithmetic import contract_affine


def contract(expr: sp.Expr) -> sp.Expr:
    """Contract every Sum in ``expr`` against the KroneckerDeltas on its index."""
    expr = _flatten_delta_powers(expr)
    return _walk(expr)


def _flatten_delta_powers(expr: sp.Expr) -> sp.Expr:
    return expr.replace(
        lambda e: e.is_Pow and isinstance(e.base, sp.KroneckerDelta) and e.exp.is_positive,
        lambda e: e.base,
    )


def _walk(expr: sp.Expr) -> sp.Expr:
    if not expr.args or not expr.has(sp.Sum):
        return expr
    if isinstance(expr, sp.Sum):
        body = _walk(expr.function)
        # limits are stored innermost first: contract from the inside out.
        for var, lo, hi in expr.limits:
            # A delta on ``var`` may sit inside an inner Sum it does not depend on: pull
            # such factors out of inner Sums first so the delta meets its own Sum.
            body = _contract_sum(pull_out(body), var, lo, hi)
        return body
    return expr.func(*[_walk(a) for a in expr.args])


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


def _contract_sum(body: sp.Expr, var: sp.Symbol, lo: sp.Expr, hi: sp.Expr) -> sp.Expr:
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
        done.append(_flatten_delta_powers(rest.xreplace({var: other})))
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
