"""Stage 5 (lower), the general fallback: a component expression lowered to batched NumPy.

When a contraction has no neat matrix form (pairwise terms ``sum((a[j] - a[i])**2, j)``,
max reductions, weight-decay gradients ...), the step keeps its component form
(``matrix_form.Comp``) and this pass lowers it to array operations on the batch:
every index in scope gets an axis after the sample axis, an array ``a[j]`` is placed
on its axes with ``None`` elsewhere (broadcasting), ``Sum`` is a sum over its axis (a
product of arrays summed over an index prints as one ``np.einsum``), ``max(e, j)`` a
max over it. Elementwise functions stay SymPy functions, so they print with the same
stable forms as everywhere else. No Python loop over samples or indices is emitted.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp

from symgrad.calculus.index_arithmetic import Divisible, InRange
from symgrad.calculus.matrix_form import Comp
from symgrad.calculus.partial_reads import unmark
from symgrad.errors import DerivationError
from symgrad.ir.einsum_blas import display_permuted, matmul_plan, matmul_text
from symgrad.ir.indices import BATCH
from symgrad.ir.reductions import ArgMax, ArgMin, ReduceMax, ReduceMin, ShiftMax

#: The batch size (the same Symbol as ``layout.N``; layout imports this module).
N = BATCH


def _slots(present: set[int], ndim: int) -> str:
    """``[:, None, :]``: the axes an array fills in an ``ndim`` broadcast."""
    if present == set(range(ndim)):
        return ""
    return "[" + ", ".join(":" if d in present else "None" for d in range(ndim)) + "]"


class Place(sp.Function):
    """Array ``name`` on output axes ``positions`` of an ``ndim`` array (with a leading
    sample axis when ``batched``): ``a1[:, None, :]``. Args (name, Tuple(pos), ndim, batched)."""

    nargs = 4

    def _sympystr(self, printer):
        sym, pos, ndim, mine = self.args
        name = printer._print(sym)
        axes = ([0] if int(mine) else []) + [int(q) for q in pos]
        order = sorted(range(len(axes)), key=axes.__getitem__)
        if order != list(range(len(axes))):
            name = f"{name}.T" if len(axes) == 2 else f"transpose({name}, {tuple(order)})"
        return name + _slots(set(axes), int(ndim))


class Arange(sp.Function):
    """An index used as a value: ``arange(size)`` on axis ``pos`` of ``ndim``."""

    nargs = 3

    def _sympystr(self, printer):
        return f"arange({printer._print(self.args[0])})"


class Gather(sp.Function):
    """Array ``name`` read at computed positions (index arithmetic, ``a[i + h]``): args
    (name, Tuple(index arrays over the scope's axes, no sample axis), batched[, scope]).
    A position outside the array reads zero (clipped, then masked), as zero padding reads.
    ``scope``, given where every position is a constant (``x[0]``, one fixed entry), is
    the number of the scope's axes the entry is broadcast over."""

    nargs = (3, 4)

    def _sympystr(self, printer):
        sym, pos, mine, *scope = self.args
        lead = ":, " if int(mine) else ""
        spread = f"[:{', None' * int(scope[0])}]" if scope and int(mine) else ""
        return f"{printer._print(sym)}[{lead}{', '.join(printer._print(p) for p in pos)}]{spread}"


class IndexIn(sp.Function):
    """``[lo <= e <= hi]`` over the scope's axes (``e`` an index array): args (e, lo, hi).
    An index over its whole range (known once the sizes are numbers) is always in: 1."""

    nargs = 3

    @classmethod
    def eval(cls, e, lo, hi):
        known = isinstance(e, Arange) and lo.is_number and hi.is_number and e.args[0].is_number
        if known and lo <= 0 and hi >= e.args[0] - 1:
            return sp.S.One
        return None

    def _sympystr(self, printer):
        e, lo, hi = (printer._print(a) for a in self.args)
        return f"(({e} >= {lo}) & ({e} <= {hi}))"


class IndexDivides(sp.Function):
    """``[s | e]`` over the scope's axes (``e`` an index array): args (e, s)."""

    nargs = 2

    def _sympystr(self, printer):
        e, d = (printer._print(a) for a in self.args)
        return f"(({e}) % {d} == 0)"


class Masked(sp.Function):
    """``where(c1 & c2 ..., e, 0)``: ``e`` where the index conditions hold (the dtype of
    ``e``). Args (Tuple(conditions), e)."""

    nargs = 2

    @classmethod
    def eval(cls, conds, e):
        kept = [c for c in conds if c != 1]
        if not kept:
            return e
        return cls(sp.Tuple(*kept), e) if len(kept) < len(conds) else None

    def _sympystr(self, printer):
        cond = " & ".join(printer._print(c) for c in self.args[0])
        return f"where({cond}, {printer._print(self.args[1])}, 0)"


def _masked(factors: list[sp.Expr]) -> sp.Expr:
    """A product whose index indicators become one ``Masked`` condition."""
    conds = [f for f in factors if isinstance(f, IndexIn | IndexDivides)]
    if not conds:
        return sp.Mul(*factors)
    rest = sp.Mul(*[f for f in factors if not isinstance(f, IndexIn | IndexDivides)])
    return Masked(sp.Tuple(*conds), rest)


class Delta(sp.Function):
    """KroneckerDelta between two axes: args (size_a, pos_a, size_b, pos_b, ndim)."""

    nargs = 5


class AxisSum(sp.Function):
    def _sympystr(self, printer):
        return f"sum({printer._print(self.args[0])}, axis={int(self.args[1])})"

    """``np.sum(e, axis)``."""

    nargs = 2

    def einsum_plan(self) -> tuple[str, list[tuple[sp.Expr, list[int]]], list[int]] | None:
        """The sum as one ``einsum`` where its argument is a product of placed arrays (see
        :func:`einsum_spec`), else None."""
        return einsum_spec(self.args[0], int(self.args[1]))


class AxisMax(sp.Function):
    def _sympystr(self, printer):
        return f"max({printer._print(self.args[0])}, axis={int(self.args[1])})"

    """``np.max(e, axis)``."""

    nargs = 2


class AxisMin(sp.Function):
    def _sympystr(self, printer):
        return f"min({printer._print(self.args[0])}, axis={int(self.args[1])})"

    """``np.min(e, axis)``."""

    nargs = 2


class ShareMax(sp.Function):
    def _sympystr(self, printer):
        return f"share_max({printer._print(self.args[0])}, axis={int(self.args[1])})"

    """``[e == max(e, axis)] / #ties`` (the arg-max indicator, ties sharing equally)."""

    nargs = 2


class ShareMin(sp.Function):
    def _sympystr(self, printer):
        return f"share_min({printer._print(self.args[0])}, axis={int(self.args[1])})"

    """``[e == min(e, axis)] / #ties``."""

    nargs = 2


class Einsum(sp.Function):
    """``np.einsum(spec, *operands)[slots]``: a product of arrays summed over an index.
    Args (Symbol(spec), Symbol(slots), *operand names); atoms only, so CSE keeps it whole."""

    def _sympystr(self, printer):
        # for documents: a matrix product per sample as @ (each sample's matrix
        # transposed written .mT), any other contraction as the einsum
        spec, slots, *ops = self.args
        names = [printer._print(o) for o in ops]
        plan = matmul_plan(spec.name)
        if plan is None:
            return f'einsum("{spec.name}", {", ".join(names)}){slots.name}'
        return f"({matmul_text(plan, names, display_permuted)}){slots.name}"


class AxisSoftmax(sp.Function):
    """The stable softmax of ``e`` along ``axis`` (the maximum shifted out): args (e, axis)."""

    nargs = 2

    def _sympystr(self, printer):
        return f"softmax({printer._print(self.args[0])}, axis={int(self.args[1])})"


class Full(sp.Function):
    """``e`` broadcast to ``shape`` (a fresh array): args (e, Tuple(shape))."""

    nargs = 2

    def _sympystr(self, printer):
        return f"broadcast_to({printer._print(self.args[0])}, {printer._print(self.args[1])})"


class Batched(sp.Function):
    """The batched form of a component fallback, for display: the array program it is
    lowered to (``einsum``, broadcasting, axis reductions), written as NumPy-like text.
    Args (Comp, sample_sum as 0/1)."""

    nargs = 2

    def lowered(self) -> sp.Expr:
        return lower(self.args[0], sample_sum=bool(int(self.args[1])))

    @property
    def samples_explicit(self) -> bool:
        """Whether the component form states the batch's samples itself (see
        :func:`samples_explicit`): then it is its own batched form."""
        return samples_explicit(self.args[0])

    def _symgrad_tangent(self, R, tangents):
        r = R(self.args[0])
        return Batched(r, self.args[1]) if r != 0 else sp.S.Zero

    def _sympystr(self, printer):
        low = self.lowered()
        text = printer._print(low)
        if isinstance(low, Einsum) and text.startswith("(") and text.endswith(")"):
            return text[1:-1]  # a whole matrix product needs no parentheses
        return text

    def _latex(self, printer):
        if samples_explicit(self.args[0]):
            # the sample index is the rows' axis: the component form is the batched form,
            # and typeset it breaks across lines where a long array program cannot
            return printer._print(self.args[0])
        text = sp.StrPrinter().doprint(self)  # NumPy-like text: only _ { } % # & $ need escaping
        for ch in "_{}%#&$":
            text = text.replace(ch, "\\" + ch)
        return r"\texttt{" + text + "}"


LOWERED = (
    Place,
    Gather,
    IndexIn,
    IndexDivides,
    Masked,
    Arange,
    Delta,
    AxisSum,
    AxisMax,
    AxisMin,
    ShareMax,
    ShareMin,
    Full,
    Einsum,
    AxisSoftmax,
)
#: Unlowered display nodes (lowered by ``layout.lower_fallbacks`` before printing code).
DISPLAY = (Batched,)


def axis_sum(arg: sp.Expr, axis: sp.Integer) -> sp.Expr:
    """``AxisSum(arg, axis)``, as one ``np.einsum`` when ``arg`` is a product of arrays."""
    coeff, rest = arg.as_coeff_Mul() if arg.is_Mul else (sp.S.One, arg)
    if isinstance(rest, Einsum) and not rest.args[1].name:  # one einsum, one letter fewer
        ins, out = rest.args[0].name.split("->")
        out = out[: int(axis)] + out[int(axis) + 1 :]
        return coeff * Einsum(sp.Symbol(f"{ins}->{out}"), sp.Symbol(""), *rest.args[2:])
    plan = einsum_spec(rest, int(axis))
    if plan is None:
        return AxisSum(arg, axis)
    spec, ops, keep = plan
    ndim = int(next(iter(rest.atoms(Place))).args[2])
    out_axes = [d for d in range(ndim) if d != int(axis)]
    present = {out_axes.index(q) for q in keep}
    slots = ""
    if present != set(range(ndim - 1)):
        slots = "[" + ", ".join(":" if d in present else "None" for d in range(ndim - 1)) + "]"
    return coeff * Einsum(sp.Symbol(spec), sp.Symbol(slots), *(name for name, _ in ops))


def lower(comp: Comp, *, sample_sum: bool = False, batched: bool = True) -> sp.Expr:
    """The batched array expression of ``comp``.

    Args:
        comp: the component fallback (expression, free indices, ranges, parameter names).
        sample_sum: sum over the samples of the batch (a parameter gradient).
        batched: the result has a sample axis (False for a penalty term: once per batch).
    """
    expr, free, shape, names = comp.args
    if batched and samples_explicit(comp):
        # a component form that subscripts its arrays by sample (a stage that couples the
        # samples): the sample index is the arrays' own first axis, its sums over the
        # batch already there; no implicit sample axis is added and none is summed over
        batched, sample_sum = False, False
    params = {str(s) for s in names}
    ctx = list(free)
    rng = dict(zip(free, shape, strict=True))
    per_sample = batched and any(str(t.base.label) not in params for t in expr.atoms(sp.Indexed))
    out = _lower(expr, ctx, rng, params, batched)
    lead = 1 if batched else 0
    if sample_sum:
        if per_sample:
            out = axis_sum(out, sp.Integer(0))
        else:  # the same for every sample: n times it
            out = N * (axis_sum(out, sp.Integer(0)) if _is_array(out) else out)
        full = tuple(shape)
        lead = 0
    else:
        full = ((N,) if batched else ()) + tuple(shape)
    present = {f for f in free if expr.has(f)}
    partial = not _is_array(out) or present != set(free) or (lead and not per_sample)
    if partial and full:
        out = Full(out, sp.Tuple(*full))
    return out


def samples_explicit(comp: Comp) -> bool:
    """Whether ``comp`` states the samples of the batch itself: its first free index runs
    over the batch (``out[s, i]``), or it sums over the batch (``sum_t g[t, p]``)."""
    expr, _, shape, _ = comp.args
    if len(shape) and shape[0] == N:
        return True
    return any(hi == N - 1 for e in expr.atoms(sp.Sum) for _, _, hi in e.limits)


def _is_array(e: sp.Expr) -> bool:
    return bool(e.atoms(Place, Arange, Delta, Gather, IndexIn, Einsum))


def _index_array(e: sp.Expr, ctx: list, rng: dict, lead: int, what: sp.Expr) -> sp.Expr:
    """An integer index expression as an array over the scope's axes (``lead`` leading
    unit axes): each index an ``Arange`` on its own axis."""
    e = unmark(e)
    bad = [v for v in e.free_symbols if v.is_integer and not v.is_positive and v not in ctx]
    if bad:
        raise DerivationError(f"cannot lower {what}: subscript {e} is not an index in scope")
    ndim = sp.Integer(len(ctx) + lead)
    return e.xreplace(
        {
            v: Arange(rng[v], sp.Integer(ctx.index(v) + lead), ndim)
            for v in e.free_symbols
            if v in ctx
        }
    )


def _lower(e: sp.Expr, ctx: list, rng: dict, params: set[str], batched: bool) -> sp.Expr:
    """One component node as an array expression over the scope's axes (``ctx``, a
    leading sample axis when ``batched``): arrays placed on their axes, index predicates
    as index arrays, sums and max/min reductions as axis reductions."""
    if e.is_Number:
        return e
    for types, rule in _RULES:
        if isinstance(e, types):
            return rule(e, ctx, rng, params, batched)
    if not e.args:
        return e
    if e.is_Mul:
        return _lower_mul(e, ctx, rng, params, batched)
    return e.func(*[_lower(a, ctx, rng, params, batched) for a in e.args])


def _lower_indexed(e: sp.Indexed, ctx: list, rng: dict, params: set[str], batched: bool) -> sp.Expr:
    """An array read: placed on the axes of its indices, or gathered at computed ones."""
    ndim = sp.Integer(len(ctx) + (1 if batched else 0))
    lead = 1 if batched else 0
    name = str(e.base.label)
    pos = []
    mine = batched and name not in params
    if any(ix not in ctx for ix in e.indices):  # index arithmetic: a gather
        arrays = [_index_array(ix, ctx, rng, 0, e) for ix in e.indices]
        fixed = not any(a.has(Arange) for a in arrays)  # one entry, on none of the axes
        scope = (sp.Integer(len(ctx)),) if fixed and ctx else ()
        return Gather(sp.Symbol(name), sp.Tuple(*arrays), sp.Integer(int(mine)), *scope)
    for ix in e.indices:
        if ix not in ctx:
            raise DerivationError(f"cannot lower {e}: subscript {ix} is not an index in scope")
        pos.append(sp.Integer(ctx.index(ix) + lead))
    if len(set(pos)) != len(pos):
        raise DerivationError(f"cannot lower {e}: a repeated index (a diagonal)")
    return Place(sp.Symbol(name), sp.Tuple(*pos), ndim, sp.Integer(int(mine)))


def _lower_predicate(e: sp.Expr, ctx: list, rng: dict, params: set[str], batched: bool) -> sp.Expr:
    """``[lo <= e <= hi]``, ``[s | e]`` and a bracket ``[a = b]`` over index arrays."""
    lead = 1 if batched else 0
    if isinstance(e, InRange):
        return IndexIn(_index_array(e.args[0], ctx, rng, lead, e), e.args[1], e.args[2])
    if isinstance(e, Divisible):
        return IndexDivides(_index_array(e.args[0], ctx, rng, lead, e), e.args[1])
    a, b = e.args
    if a in ctx and b in ctx:
        return Delta(
            rng[a],
            sp.Integer(ctx.index(a) + lead),
            rng[b],
            sp.Integer(ctx.index(b) + lead),
            sp.Integer(len(ctx) + lead),
        )
    return IndexIn(_index_array(a - b, ctx, rng, lead, e), sp.S.Zero, sp.S.Zero)


def _lower_symbol(e: sp.Symbol, ctx: list, rng: dict, params: set[str], batched: bool) -> sp.Expr:
    """An index in scope is its ``Arange``; any other symbol stays."""
    if e in ctx:
        lead = 1 if batched else 0
        return Arange(rng[e], sp.Integer(ctx.index(e) + lead), sp.Integer(len(ctx) + lead))
    return e


def _lower_reduction(e: sp.Expr, ctx: list, rng: dict, params: set[str], batched: bool) -> sp.Expr:
    """A sum (one index at a time, the outermost first) or a max/min reduction: its body
    lowered with the index in scope, then reduced along that index's axis."""
    if isinstance(e, sp.Sum):
        body, limits = e.function, list(e.limits)
        # limits are innermost first: the outermost index enters the scope first
        for var, lo, hi in limits[:-1]:
            body = sp.Sum(body, (var, lo, hi))
        var, lo, hi = limits[-1]
    else:
        body, var, hi = e.args
        lo = sp.S.Zero
    if lo != 0:
        raise DerivationError(f"cannot lower {e}: sums start at 0")
    if var in ctx:
        raise DerivationError(f"cannot lower {e}: index {var} is already in scope")
    if isinstance(e, sp.Sum):
        split = _split_sum(body, var, lo, hi, ctx, rng, params, batched)
        if split is not None:
            return split
    inner = _lower(body, [*ctx, var], {**rng, var: hi - lo + 1}, params, batched)
    if not body.has(var):
        return inner * (hi - lo + 1) if isinstance(e, sp.Sum) else inner
    axis = sp.Integer(len(ctx) + (1 if batched else 0))
    if isinstance(e, sp.Sum):
        return axis_sum(inner, axis)
    return (AxisMax if isinstance(e, ReduceMax) else AxisMin)(inner, axis)


def _split_sum(
    body: sp.Expr,
    var: sp.Symbol,
    lo: sp.Expr,
    hi: sp.Expr,
    ctx: list,
    rng: dict,
    params: set[str],
    batched: bool,
) -> sp.Expr | None:
    """``sum_var body`` as several smaller reductions where that saves work: a sum of sums
    (each may be one einsum), factors free of ``var`` taken out; None where it stays one."""
    if body.is_Mul and any(f.is_Add for f in body.args):
        # sum_k (V[k, i] - c) d[k] -> sum_k V[k, i] d[k] - c sum_k d[k]: two einsums
        # instead of one (n, i, k) broadcast
        body = sp.expand(
            body, deep=False, power_exp=False, power_base=False, log=False, multinomial=False
        )
    if body.is_Add:  # a sum of sums: each may be one einsum
        return sp.Add(
            *(_lower(sp.Sum(t, (var, lo, hi)), ctx, rng, params, batched) for t in body.args)
        )
    if body.is_Mul:  # factors free of var leave the sum
        out = [f for f in body.args if not f.has(var)]
        if out:
            inside = sp.Mul(*[f for f in body.args if f.has(var)])
            return _lower(sp.Mul(*out), ctx, rng, params, batched) * _lower(
                sp.Sum(inside, (var, lo, hi)), ctx, rng, params, batched
            )
    return None


def _lower_argmax(e: sp.Expr, ctx: list, rng: dict, params: set[str], batched: bool) -> sp.Expr:
    """The share of the max (min) along an index in scope (a max reduction's derivative)."""
    body, var, _ = e.args
    if var not in ctx:
        raise DerivationError(f"cannot lower {e}: index {var} is not in scope")
    inner = _lower(body, ctx, rng, params, batched)
    axis = sp.Integer(ctx.index(var) + (1 if batched else 0))
    return (ShareMax if isinstance(e, ArgMax) else ShareMin)(inner, axis)


def _lower_mul(e: sp.Mul, ctx: list, rng: dict, params: set[str], batched: bool) -> sp.Expr:
    """A product, masked; ``exp(z - max_u z) / sum_u exp(..)`` as one softmax along u."""
    over = _softmax_over(e, ctx, rng)
    if over is not None:
        inner = _lower(over[0], ctx, rng, params, batched)
        return AxisSoftmax(inner, sp.Integer(ctx.index(over[1]) + (1 if batched else 0)))
    return _masked([_lower(a, ctx, rng, params, batched) for a in e.args])


#: Node type -> its lowering, tried in order (products and other functions after them).
_RULES: tuple[tuple[type | tuple[type, ...], Callable[..., sp.Expr]], ...] = (
    (sp.Indexed, _lower_indexed),
    ((InRange, Divisible, sp.KroneckerDelta), _lower_predicate),
    (sp.Symbol, _lower_symbol),
    ((sp.Sum, ReduceMax, ReduceMin), _lower_reduction),
    ((ArgMax, ArgMin), _lower_argmax),
)


def einsum_spec(
    arg: sp.Expr, axis: int
) -> tuple[str, list[tuple[sp.Expr, list[int]]], list[int]] | None:
    """For ``AxisSum(arg, axis)`` with ``arg`` a product of placed arrays: the einsum
    subscripts, the operands with their output axes, and the output axes kept."""
    factors = sp.Mul.make_args(arg)
    places = [f for f in factors if isinstance(f, Place)]
    if len(places) < 2 or len(places) != len(factors):
        return None
    letters = "abcdefghijklmnopqrstuvwxyz"
    ops = []
    used: list[int] = []
    subs = []
    for p in places:
        name, pos, ndim, mine = p.args
        axes = ([0] if int(mine) else []) + [int(q) for q in pos]
        subs.append("".join(letters[q] for q in axes))
        ops.append((name, axes))
        used.extend(q for q in axes if q not in used)
    keep = sorted(q for q in used if q != axis)
    spec = ",".join(subs) + "->" + "".join(letters[q] for q in keep)
    return spec, ops, keep


def _softmax_over(e: sp.Mul, ctx: list, rng: dict) -> tuple[sp.Expr, sp.Symbol] | None:
    """``(z, u)`` when ``e`` is ``exp(z - max_u z) / sum_u' exp(z[u -> u'] - max_u z)``,
    the softmax of ``z`` along an index ``u`` in scope (found by structure)."""
    num = [f for f in e.args if isinstance(f, sp.exp)]
    den = [f for f in e.args if f.is_Pow and f.exp == -1 and isinstance(f.base, sp.Sum)]
    if len(e.args) != 2 or len(num) != 1 or len(den) != 1 or len(den[0].base.limits) != 1:
        return None
    arg = num[0].args[0]
    shifts = [t for t in sp.Add.make_args(arg) if isinstance(-t, ShiftMax)]
    if len(shifts) != 1:
        return None
    body, over, last = (-shifts[0]).args
    z = arg - shifts[0]
    var, lo, hi = den[0].base.limits[0]
    for u in ctx:
        if (
            z.has(u)
            and body == z.xreplace({u: over})
            and lo == 0
            and hi == last
            and sp.simplify(rng[u] - 1 - last) == 0
            and den[0].base.function == sp.exp(arg.xreplace({u: var}))
        ):
            return z, u
    return None
