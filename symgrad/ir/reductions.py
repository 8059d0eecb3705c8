"""Reductions over an index besides ``Sum``: ``max(expr, j)`` and ``min(expr, j)``.

``ReduceMax(body, j, hi)`` is ``max_{j=0..hi} body``; ``j`` is bound (not a free symbol).
Its derivative sends the gradient to the arg-max, written with the indicator
``ArgMax(body, j, hi)`` = ``[body(j) == max_j' body(j')] / #ties``, where ``j`` is free
(it is evaluated at the current value of ``j``). Ties share the gradient equally, as
``torch.amax`` / ``torch.max(x)`` (no ``dim``) do; ``torch.max(x, dim)`` instead gives all of it
to the one index it returns. Nothing here knows a layer: these are just expressions.
"""

from __future__ import annotations

import sympy as sp


class _Reduce(sp.Function):
    """Common part of ``ReduceMax`` and ``ReduceMin``: args (body, index, upper limit)."""

    nargs = 3
    is_real = True
    symbol = "max"

    @property
    def free_symbols(self) -> set[sp.Basic]:
        body, var, hi = self.args
        return (body.free_symbols - {var}) | hi.free_symbols

    def _eval_derivative(self, s):
        body, var, hi = self.args
        d = sp.diff(body, s)
        if d.is_zero:
            return sp.S.Zero
        pick = ArgMax if isinstance(self, ReduceMax) else ArgMin
        return sp.Sum(pick(body, var, hi) * d, (var, 0, hi))

    def _symgrad_tangent(self, R, tangents):
        """Forward mode: R{max_j f} = sum_j [j = argmax] R{f} (ties share, as the gradient)."""
        body, var, hi = self.args
        r = R(body)
        if r == 0:
            return sp.S.Zero
        pick = ArgMax if isinstance(self, ReduceMax) else ArgMin
        return sp.Sum(pick(body, var, hi) * r, (var, 0, hi))

    def _latex(self, printer):
        body, var, _ = self.args
        return rf"\{self.symbol}_{{{printer._print(var)}}} \left({printer._print(body)}\right)"

    def _sympystr(self, printer):
        body, var, _ = self.args
        return f"{self.symbol}_{printer._print(var)}({printer._print(body)})"


class ReduceMax(_Reduce):
    """``max_{j=0..hi} body``."""

    symbol = "max"


class ShiftMax(ReduceMax):
    """``max_j body`` as the shift of a softmax over ``j``: ``exp(e - m) / sum_j exp(e - m)``
    does not depend on ``m``, so its derivative through ``m`` is exactly zero (the shift
    only keeps the exponentials finite, as every stable softmax does)."""

    def _eval_derivative(self, s):
        return sp.S.Zero

    def _symgrad_tangent(self, R, tangents):
        return sp.S.Zero


class ReduceMin(_Reduce):
    """``min_{j=0..hi} body``."""

    symbol = "min"


class _Pick(sp.Function):
    """The share of the gradient index ``j`` gets: 1/#ties where ``body(j)`` is extreme."""

    nargs = 3
    is_real = True
    is_nonnegative = True
    symbol = "argmax"

    def _eval_derivative(self, s):
        return sp.S.Zero  # piecewise constant

    def _symgrad_tangent(self, R, tangents):
        return sp.S.Zero  # piecewise constant

    def _latex(self, printer):
        body, var, _ = self.args
        v = printer._print(var)
        op = rf"\operatorname{{{self.symbol}}}_{{{v}}}"
        return rf"\left[{v} = {op} {printer._print(body)}\right]"

    def _sympystr(self, printer):
        body, var, _ = self.args
        return f"[{printer._print(var)} == {self.symbol}({printer._print(body)})]"


class ArgMax(_Pick):
    """``[body(j) == max body] / #ties``."""

    symbol = "argmax"


class ArgMin(_Pick):
    """``[body(j) == min body] / #ties``."""

    symbol = "argmin"


REDUCTIONS = (ReduceMax, ReduceMin)
PICKS = (ArgMax, ArgMin)
