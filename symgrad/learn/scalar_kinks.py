"""Points where a scalar expression has no derivative: kinks (``abs(x)`` at 0, ``max(x, y)``
at a tie, from the op registry's kink rules) and singular points (``sqrt(x)`` at 0, where
the derivative is infinite). There the explorer gives the one-sided difference quotients
instead of a derivative."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import sympy as sp

from symgrad.ir.ops import kinks

#: The one-sided steps shown (small enough to show the limit, large enough for round-off).
ONE_SIDED = (1e-4, 1e-8)
#: Expressions whose expanded form would have more terms than this are not expanded.
MAX_EXPANDED_TERMS = 2000


def expanded_terms(expr: sp.Expr) -> int:
    """An upper bound on the number of terms ``sp.expand(expr)`` would make (a product of
    sums multiplies their sizes; ``(a + b + ...)**n`` has C(n + k - 1, k - 1) terms)."""
    if isinstance(expr, sp.Add):
        return sum(expanded_terms(a) for a in expr.args)
    if isinstance(expr, sp.Mul):
        out = 1
        for a in expr.args:
            out *= expanded_terms(a)
            if out > 10**9:
                return out
        return out
    if isinstance(expr, sp.Pow) and expr.exp.is_Integer and int(expr.exp) > 1:
        k, n = expanded_terms(expr.base), int(expr.exp)
        return math.comb(min(n + k - 1, 10**6), max(k - 1, 0)) if k > 1 else 1
    return 1


def not_differentiable(
    expr: sp.Expr,
    point: Mapping[sp.Symbol, float],
    gradient: Mapping[str, float],
    f: Callable[[Mapping[sp.Symbol, float]], float],
) -> dict[str, str]:
    """For each variable with no derivative at ``point``, why, with one-sided quotients."""
    at_kink = []
    for k in kinks(expr):
        try:
            v = float(k.xreplace(dict(point)))
        except (TypeError, ValueError):
            continue
        if abs(v) < 1e-12:
            at_kink.append(k)
    out = {}
    base = f(point)
    for sym in sorted(point, key=str):
        name = str(sym)
        singular = not math.isfinite(gradient.get(name, 0.0))
        involved = any(k.has(sym) for k in at_kink)
        if not (singular or involved):
            continue
        right, left = _one_sided(f, point, sym, base)
        if not singular and _agree(right, left):
            continue  # a kink of another variable's: this one is smooth here
        what = "a singular point, where it is infinite" if singular else "a kink"
        out[name] = (
            f"df/d{name} does not exist at this point ({what}): from the left "
            f"{_show(left)}, from the right {_show(right)} (one-sided difference quotients "
            f"at h = {ONE_SIDED[0]:g} and {ONE_SIDED[1]:g})"
        )
    return out


def _one_sided(f, point, sym, base) -> tuple[list[float], list[float]]:
    right: list[float] = []
    left: list[float] = []
    for h in ONE_SIDED:
        for sign, into in ((1, right), (-1, left)):
            moved = dict(point)
            moved[sym] = point[sym] + sign * h
            try:
                into.append(sign * (f(moved) - base) / h)
            except (ValueError, OverflowError, ZeroDivisionError):
                into.append(math.nan)
    return right, left


def _agree(right: list[float], left: list[float]) -> bool:
    a, b = right[-1], left[-1]
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= 1e-6 * max(1.0, abs(a))


def _show(values: list[float]) -> str:
    if not all(math.isfinite(v) for v in values):
        return "undefined (f is not defined on that side)"
    if abs(values[-1]) > 10 * max(1.0, abs(values[0])):
        return f"unbounded ({values[0]:.4g}, then {values[-1]:.4g})"
    return f"{values[-1] + 0.0:.6g}"  # + 0.0: no "-0"
