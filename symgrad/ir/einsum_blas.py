"""The component fallback's products as BLAS calls: an ``einsum`` plan read as a batched
matrix product (index structure only, shared by the lowering and the printers).

A two-operand ``einsum`` whose summed letters appear in both operands is a matrix
product over the letters the operands share in the output (batch axes), the letters
only one operand carries being the rows (left) and columns (right): ``abd,acd->abc`` is
``x @ swapaxes(y)``, ``cd,abd->abc`` is ``y @ x.T`` (``x`` broadcast over ``y``'s
leading axes), ``adb,adc->bc`` (a parameter's gradient summed over the samples and an
axis) is ``x.reshape(-1, B).T @ y.reshape(-1, C)``. Array libraries run ``@`` as BLAS
``gemm`` (batched); ``einsum`` without path optimisation does not. The plan is read
from the subscripts only (which letters each operand and the output carry), never from
what the arrays are called; anything else keeps the ``einsum``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Side:
    """One operand of ``@``: operand ``operand`` of the einsum, its axes permuted by
    ``perm`` (None: as stored), then unit axes where ``units`` marks False (None: none),
    then, for several summed letters, its summed axes merged by a reshape (``merge``:
    "" none, "front" when they lead, "back" when they trail; ``keep`` is the stored axis
    of the one letter kept) and transposed (``transpose``)."""

    operand: int
    perm: tuple[int, ...] | None = None
    units: tuple[bool, ...] | None = None
    merge: str = ""
    keep: int = 0
    transpose: bool = False


@dataclass(frozen=True)
class MatmulPlan:
    """``left @ right`` (matmul's broadcasting over leading axes) equals the einsum."""

    left: Side
    right: Side


def matmul_plan(spec: str) -> MatmulPlan | None:
    """The batched matrix product an einsum ``spec`` is, or None."""
    ins, out = spec.split("->")
    subs = ins.split(",")
    if len(subs) != 2 or any(len(set(s)) != len(s) for s in (*subs, out)):
        return None
    x, y = subs
    summed = [c for c in x if c in y and c not in out]
    if not summed or any(c not in out and c not in summed for c in x + y):
        return None
    if any(c not in x and c not in y for c in out):
        return None
    for lhs, rhs in ((0, 1), (1, 0)):
        plan = _ordered(subs[lhs], subs[rhs], out, summed, (lhs, rhs))
        if plan is not None:
            return plan
    return None


def _ordered(
    x: str, y: str, out: str, summed: list[str], ops: tuple[int, int]
) -> MatmulPlan | None:
    """The plan with ``x`` on the left: ``out`` must end with a letter only ``x`` has
    (the rows) and then one only ``y`` has (the columns)."""
    if len(out) < 2:
        return None
    m, p = out[-2], out[-1]
    if m not in x or m in y or p not in y or p in x:
        return None
    lead = out[:-2]
    if len(summed) > 1:
        if lead:  # merged summed axes beside batch axes: left to einsum
            return None
        return _merged(x, y, m, p, summed, ops)
    k = summed[0]
    left = _side(x, lead, [m, k], ops[0])
    right = _side(y, lead, [k, p], ops[1])
    if left is None or right is None:
        return None
    return MatmulPlan(left, right)


def _side(s: str, lead: str, core: list[str], operand: int) -> Side | None:
    """Operand ``s`` laid out as its leading letters (in ``lead``'s order, unit axes for
    those it lacks, right-aligned) and then ``core``."""
    own = [c for c in lead if c in s]
    if len(own) + len(core) != len(s):
        return None
    order = own + core
    perm = tuple(s.index(c) for c in order)
    marks = [c in s for c in lead]
    while marks and not marks[0]:  # missing leading axes broadcast by themselves
        marks.pop(0)
    units = None if all(marks) else tuple(marks) + (True,) * len(core)
    return Side(operand, None if perm == tuple(range(len(s))) else perm, units)


def _merged(
    x: str, y: str, m: str, p: str, summed: list[str], ops: tuple[int, int]
) -> MatmulPlan | None:
    """Two-dimensional operands whose several summed axes are merged by a reshape: each
    stored with its summed letters together, in the same order in both."""
    if len(x) != len(summed) + 1 or len(y) != len(summed) + 1:
        return None
    xs, ys = x.replace(m, ""), y.replace(p, "")
    if xs != ys or x not in (m + xs, xs + m) or y not in (p + ys, ys + p):
        return None
    lm = "back" if x[0] == m else "front"
    rm = "front" if y[-1] == p else "back"
    left = Side(ops[0], merge=lm, keep=x.index(m), transpose=lm == "front")
    right = Side(ops[1], merge=rm, keep=y.index(p), transpose=rm == "back")
    return MatmulPlan(left, right)


def matmul_text(
    plan: MatmulPlan, names: list[str], permuted: Callable[[str, tuple[int, ...]], str]
) -> str:
    """``left @ right`` for ``plan`` over the operands ``names``; ``permuted(name, perm)``
    spells an array with its axes reordered (each target its own)."""
    return f"{_side_text(plan.left, names, permuted)} @ {_side_text(plan.right, names, permuted)}"


def _side_text(
    side: Side, names: list[str], permuted: Callable[[str, tuple[int, ...]], str]
) -> str:
    name = names[side.operand]
    text = name if side.perm is None else permuted(name, side.perm)
    if side.units is not None:
        text += "[" + ", ".join(":" if u else "None" for u in side.units) + "]"
    if side.merge == "front":
        text += f".reshape(-1, {name}.shape[{side.keep}])"
    elif side.merge == "back":
        text += f".reshape({name}.shape[{side.keep}], -1)"
    return text + (".T" if side.transpose else "")


def display_permuted(name: str, perm: tuple[int, ...]) -> str:
    """For documents: ``a.T`` (a matrix), ``a.mT`` (the last two axes swapped: each
    sample's matrix transposed), else ``transpose(a, perm)``."""
    n = len(perm)
    if n == 2:
        return f"{name}.T"
    if perm == (*range(n - 2), n - 1, n - 2):
        return f"{name}.mT"
    return f"transpose({name}, {perm})"
