"""The scalar explorer's numbers: float64 evaluation of the expression tree (with
:mod:`math`, so finite differences show real round-off) and values as a learner reads them."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import sympy as sp

from symgrad.ir.ops import sigmoid


def _fmt(v: float, digits: int = 6) -> str:
    """A value as a learner reads it: 14, 14.003, -3, 1.5e-08 (``digits`` significant)."""
    if math.isnan(v):
        return "nan"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.{digits}g}"


def _fmt_h(h: float) -> str:
    return f"{h:.0e}" if h < 1e-3 else _fmt(h)


# -- float64 evaluation of the tree ---------------------------------------------------------

_FLOAT_FUNCS: dict[type, Callable[[float], float]] = {
    sp.exp: math.exp,
    sp.log: math.log,
    sp.Abs: abs,
    sp.tanh: math.tanh,
    sp.cosh: math.cosh,
    sp.sinh: math.sinh,
    sp.sin: math.sin,
    sp.cos: math.cos,
    sigmoid: lambda v: 0.5 + 0.5 * math.tanh(0.5 * v),
}


def _float(expr: sp.Expr, point: Mapping[sp.Symbol, float]) -> float:
    """``expr`` at ``point`` in float64 arithmetic (raises ValueError/OverflowError)."""
    if expr.is_Symbol:
        return point[expr]
    if expr.is_Number:
        return float(expr)
    args = [_float(a, point) for a in expr.args]
    if isinstance(expr, sp.Add):
        return math.fsum(args) if len(args) > 2 else args[0] + args[1]
    if isinstance(expr, sp.Mul):
        out = 1.0
        for v in args:
            out *= v
        return out
    if isinstance(expr, sp.Pow):
        base, exp = args
        if base == 0.0 and exp < 0:
            raise ValueError("division by zero")
        value = base**exp
        if isinstance(value, complex):
            raise ValueError("a negative number to a fractional power")
        return float(value)
    if isinstance(expr, sp.Max):
        return max(args)
    if isinstance(expr, sp.Min):
        return min(args)
    fn = _FLOAT_FUNCS.get(type(expr))
    if fn is None:  # not reachable from the whitelist; a clear error all the same
        raise ValueError(f"cannot evaluate {type(expr).__name__}")
    return fn(args[0])


def _safe_float(expr: sp.Expr, point: Mapping[sp.Symbol, float]) -> float:
    try:
        value = _float(expr, point)
    except (ValueError, OverflowError, ZeroDivisionError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def _safe_sympy_float(expr: sp.Expr, point: Mapping[sp.Symbol, sp.Expr]) -> float:
    try:
        value = complex(expr.xreplace(point).evalf(17))
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return math.nan
    return value.real if value.imag == 0 and math.isfinite(value.real) else math.nan
