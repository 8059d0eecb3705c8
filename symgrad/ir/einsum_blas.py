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


@dataclass(frozen=True)
class ReshapePlan:
    """A contraction with several row, column or summed letters as one (batched) matrix
    product: operand ``left`` permuted by ``lperm`` to (batch, rows, summed) and reshaped
    to (batch, |rows|, |summed|), operand ``right`` permuted by ``rperm`` to (batch,
    summed, columns) and reshaped to (batch, |summed|, |columns|); their product reshaped
    to (batch, rows, columns), the output's own order. ``batch``, ``rows``, ``cols``: the
    stored axes (of left, left and right) whose sizes those groups keep."""

    left: int
    right: int
    lperm: tuple[int, ...]
    rperm: tuple[int, ...]
    batch: tuple[int, ...]
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    #: an operand stored as (batch, summed, rows) (left) or (batch, columns, summed)
    #: (right): reshaped as stored and its last two axes swapped (a view, no copy)
    lswap: bool = False
    rswap: bool = False
    #: the product's axes (batch, rows, columns) permuted into the output's order (None:
    #: already in it)
    out_perm: tuple[int, ...] | None = None


def reshape_plan(spec: str) -> ReshapePlan | None:
    """The reshaped matrix product an einsum ``spec`` is where :func:`matmul_plan` finds
    none, or None: two operands, a letter summed over being in both, each output letter
    in both (a batch axis) or in one (a row or a column: each operand has some), at least
    one letter summed over. The product's axes are permuted into the output's order at
    the end where they are not in it. Exact: a reshape of a permuted view copies it."""
    ins, out = spec.split("->")
    subs = ins.split(",")
    if len(subs) != 2 or any(len(set(s)) != len(s) for s in (*subs, out)):
        return None
    if matmul_plan(spec) is not None:
        return None
    x, y = subs
    if any(c not in x and c not in y for c in out):
        return None
    if any(c not in out and c not in (y if c in x else x) for c in x + y):
        return None  # a letter summed over one operand alone
    batch = [c for c in out if c in x and c in y]
    summed = [c for c in x if c in y and c not in out]
    if not summed:
        return None
    orders = ((x, y, 0, 1), (y, x, 1, 0))
    for a, b, ia, ib in sorted(orders, key=lambda o: _moved(o[0], o[1], batch, out)):
        rows = [c for c in out if c in a and c not in b]
        cols = [c for c in out if c in b and c not in a]
        if rows and cols:
            made = "".join(batch + rows + cols)
            ks = [c for c in a if c in summed]  # the summed letters in a's order
            lperm = tuple(a.index(c) for c in batch + rows + ks)
            rperm = tuple(b.index(c) for c in batch + ks + cols)
            return ReshapePlan(
                ia,
                ib,
                lperm,
                rperm,
                tuple(a.index(c) for c in batch),
                tuple(a.index(c) for c in rows),
                tuple(b.index(c) for c in cols),
                a == "".join(batch + ks + rows),
                b == "".join(batch + cols + ks),
                None if made == out else tuple(made.index(c) for c in out),
            )
    return None


def _moved(a: str, b: str, batch: list[str], out: str) -> bool:
    """Whether ``a`` on the left leaves the product's axes out of the output's order."""
    rows = [c for c in out if c in a and c not in b]
    cols = [c for c in out if c in b and c not in a]
    return "".join(batch + rows + cols) != out


def reshape_text(
    plan: ReshapePlan, names: list[str], permuted: Callable[[str, tuple[int, ...]], str]
) -> str:
    """``plan`` over the operands ``names`` as text: permuted views (``permuted(name,
    perm)``, each target its own), ``reshape`` and ``@``."""
    a, b = names[plan.left], names[plan.right]

    def sizes(name: str, axes: tuple[int, ...]) -> list[str]:
        return [f"{name}.shape[{k}]" for k in axes]

    def view(name: str, perm: tuple[int, ...]) -> str:
        return name if perm == tuple(range(len(perm))) else permuted(name, perm)

    lead = sizes(a, plan.batch)
    rows, cols = sizes(a, plan.rows), sizes(b, plan.cols)
    m, p = " * ".join(rows), " * ".join(cols)
    swap = (*range(len(lead)), len(lead) + 1, len(lead))
    if plan.lswap:
        left = permuted(f"{a}.reshape({', '.join([*lead, '-1', m])})", swap)
    else:
        left = f"{view(a, plan.lperm)}.reshape({', '.join([*lead, m, '-1'])})"
    if plan.rswap:
        right = permuted(f"{b}.reshape({', '.join([*lead, p, '-1'])})", swap)
    else:
        right = f"{view(b, plan.rperm)}.reshape({', '.join([*lead, '-1', p])})"
    product = f"({left} @ {right}).reshape({', '.join([*lead, *rows, *cols])})"
    return product if plan.out_perm is None else permuted(product, plan.out_perm)
