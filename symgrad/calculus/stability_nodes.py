"""Stability pass, its vocabulary: target-free nodes that every backend prints in a stable
way (``calculus/stability.py`` produces them; ``backends/*_printer.py`` print them)."""

from __future__ import annotations

import sympy as sp

# ---------------------------------------------------------------------------------------
# Target-free nodes that backends print in a stable way.


class Softmax(sp.Function):
    """``exp(v) / RowSum(exp(v))``, evaluated with the row maximum shifted out."""

    nargs = 1


class LogSumExp(sp.Function):
    """``log(RowSum(exp(v)))``, evaluated with the row maximum shifted out."""

    nargs = 1


class Total(sp.Function):
    """The sum of every entry of an array (a loss value)."""

    nargs = 1


class RowMax(sp.Function):
    """The per-sample maximum, an (n, 1) column (for shifted exponentials)."""

    nargs = 1


class LogCosh(sp.Function):
    """``log(cosh(v))``: no overflow for large ``|v|``, no cancellation for small ``|v|``."""

    nargs = 1


class ClampMin(sp.Function):
    """``max(v, 1e-12)``: a denominator that can reach 0, clamped as PyTorch's BCE does."""

    nargs = 1


class SafeLog(sp.Function):
    """A log in a loss value, clamped at -100 like PyTorch's BCE."""

    nargs = 1


class SafeLog1p(sp.Function):
    """``log1p`` in a loss value, clamped at -100 like ``SafeLog``."""

    nargs = 1


__all__ = [
    "ClampMin",
    "LogCosh",
    "LogSumExp",
    "RowMax",
    "SafeLog",
    "SafeLog1p",
    "Softmax",
    "Total",
]
