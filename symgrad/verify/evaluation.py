"""Numeric evaluation of the derivation itself (no generated code involved).

``eval_component`` evaluates a component-form expression for concrete arrays, with
one array axis per free index; ``eval_matrix`` evaluates a per-sample matrix form.
``run_derivation`` runs the forward equations and every backward step of a
:class:`~symgrad.derivation.Derivation` on one sample. Tests, ``verify --symbolic``
and "check my derivation" use these to compare forms with each other and with
finite differences.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import sympy as sp
from sympy.core.function import Application

from symgrad.calculus.conv_form import (
    TENSOR_OPS,
    ChannelBias,
    ChannelSum,
    Correlate,
    CorrInputGrad,
    CorrWeightGrad,
    Flatten,
    Unflatten,
    WindowMax,
    WindowMaxGrad,
    WindowSum,
    WindowSumGrad,
    dilation_of,
)
from symgrad.calculus.index_arithmetic import Divisible, InRange
from symgrad.calculus.matrix_form import Comp, Mat, MatVec, Once, Outer, SumAll, TMatVec, Vec
from symgrad.errors import DerivationError
from symgrad.ir.ops import OPS
from symgrad.ir.reductions import ArgMax, ArgMin, ReduceMax, ReduceMin
from symgrad.templating import conv_helpers

#: NumPy callables of every registered op (ir/ops.py), for the numeric evaluators.
NUMPY_FUNCS = {op.func: op.numeric for op in OPS.values()}


def _apply(func, args):
    if func in NUMPY_FUNCS:
        return NUMPY_FUNCS[func](*args)
    if func is InRange:  # [lo <= e <= hi]
        return ((args[1] <= args[0]) & (args[0] <= args[2])).astype(float)
    if func is Divisible:  # [s | e]
        with np.errstate(invalid="ignore"):
            return (np.mod(args[0], args[1]) == 0).astype(float)
    if func is sp.Max:
        return np.maximum.reduce(np.broadcast_arrays(*args))
    if func is sp.Min:
        return np.minimum.reduce(np.broadcast_arrays(*args))
    if func is sp.Heaviside:
        h0 = args[1] if len(args) > 1 else 0.5
        return np.heaviside(args[0], h0)
    raise DerivationError(f"no numeric rule for function {func}")


class _Axes:
    """An ndarray with one axis per index symbol."""

    def __init__(self, arr, axes: tuple[sp.Symbol, ...]):
        self.arr = np.asarray(arr, dtype=float)
        self.axes = axes


def _align(items: list[_Axes]) -> tuple[list[np.ndarray], tuple[sp.Symbol, ...]]:
    axes: list[sp.Symbol] = []
    for it in items:
        for a in it.axes:
            if a not in axes:
                axes.append(a)
    out = []
    for it in items:
        perm = [it.axes.index(a) for a in axes if a in it.axes]
        arr = np.transpose(it.arr, perm) if it.axes else it.arr
        shape = [arr.shape[perm.index(it.axes.index(a))] if a in it.axes else 1 for a in axes]
        out.append(np.reshape(arr, shape) if it.axes else it.arr)
    return out, tuple(axes)


def eval_component(
    expr: sp.Expr,
    env: Mapping[str, np.ndarray],
    sizes: Mapping[sp.Symbol, int],
    free: tuple[sp.Symbol, ...] = (),
    ranges: Mapping[sp.Symbol, int] | None = None,
) -> np.ndarray:
    """Evaluate a component expression; the result has one axis per symbol of ``free``."""
    ranges = dict(ranges or {})

    def size(e) -> int:
        return int(sp.sympify(e).xreplace({k: sp.Integer(n) for k, n in sizes.items()}))

    def ev(e) -> _Axes:
        assert ranges is not None  # always a dict here (set above and by _ev_with)
        sub: str | _Axes
        axes: list[sp.Symbol] | tuple[sp.Symbol, ...]
        if e.is_Number:
            return _Axes(float(e), ())
        if isinstance(e, sp.Indexed):
            arr = np.asarray(env[str(e.base.label)], dtype=float)
            ind = e.indices
            if any(not isinstance(t, sp.Symbol) for t in ind):
                return computed_read(arr, ind)
            if len(set(ind)) != len(ind):  # repeated index: a diagonal
                letters = "abcdefgh"
                sub = "".join(letters[list(dict.fromkeys(ind)).index(t)] for t in ind)
                arr = np.einsum(f"{sub}->{''.join(dict.fromkeys(sub))}", arr)
                ind = tuple(dict.fromkeys(ind))
            return _Axes(arr, tuple(ind))
        if isinstance(e, sp.KroneckerDelta):
            a, b = e.args
            if a in ranges and b in ranges:
                return _Axes(np.eye(ranges[a], ranges[b]), (a, b))
            (u, v), axes = _align([ev(a), ev(b)])  # an index expression: [a == b]
            return _Axes(np.equal(u, v).astype(float), axes)
        if type(e).__name__ == "MaxOver":  # max pooling: max of the body over its window
            sub = _ev_with(e.body, {**ranges, **_box(e)})
            keep = tuple(a for a in sub.axes if a not in e.variables)
            over = tuple(sub.axes.index(v) for v in e.variables if v in sub.axes)
            return _Axes(sub.arr.max(axis=over) if over else sub.arr, keep)
        if type(e).__name__ == "ArgMaxIs":  # [offsets = the first arg-max of the window]
            return argmax_is(e)
        if isinstance(e, sp.Symbol):
            if e in ranges:
                return _Axes(np.arange(ranges[e], dtype=float), (e,))
            if e in sizes:
                return _Axes(float(sizes[e]), ())
            if str(e) in env:
                return _Axes(env[str(e)], ())
            raise DerivationError(f"cannot evaluate symbol {e}")
        if isinstance(e, ReduceMax | ReduceMin | ArgMax | ArgMin):
            body, var, hi = e.args
            if isinstance(e, ArgMax | ArgMin):  # evaluated along var, which is in scope
                sub = ev(body)
                if var not in sub.axes:
                    return _Axes(np.ones(()), ())
                ax = sub.axes.index(var)
                ext = sub.arr.max if isinstance(e, ArgMax) else sub.arr.min
                hit = (sub.arr == ext(axis=ax, keepdims=True)).astype(float)
                return _Axes(hit / hit.sum(axis=ax, keepdims=True), sub.axes)
            sub = _ev_with(body, {**ranges, var: size(hi) + 1})
            if var not in sub.axes:
                return sub
            ax = sub.axes.index(var)
            red = sub.arr.max if isinstance(e, ReduceMax) else sub.arr.min
            return _Axes(red(axis=ax), tuple(a for a in sub.axes if a != var))
        if isinstance(e, sp.Sum):
            body = e.function
            inner = dict(ranges)
            for var, lo, hi in e.limits:
                if lo != 0:
                    raise DerivationError(f"sums must start at 0: {e}")
                inner[var] = size(hi) + 1
            sub = _ev_with(body, inner)
            arr, axes = sub.arr, list(sub.axes)
            for var, _, _ in e.limits:
                if var in axes:
                    ax = axes.index(var)
                    arr = arr.sum(axis=ax)
                    axes.pop(ax)
                else:
                    arr = arr * inner[var]
            return _Axes(arr, tuple(axes))
        if e.is_Add or e.is_Mul:
            parts = [ev(a) for a in e.args]
            arrs, axes = _align(parts)
            acc = arrs[0]
            for arr in arrs[1:]:
                acc = acc + arr if e.is_Add else acc * arr
            return _Axes(acc, axes)
        if e.is_Pow:
            (b, x), axes = _align([ev(e.base), ev(e.exp)])
            with np.errstate(divide="ignore", invalid="ignore"):
                return _Axes(np.power(b, x), axes)
        if isinstance(e, Application):  # functions, and Max / Min
            parts = [ev(a) for a in e.args]
            arrs, axes = _align(parts)
            return _Axes(_apply(e.func, arrs), axes)
        raise DerivationError(f"cannot evaluate {e!r}")

    def _box(m) -> dict[sp.Symbol, int]:
        return {lim[0]: size(lim[2]) + 1 for lim in m.limits}

    def computed_read(arr: np.ndarray, ind) -> _Axes:
        """``a[s*h + d*k - p, ...]``: positions computed from the indices; a position
        outside the array (zero padding) or not an integer reads 0."""
        aligned, axes = _align([ev(t) for t in ind])
        parts = list(np.broadcast_arrays(*aligned))
        ok = np.ones(np.shape(parts[0]) if parts else (), dtype=bool)
        pos = []
        for part, n in zip(parts, arr.shape, strict=True):
            rounded = np.rint(part)
            ok &= (rounded == part) & (rounded >= 0) & (rounded < n)
            pos.append(np.where(ok, rounded, 0).astype(int))
        pos = [np.where(ok, q, 0) for q in pos]
        return _Axes(np.where(ok, arr[tuple(pos)], 0.0), axes)

    def argmax_is(e) -> _Axes:
        m, offs = e.args[0], e.args[1:]
        box = _box(m)
        sub = _ev_with(m.body, {**(ranges or {}), **box})
        arr, axes = sub.arr, list(sub.axes)
        for v in m.variables:  # a window axis the body does not use: size it
            if v not in axes:
                arr = np.repeat(arr[..., None], box[v], axis=-1)
                axes.append(v)
        order = [a for a in axes if a not in m.variables] + list(m.variables)
        arr = np.transpose(arr, [axes.index(a) for a in order])
        lead = arr.shape[: len(order) - len(m.variables)]
        first = np.argmax(arr.reshape(*lead, -1), axis=-1)  # row-major: the first maximum
        flat = np.zeros((), dtype=float)
        stride = 1
        parts, off_axes = _align([ev(o) for o in offs])
        for o, v in zip(reversed(parts), reversed(m.variables), strict=True):
            flat = flat + o * stride
            stride *= box[v]
        win = tuple(order[: len(lead)])
        (f, g), both = _align([_Axes(first, win), _Axes(flat, off_axes)])
        return _Axes(np.equal(f, g).astype(float), both)

    def _ev_with(e, rng) -> _Axes:
        nonlocal ranges
        saved = ranges
        ranges = rng
        try:
            return ev(e)
        finally:
            ranges = saved

    res = ev(expr)
    arrs, axes = _align([res, *[_Axes(np.zeros(ranges[f]), (f,)) for f in free]])
    out = np.broadcast_to(arrs[0], np.broadcast_shapes(*[a.shape for a in arrs]))
    order = [axes.index(f) for f in free]
    extra = [i for i, a in enumerate(axes) if a not in free]
    if extra:
        raise DerivationError(f"free indices {[axes[i] for i in extra]} not listed in {free}")
    return np.array(np.transpose(out, order) if order else out, dtype=float)


def eval_matrix(expr: sp.Expr, env: Mapping[str, np.ndarray], sizes: Mapping) -> np.ndarray:
    """Evaluate a per-sample matrix form (Vec, Mat, MatVec, TMatVec, Outer, SumAll)."""

    def ev(e):
        if e.is_Number:
            return float(e)
        if isinstance(e, Vec | Mat):
            return np.asarray(env[e.name], dtype=float)
        if isinstance(e, sp.Symbol):
            return float(sizes[e]) if e in sizes else np.asarray(env[e.name], dtype=float)
        if isinstance(e, Comp):  # no neat matrix form: evaluated in components
            expr, free, shape, _ = e.args
            rng = {
                f: int(sp.sympify(w).xreplace({k: sp.Integer(v) for k, v in sizes.items()}))
                for f, w in zip(free, shape, strict=True)
            }
            return eval_component(expr, env, sizes, tuple(free), rng)
        if isinstance(e, Once):  # a penalty's part of a gradient (per sample: as it is)
            return ev(e.args[0])
        if isinstance(e, TENSOR_OPS):
            return tensor_op(e)
        if isinstance(e, MatVec):
            return ev(e.args[0]) @ ev(e.args[1])
        if isinstance(e, TMatVec):
            return ev(e.args[0]).T @ ev(e.args[1])
        if isinstance(e, Outer):
            return np.outer(ev(e.args[0]), ev(e.args[1]))
        if isinstance(e, SumAll):
            return np.sum(ev(e.args[0]))
        if e.is_Add:
            return sum(ev(a) for a in e.args)
        if e.is_Mul:
            out = 1.0
            for a in e.args:
                out = out * ev(a)
            return out
        if e.is_Pow:
            return np.power(ev(e.base), ev(e.exp))
        if isinstance(e, Application):  # functions, and Max / Min
            return _apply(e.func, [ev(a) for a in e.args])
        raise DerivationError(f"cannot evaluate {e!r}")

    def ints(t) -> tuple[int, ...]:
        return tuple(int(v) for v in t)

    def windows(w) -> np.ndarray:
        a, k, st, p, fill = w.args[:5]
        h = conv_helpers()
        fv = -np.inf if int(fill) == 1 else 0.0
        return h["_windows"](
            ev(a)[None], ints(k), ints(st), ints(p), fv, dilation=dilation_of(w, 5, len(k))
        )

    def tensor_op(e) -> np.ndarray:
        """A conv net's array operation on one sample: the generated code's helper, on a
        batch of one."""
        h = conv_helpers()
        if isinstance(e, Correlate):
            return h["_correlate"](windows(e.args[0]), ev(e.args[1]))[0]
        if isinstance(e, CorrWeightGrad):
            return h["_correlate_weight_grad"](ev(e.args[0])[None], windows(e.args[1]))
        if isinstance(e, CorrInputGrad):
            g, W, st, p, size = e.args[:5]
            d = dilation_of(e, 5, len(st))
            return h["_correlate_input_grad"](
                ev(g)[None], ev(W), ints(st), ints(p), ints(size), dilation=d
            )[0]
        if isinstance(e, ChannelBias):
            return ev(e.args[0]).reshape(-1, *[1] * int(e.args[1]))
        if isinstance(e, ChannelSum):
            return ev(e.args[0]).sum(axis=tuple(range(1, 1 + int(e.args[1]))))
        if isinstance(e, Flatten):
            return ev(e.args[0]).reshape(-1)
        if isinstance(e, Unflatten):
            return ev(e.args[0]).reshape(ints(e.args[1]))
        if isinstance(e, WindowSum | WindowMax):
            a, k, st, p = e.args
            fn = h["_sum_pool"] if isinstance(e, WindowSum) else h["_max_pool"]
            return fn(ev(a)[None], ints(k), ints(st), ints(p))[0]
        if isinstance(e, WindowSumGrad):
            g, k, st, p, size = e.args
            return h["_sum_pool_grad"](ev(g)[None], ints(k), ints(st), ints(p), ints(size))[0]
        if isinstance(e, WindowMaxGrad):
            g, a, k, st, p, size, top = e.args
            return h["_max_pool_grad"](
                ev(g)[None], ev(a)[None], ev(top)[None], ints(k), ints(st), ints(p), ints(size)
            )[0]
        raise DerivationError(f"cannot evaluate {e!r}")

    return np.asarray(ev(expr), dtype=float)


def run_derivation(
    d, params: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray, *, form="component"
):
    """Forward and backward pass of one sample, evaluated from the derivation's expressions.

    Returns ``(loss, env)`` where ``env`` holds every forward value and every gradient
    (per-sample, un-averaged: the loss of one sample).
    """
    net = d.network
    sizes = dict(net.sizes)
    env: dict[str, np.ndarray] = {**{k: np.asarray(v, float) for k, v in params.items()}}
    x = np.asarray(x, float)
    shape = tuple(getattr(net, "input_shape", ()) or ())
    env[str(net.input)] = x.reshape(shape) if shape else x  # (channels, [height,] width)
    env[str(net.loss.target)] = np.asarray(y, float)
    for f in d.forward:
        s = f.stage
        if form == "matrix":
            env[s.name] = eval_matrix(f.matrix, env, sizes)
        elif s.indices:  # a (channels, [height,] width) quantity: one index per axis
            rng = {ix: int(n) for ix, n in zip(s.indices, s.shape, strict=True)}
            env[s.name] = eval_component(f.component, env, sizes, tuple(s.indices), rng)
        else:
            env[s.name] = eval_component(
                f.component, env, sizes, (s.index,), {s.index: net.size(s.width)}
            )
    loss = float(eval_component(d.loss, env, sizes))
    if net.penalty is not None:  # added once to the batch loss: once to one sample's too
        loss += float(eval_component(net.penalty, env, sizes))
    for st in d.steps:
        if form == "matrix":
            val = eval_matrix(st.matrix, env, sizes)
            shape = tuple(net.size(w) for w in st.shape)
            val = np.broadcast_to(val, shape).copy()
        else:
            rng = {ix: net.size(w) for ix, w in zip(st.indices, st.shape, strict=True)}
            val = eval_component(st.component, env, sizes, st.indices, rng)
        env[st.grad] = val  # inlined loss gradients and dx too (for display and checks)
    return loss, env
