"""Stability pass, what it leaves: the numerical hazards that remain in a stabilised
expression (overflow, division by a value that can reach 0, log of 0, cancellation), for
``symgrad audit``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sympy as sp

from symgrad.calculus.einsum import AxisMax, AxisSum
from symgrad.calculus.layout import RowSum
from symgrad.calculus.stability_nodes import ClampMin, RowMax, SafeLog, SafeLog1p
from symgrad.ir import ops as F


@dataclass(frozen=True)
class Hazard:
    """A remaining risk in one expression: what, where (the sub-expression), and why."""

    kind: str  # "overflow", "division", "log of 0", "cancellation"
    where: sp.Expr
    detail: str


def _shifted(u: sp.Expr) -> bool:
    shifts = (RowMax, AxisMax)
    return any(isinstance(t, shifts) or isinstance(-t, shifts) for t in sp.Add.make_args(u)) or (
        u.is_nonpositive is True
    )


def _nonnegative(t: sp.Expr) -> bool:
    """Whether ``t`` is >= 0 by its structure (squares, abs, exp, sums of such ...)."""
    if t.is_number:
        return bool(t >= 0)
    if t.is_nonnegative:
        return True
    if isinstance(t, sp.Abs | sp.exp | sp.cosh | F.sigmoid | F.softplus | F.relu):
        return True
    if t.is_Pow:
        return bool(t.exp.is_number and (t.exp.is_even or not t.exp.is_integer)) or _nonnegative(
            t.base
        )
    if isinstance(t, RowSum | sp.Sum) or t.is_Add or t.is_Mul:
        return all(_nonnegative(a) for a in (t.args if not isinstance(t, sp.Sum) else [t.function]))
    return False


def _may_vanish(b: sp.Expr) -> bool:
    """Whether a denominator may reach 0 (it is not a clamp, a positive constant, ...)."""
    if isinstance(b, ClampMin) or b.is_positive is True or b.is_number:
        return False
    if b.is_Pow:
        return _may_vanish(b.base)
    if isinstance(b, RowSum | AxisSum) and isinstance(b.args[0], sp.exp):
        return False  # a sum of exponentials (of shifted arguments) is >= 1 or overflows
    if b.is_Add and any(t.is_number and t > 0 for t in b.args):
        return not all(_nonnegative(t) for t in b.args)
    return not isinstance(b, sp.cosh | sp.exp)


def _exact(t: sp.Expr) -> bool:
    """A term whose values are exact small integers (a step, a sign): no cancellation."""
    return all(f.is_number or isinstance(f, F.step | sp.sign) for f in sp.Mul.make_args(t))


def hazards(expr: sp.Expr, data: Iterable[sp.Symbol] = ()) -> list[Hazard]:
    """The numerical hazards left in a (stabilised) batched expression.

    Args:
        expr: the expression.
        data: symbols that are data (inputs, targets), not computed values: a difference
            such as ``1 - y`` of data is exact enough and is not reported.
    """
    data = set(data)
    out: list[Hazard] = []
    # Inside a clamp the hazards are handled: the clamp is the guard.
    seen: set[sp.Basic] = {
        g for c in expr.atoms(ClampMin) for g in sp.preorder_traversal(c.args[0])
    }
    for e in sp.preorder_traversal(expr):
        if e in seen:
            continue
        seen.add(e)
        if isinstance(e, sp.exp) and not _shifted(e.args[0]):
            out.append(Hazard("overflow", e, "exp overflows above 709.8 (88.7 in float32)"))
        elif isinstance(e, sp.cosh | sp.sinh):
            out.append(Hazard("overflow", e, "overflows above |u| ~ 710 (89 in float32)"))
        elif isinstance(e, sp.log) and _may_vanish(e.args[0]):
            out.append(Hazard("log of 0", e, "log of a value that can reach 0 gives -inf"))
        elif isinstance(e, SafeLog | SafeLog1p):
            out.append(
                Hazard("log of 0", e, "its argument can reach 0: clamped at -100, as PyTorch")
            )
        elif e.is_Pow and e.exp.is_number and e.exp < 0 and _may_vanish(e.base):
            out.append(
                Hazard("division", e, "division by a value that can reach 0 (inf, then NaN)")
            )
        elif e.is_Add:
            nums = [t for t in e.args if t.is_number]
            rest = [t for t in e.args if not t.is_number]
            if (
                len(nums) == 1
                and len(rest) == 1
                and (nums[0] > 0) == rest[0].could_extract_minus_sign()
                and not rest[0].free_symbols <= data
                and not _exact(rest[0])
            ):
                out.append(
                    Hazard(
                        "cancellation",
                        e,
                        "relative digits are lost where the terms nearly cancel (the absolute "
                        "error stays at rounding level)",
                    )
                )
    return out


__all__ = ["Hazard", "hazards"]
