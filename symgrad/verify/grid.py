"""One evaluator of component-form expressions over the index grid, for any array library.

A component expression (``Indexed`` entries, ``Sum`` and ``max``/``min`` reductions,
Kronecker deltas, registered ops) is evaluated as arrays with one named axis per index
symbol: products broadcast, sums reduce their axis. The array library is a parameter
(:class:`ArrayOps`): NumPy evaluates the derivation itself (``verify/evaluation.py``,
``check``), torch and JAX evaluate a network's maps and custom losses inside the
independent autograd references (``verify/reference.py``) so that the library's autograd
differentiates them. The evaluators differ only in the array library, so there is one.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import sympy as sp
from sympy.core.function import Application

from symgrad.calculus.index_arithmetic import Divisible, InRange
from symgrad.errors import DerivationError
from symgrad.ir.conv import ArgMaxIs, MaxOver
from symgrad.ir.ops import OPS
from symgrad.ir.reductions import ArgMax, ArgMin, ReduceMax, ReduceMin

#: The sample axis of arrays that carry a batch (``batched`` in :func:`evaluate`).
SAMPLE_AXIS = sp.Symbol("_n_batch_")


class ArrayOps:
    """The array operations the grid evaluator needs, for one library."""

    name = ""
    #: SymPy function class -> the library's callable (every registered op at least).
    funcs: dict = {}

    def const(self, v: float) -> Any:
        raise NotImplementedError

    def transpose(self, t: Any, perm: Sequence[int]) -> Any:
        raise NotImplementedError

    def reshape(self, t: Any, shape: Sequence[int]) -> Any:
        raise NotImplementedError

    def sum(self, t: Any, axis: int) -> Any:
        raise NotImplementedError

    def eye(self, n: int, m: int) -> Any:
        raise NotImplementedError

    def arange(self, n: int) -> Any:
        raise NotImplementedError

    def einsum(self, spec: str, t: Any) -> Any:
        raise NotImplementedError

    def broadcast_to(self, t: Any, shape: Sequence[int]) -> Any:
        raise NotImplementedError

    def maximum(self, a: Any, b: Any) -> Any:
        raise NotImplementedError

    def minimum(self, a: Any, b: Any) -> Any:
        raise NotImplementedError

    def amax(self, t: Any, axis: int) -> Any:
        raise NotImplementedError

    def amin(self, t: Any, axis: int) -> Any:
        raise NotImplementedError

    def power(self, b: Any, p: Any) -> Any:
        return b**p

    def equal(self, a: Any, b: Any) -> Any:
        """1 where ``a == b``, else 0 (an indicator ``[a = b]``)."""
        return (a == b) * self.const(1.0)

    def gather(self, arr: Any, positions: Sequence[Any]) -> Any:
        """``arr[p0, p1, ...]`` at computed positions (index arithmetic such as
        ``x[c, s*h + k - p]``); positions outside the array or not integers read 0."""
        raise NotImplementedError(f"the {self.name} evaluator has no computed subscripts")

    def gather_batched(self, arr: Any, positions: Sequence[Any]) -> Any:
        """``arr[:, p0, p1, ...]``: :meth:`gather` in every sample (a leading sample axis)."""
        moved = self.transpose(arr, [*range(1, len(arr.shape)), 0])
        out = self.gather(moved, positions)  # (*positions' shape, n)
        nd = len(out.shape)
        return self.transpose(out, [nd - 1, *range(nd - 1)])

    def argmask(self, t: Any, axis: int, largest: bool) -> Any:
        """Where ``t`` attains its max (min) along ``axis``, ties sharing 1 equally: the
        derivative of a max reduction (``ArgMax``)."""
        keep = [1 if k == axis else d for k, d in enumerate(t.shape)]
        ext = self.reshape((self.amax if largest else self.amin)(t, axis), keep)
        hit = (t == ext) * self.const(1.0)
        return hit / self.reshape(self.sum(hit, axis), keep)


class NumpyOps(ArrayOps):
    """NumPy, in float64: the derivation's own evaluator."""

    name = "numpy"

    def __init__(self) -> None:
        self.funcs = {op.func: op.numeric for op in OPS.values()}
        self.funcs[sp.Heaviside] = lambda x, h0=0.5: np.heaviside(x, h0)
        self.funcs[InRange] = lambda e, lo, hi: ((lo <= e) & (e <= hi)).astype(float)
        self.funcs[Divisible] = _divisible

    def const(self, v):
        return np.asarray(float(v))

    def transpose(self, t, perm):
        return np.transpose(t, perm) if perm else t

    def reshape(self, t, shape):
        return np.reshape(t, tuple(shape))

    def sum(self, t, axis):
        return np.sum(t, axis=axis)

    def eye(self, n, m):
        return np.eye(n, m)

    def arange(self, n):
        return np.arange(n, dtype=float)

    def einsum(self, spec, t):
        return np.einsum(spec, t)

    def broadcast_to(self, t, shape):
        return np.broadcast_to(t, tuple(shape))

    def maximum(self, a, b):
        return np.maximum(a, b)

    def minimum(self, a, b):
        return np.minimum(a, b)

    def amax(self, t, axis):
        return np.max(t, axis=axis)

    def amin(self, t, axis):
        return np.min(t, axis=axis)

    def power(self, b, p):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.power(b, p)

    def equal(self, a, b):
        return np.equal(a, b).astype(float)

    def gather(self, arr, positions):
        parts = list(np.broadcast_arrays(*positions))
        ok = np.ones(np.shape(parts[0]) if parts else (), dtype=bool)
        pos = []
        for part, n in zip(parts, arr.shape, strict=True):
            rounded = np.rint(part)
            ok &= (rounded == part) & (rounded >= 0) & (rounded < n)
            pos.append(np.where(ok, rounded, 0).astype(int))
        pos = [np.where(ok, q, 0) for q in pos]
        out = arr[tuple(pos)]
        return np.where(ok.reshape(ok.shape + (1,) * (out.ndim - ok.ndim)), out, 0.0)

    def argmask(self, t, axis, largest):
        ext = t.max if largest else t.min
        hit = (t == ext(axis=axis, keepdims=True)).astype(float)
        return hit / hit.sum(axis=axis, keepdims=True)


def _divisible(e: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``[s | e]``: 1 where ``e`` is a multiple of ``s``."""
    with np.errstate(invalid="ignore"):
        return (np.mod(e, s) == 0).astype(float)


NUMPY = NumpyOps()


class _Named:
    """An array with one named axis per index symbol (:data:`SAMPLE_AXIS` is the sample axis)."""

    __slots__ = ("axes", "t")

    def __init__(self, t: Any, axes: tuple[sp.Symbol, ...]):
        self.t = t
        self.axes = axes


def _align(ops: ArrayOps, items: Sequence[_Named]) -> tuple[list[Any], tuple[sp.Symbol, ...]]:
    """The arrays transposed and reshaped to broadcast over the union of their axes."""
    axes: list[sp.Symbol] = []
    for it in items:
        for a in it.axes:
            if a not in axes:
                axes.append(a)
    out = []
    for it in items:
        if not it.axes:
            out.append(it.t)
            continue
        present = [a for a in axes if a in it.axes]
        t = ops.transpose(it.t, [it.axes.index(a) for a in present])
        shape = [t.shape[present.index(a)] if a in it.axes else 1 for a in axes]
        out.append(ops.reshape(t, shape))
    return out, tuple(axes)


def evaluate(
    ops: ArrayOps,
    expr: sp.Expr,
    env: Mapping[str, Any],
    sizes: Mapping[sp.Symbol, int],
    free: tuple[sp.Symbol, ...] = (),
    ranges: Mapping[sp.Symbol, int] | None = None,
    *,
    batched: frozenset[str] | set[str] = frozenset(),
    n: int | None = None,
    error: type[Exception] = DerivationError,
) -> Any:
    """Evaluate a component expression with ``ops`` over the index grid.

    Args:
        env: arrays by name (parameters, forward values, adjoints, ``x``, ``y``).
        sizes: concrete values of the symbolic widths.
        free: the free indices of ``expr``; the result has one axis per index, in order.
        ranges: the extent of each free (or otherwise bound) index.
        batched: names of arrays that carry a leading sample axis; with ``n`` given the
            result has shape ``(n, *free extents)``.
        error: the exception raised for what cannot be evaluated (its message names it).
    """
    rng0 = dict(ranges or {})
    res = _Grid(ops, env, sizes, batched, error).ev(expr, rng0)
    want = (SAMPLE_AXIS, *free) if n is not None else tuple(free)
    extra = [a for a in res.axes if a not in want]
    if extra:
        raise error(f"free indices {extra} not listed in {free} (in {expr})")
    t = res.t
    if res.axes:
        present = [a for a in want if a in res.axes]
        t = ops.transpose(t, [res.axes.index(a) for a in present])
        t = ops.reshape(t, [t.shape[present.index(a)] if a in res.axes else 1 for a in want])
    lead = [n] if n is not None else []
    return ops.broadcast_to(t, [*lead, *(rng0[f] for f in free)])


#: The scope of an evaluation: the extent of every index bound at that point.
Ranges = dict[sp.Symbol, int]


class _Grid:
    """One evaluation: the node kinds of a component expression, one method each
    (:data:`_RULES` picks the method by node type, in order; sums, products, powers and
    functions come after the special nodes they are the base classes of)."""

    def __init__(
        self,
        ops: ArrayOps,
        env: Mapping[str, Any],
        sizes: Mapping[sp.Symbol, int],
        batched: frozenset[str] | set[str],
        error: type[Exception],
    ) -> None:
        self.ops, self.env, self.sizes = ops, env, sizes
        self.batched, self.error = batched, error

    def size(self, e: sp.Basic) -> int:
        return int(sp.sympify(e).xreplace({s: sp.Integer(v) for s, v in self.sizes.items()}))

    def box(self, m: sp.Basic) -> Ranges:
        """The extents of a windowed reduction's variables."""
        return {lim[0]: self.size(lim[2]) + 1 for lim in m.limits}

    def ev(self, e: sp.Expr, rng: Ranges) -> _Named:
        if e.is_Number:
            return _Named(self.ops.const(float(e)), ())
        for types, rule in _RULES:
            if isinstance(e, types):
                return rule(self, e, rng)
        if e.is_Add or e.is_Mul:
            return self.arithmetic(e, rng)
        if e.is_Pow:
            return self.power(e, rng)
        if isinstance(e, Application):  # functions, and Max / Min
            return self.function(e, rng)
        raise self.error(f"the {self.ops.name} evaluator cannot evaluate {e!r}")

    # -- arrays and indices ------------------------------------------------------------
    def indexed(self, e: sp.Indexed, rng: Ranges) -> _Named:
        name = str(e.base.label)
        ind = tuple(e.indices)
        if name not in self.env:
            raise self.error(f"cannot evaluate {e}: no value for {name}")
        t = self.env[name]
        lead = (SAMPLE_AXIS,) if name in self.batched else ()
        partial = any(  # part of an axis (a[i] for i < h of 2h), or past its end
            isinstance(s, sp.Symbol) and s in rng and t.shape[k + len(lead)] != rng[s]
            for k, s in enumerate(ind)
        )
        if partial or any(not isinstance(s, sp.Symbol) for s in ind):  # a[s*h + k - p]
            return self.gathered(e, t, lead, rng)
        if len(set(ind)) != len(ind):  # a repeated index: the diagonal
            letters = "bcdefgh"
            uniq = list(dict.fromkeys(ind))
            pattern = "".join(letters[uniq.index(s)] for s in ind)
            spec = ("a" if lead else "") + pattern
            t = self.ops.einsum(f"{spec}->{''.join(dict.fromkeys(spec))}", t)
            ind = tuple(uniq)
        return _Named(t, lead + ind)

    def gathered(self, e: sp.Indexed, t: Any, lead: tuple[sp.Symbol, ...], rng: Ranges) -> _Named:
        """An array read at computed positions (index arithmetic, part of an axis)."""
        positions, axes = _align(self.ops, [self.ev(s, rng) for s in e.indices])
        try:
            if lead:  # the same positions in every sample
                return _Named(self.ops.gather_batched(t, positions), lead + axes)
            return _Named(self.ops.gather(t, positions), axes)
        except NotImplementedError as exc:
            raise self.error(f"cannot evaluate {e}: {exc}") from exc

    def delta(self, e: sp.KroneckerDelta, rng: Ranges) -> _Named:
        a, b = e.args
        if a in rng and b in rng:
            return _Named(self.ops.eye(rng[a], rng[b]), (a, b))
        (u, v), axes = _align(self.ops, [self.ev(a, rng), self.ev(b, rng)])  # index exprs
        return _Named(self.ops.equal(u, v), axes)

    def symbol(self, e: sp.Symbol, rng: Ranges) -> _Named:
        if e in rng:
            return _Named(self.ops.arange(rng[e]), (e,))
        if e in self.sizes:
            return _Named(self.ops.const(self.sizes[e]), ())
        if str(e) in self.env:
            lead = (SAMPLE_AXIS,) if str(e) in self.batched else ()
            return _Named(self.env[str(e)], lead)
        raise self.error(f"cannot evaluate symbol {e}")

    # -- reductions --------------------------------------------------------------------
    def max_over(self, e: MaxOver, rng: Ranges) -> _Named:
        """Max pooling: the max of the body over its window."""
        sub = self.ev(e.body, {**rng, **self.box(e)})
        t, left = sub.t, list(sub.axes)
        for v in e.variables:
            if v in left:
                t = self.ops.amax(t, left.index(v))
                left.remove(v)
        return _Named(t, tuple(left))

    def argmax_is(self, e: ArgMaxIs, rng: Ranges) -> _Named:
        """``[offsets == the window's first arg-max]`` (max pooling's derivative, ties to
        the first maximum in row-major order as PyTorch), in NumPy."""
        if not isinstance(self.ops, NumpyOps):
            raise self.error(f"the {self.ops.name} evaluator cannot evaluate {e!r}")
        m, offs = e.args[0], e.args[1:]
        window = self.box(m)
        sub = self.ev(m.body, {**rng, **window})
        arr, axes = np.asarray(sub.t, dtype=float), list(sub.axes)
        for v in m.variables:  # a window axis the body does not use: size it
            if v not in axes:
                arr = np.repeat(arr[..., None], window[v], axis=-1)
                axes.append(v)
        order = [a for a in axes if a not in m.variables] + list(m.variables)
        arr = np.transpose(arr, [axes.index(a) for a in order])
        lead = arr.shape[: len(order) - len(m.variables)]
        first = np.argmax(arr.reshape(*lead, -1), axis=-1)  # row-major: the first maximum
        flat: Any = np.zeros((), dtype=float)
        stride = 1
        parts, off_axes = _align(self.ops, [self.ev(o, rng) for o in offs])
        for o, v in zip(reversed(parts), reversed(m.variables), strict=True):
            flat = flat + o * stride
            stride *= window[v]
        win = tuple(order[: len(lead)])
        (f, g), both = _align(self.ops, [_Named(first, win), _Named(flat, off_axes)])
        return _Named(np.equal(f, g).astype(float), both)

    def argmax(self, e: ArgMax | ArgMin, rng: Ranges) -> _Named:
        """Evaluated along its variable, which is in scope."""
        body, var, _ = e.args
        sub = self.ev(body, rng)
        if var not in sub.axes:
            return _Named(self.ops.const(1.0), ())
        ax = sub.axes.index(var)
        return _Named(self.ops.argmask(sub.t, ax, isinstance(e, ArgMax)), sub.axes)

    def reduce(self, e: ReduceMax | ReduceMin, rng: Ranges) -> _Named:
        body, var, hi = e.args
        sub = self.ev(body, {**rng, var: self.size(hi) + 1})
        if var not in sub.axes:
            return sub
        ax = sub.axes.index(var)
        reduce = self.ops.amax if isinstance(e, ReduceMax) else self.ops.amin
        return _Named(reduce(sub.t, ax), tuple(a for a in sub.axes if a != var))

    def sum(self, e: sp.Sum, rng: Ranges) -> _Named:
        inner = dict(rng)
        for var, lo, hi in e.limits:
            if lo != 0:
                raise self.error(f"sums must start at 0: {e}")
            inner[var] = self.size(hi) + 1
        sub = self.ev(e.function, inner)
        t, left = sub.t, list(sub.axes)
        for var, _, _ in e.limits:
            if var in left:
                ax = left.index(var)
                t = self.ops.sum(t, ax)
                left.pop(ax)
            else:
                t = t * float(inner[var])
        return _Named(t, tuple(left))

    # -- arithmetic and functions ------------------------------------------------------
    def arithmetic(self, e: sp.Expr, rng: Ranges) -> _Named:
        ts, axes = _align(self.ops, [self.ev(a, rng) for a in e.args])
        acc = ts[0]
        for t in ts[1:]:
            acc = acc + t if e.is_Add else acc * t
        return _Named(acc, axes)

    def power(self, e: sp.Pow, rng: Ranges) -> _Named:
        base = self.ev(e.base, rng)
        if e.exp.is_Integer:
            return _Named(self.ops.power(base.t, int(e.exp)), base.axes)
        if e.exp.is_Number:
            return _Named(self.ops.power(base.t, float(e.exp)), base.axes)
        (b, p), axes = _align(self.ops, [base, self.ev(e.exp, rng)])
        return _Named(self.ops.power(b, p), axes)

    def function(self, e: Application, rng: Ranges) -> _Named:
        ops = self.ops
        ts, axes = _align(ops, [self.ev(a, rng) for a in e.args])
        if e.func in ops.funcs:
            f = ops.funcs[e.func]
            if len(ts) > 2 and isinstance(e, sp.Max | sp.Min):  # binary in array libraries
                return _Named(functools.reduce(f, ts), axes)
            return _Named(f(*ts), axes)
        if e.func in (sp.Max, sp.Min):
            pick = ops.maximum if e.func is sp.Max else ops.minimum
            acc = ts[0]
            for t in ts[1:]:
                acc = pick(acc, t)
            return _Named(acc, axes)
        raise self.error(f"the {ops.name} evaluator has no rule for function {e.func}")


#: Node type -> the evaluator's method, tried in order before the generic nodes.
_RULES: tuple[tuple[type | tuple[type, ...], Any], ...] = (
    (sp.Indexed, _Grid.indexed),
    (sp.KroneckerDelta, _Grid.delta),
    (MaxOver, _Grid.max_over),
    (ArgMaxIs, _Grid.argmax_is),
    (sp.Symbol, _Grid.symbol),
    ((ArgMax, ArgMin), _Grid.argmax),
    ((ReduceMax, ReduceMin), _Grid.reduce),
    (sp.Sum, _Grid.sum),
)


__all__ = ["SAMPLE_AXIS", "NUMPY", "ArrayOps", "NumpyOps", "evaluate"]
