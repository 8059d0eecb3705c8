"""Numeric evaluation of the derivation itself (no generated code involved).

``eval_component`` evaluates a component-form expression for concrete arrays, with
one array axis per free index (``grid.py``'s evaluator, on NumPy); ``eval_matrix``
evaluates a per-sample matrix form.
``run_derivation`` runs the forward equations and every backward step of a
:class:`~symgrad.derivation.Derivation` on one sample. Tests, ``verify --symbolic``
and "check my derivation" use these to compare forms with each other and with
finite differences.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
)
from symgrad.calculus.matrix_form import Comp, Mat, MatVec, Once, Outer, SumAll, TMatVec, Vec
from symgrad.calculus.program import LOSS, Program
from symgrad.derivations import equations
from symgrad.errors import DerivationError
from symgrad.ir.conv import dilation_of
from symgrad.ir.indices import BATCH
from symgrad.templating import conv_helpers
from symgrad.verify.grid import NUMPY, evaluate


def _apply(func, args):
    if func in NUMPY.funcs:
        return NUMPY.funcs[func](*args)
    if func is sp.Max:
        return np.maximum.reduce(np.broadcast_arrays(*args))
    if func is sp.Min:
        return np.minimum.reduce(np.broadcast_arrays(*args))
    raise DerivationError(f"no numeric rule for function {func}")


def eval_component(
    expr: sp.Expr,
    env: Mapping[str, np.ndarray],
    sizes: Mapping[sp.Symbol, int],
    free: tuple[sp.Symbol, ...] = (),
    ranges: Mapping[sp.Symbol, int] | None = None,
) -> np.ndarray:
    """Evaluate a component expression in float64 (the grid evaluator of ``grid.py`` on
    NumPy); the result has one axis per symbol of ``free``."""
    arrays = {k: np.asarray(v, dtype=float) for k, v in env.items()}
    return np.array(evaluate(NUMPY, expr, arrays, sizes, free, ranges), dtype=float)


def eval_matrix(expr: sp.Expr, env: Mapping[str, np.ndarray], sizes: Mapping) -> np.ndarray:
    """Evaluate a per-sample matrix form (Vec, Mat, MatVec, TMatVec, Outer, SumAll)."""
    return np.asarray(_MatrixEval(env, sizes).ev(expr), dtype=float)


def _ints(t: sp.Basic) -> tuple[int, ...]:
    return tuple(int(v) for v in t)


class _MatrixEval:
    """One evaluation of a per-sample matrix form: the vector-algebra nodes in
    :meth:`ev`, a conv net's array operations (``TENSOR_OPS``) through the generated code's
    helpers, on a batch of one, one method per node type (:data:`_TENSOR_RULES`)."""

    def __init__(self, env: Mapping[str, np.ndarray], sizes: Mapping) -> None:
        self.env, self.sizes = env, sizes

    def ev(self, e: sp.Expr):
        if e.is_Number:
            return float(e)
        if isinstance(e, Vec | Mat):
            return np.asarray(self.env[e.name], dtype=float)
        if isinstance(e, sp.Symbol):
            if e in self.sizes:
                return float(self.sizes[e])
            return np.asarray(self.env[e.name], dtype=float)
        if isinstance(e, Comp):  # no neat matrix form: evaluated in components
            return self.component(e)
        if isinstance(e, Once):  # a penalty's part of a gradient (per sample: as it is)
            return self.ev(e.args[0])
        if isinstance(e, TENSOR_OPS):
            return self.tensor_op(e)
        if isinstance(e, MatVec | TMatVec | Outer | SumAll):
            return self.product(e)
        if e.is_Add:
            return sum(self.ev(a) for a in e.args)
        if e.is_Mul:
            out = 1.0
            for a in e.args:
                out = out * self.ev(a)
            return out
        if e.is_Pow:
            return np.power(self.ev(e.base), self.ev(e.exp))
        if isinstance(e, Application):  # functions, and Max / Min
            return _apply(e.func, [self.ev(a) for a in e.args])
        raise DerivationError(f"cannot evaluate {e!r}")

    def component(self, e: Comp) -> np.ndarray:
        expr, free, shape, _ = e.args
        values = {k: sp.Integer(v) for k, v in self.sizes.items()}
        rng = {f: int(sp.sympify(w).xreplace(values)) for f, w in zip(free, shape, strict=True)}
        return eval_component(expr, self.env, self.sizes, tuple(free), rng)

    def product(self, e: sp.Expr):
        """The vector-algebra products: ``W v``, ``W^T v``, ``u v^T`` and the sum of all."""
        if isinstance(e, MatVec):
            return self.ev(e.args[0]) @ self.ev(e.args[1])
        if isinstance(e, TMatVec):
            return self.ev(e.args[0]).T @ self.ev(e.args[1])
        if isinstance(e, Outer):
            return np.outer(self.ev(e.args[0]), self.ev(e.args[1]))
        return np.sum(self.ev(e.args[0]))

    def windows(self, w: sp.Basic) -> np.ndarray:
        a, k, st, p, fill = w.args[:5]
        fv = -np.inf if int(fill) == 1 else 0.0
        return conv_helpers()["_windows"](
            self.ev(a)[None],
            _ints(k),
            _ints(st),
            _ints(p),
            fv,
            dilation=dilation_of(w, 5, len(k)),
        )

    def tensor_op(self, e: sp.Basic) -> np.ndarray:
        """A conv net's array operation on one sample: the generated code's helper, on a
        batch of one."""
        for types, rule in _TENSOR_RULES:
            if isinstance(e, types):
                return rule(self, e, conv_helpers())
        raise DerivationError(f"cannot evaluate {e!r}")

    def correlate(self, e: Correlate, h: dict) -> np.ndarray:
        return h["_correlate"](self.windows(e.args[0]), self.ev(e.args[1]))[0]

    def correlate_weight_grad(self, e: CorrWeightGrad, h: dict) -> np.ndarray:
        return h["_correlate_weight_grad"](self.ev(e.args[0])[None], self.windows(e.args[1]))

    def correlate_input_grad(self, e: CorrInputGrad, h: dict) -> np.ndarray:
        g, W, st, p, size = e.args[:5]
        d = dilation_of(e, 5, len(st))
        return h["_correlate_input_grad"](
            self.ev(g)[None], self.ev(W), _ints(st), _ints(p), _ints(size), dilation=d
        )[0]

    def reshaped(self, e: sp.Basic, h: dict) -> np.ndarray:
        """Per-channel broadcasts and sums, flatten and its inverse."""
        v = self.ev(e.args[0])
        if isinstance(e, ChannelBias):
            return v.reshape(-1, *[1] * int(e.args[1]))
        if isinstance(e, ChannelSum):
            return v.sum(axis=tuple(range(1, 1 + int(e.args[1]))))
        if isinstance(e, Flatten):
            return v.reshape(-1)
        return v.reshape(_ints(e.args[1]))

    def pool(self, e: WindowSum | WindowMax, h: dict) -> np.ndarray:
        a, k, st, p = e.args
        fn = h["_sum_pool"] if isinstance(e, WindowSum) else h["_max_pool"]
        return fn(self.ev(a)[None], _ints(k), _ints(st), _ints(p))[0]

    def sum_pool_grad(self, e: WindowSumGrad, h: dict) -> np.ndarray:
        g, k, st, p, size = e.args
        return h["_sum_pool_grad"](self.ev(g)[None], _ints(k), _ints(st), _ints(p), _ints(size))[0]

    def max_pool_grad(self, e: WindowMaxGrad, h: dict) -> np.ndarray:
        g, a, k, st, p, size, top = e.args
        ev = self.ev
        return h["_max_pool_grad"](
            ev(g)[None], ev(a)[None], ev(top)[None], _ints(k), _ints(st), _ints(p), _ints(size)
        )[0]


#: A conv net's array operation -> the evaluator's method.
_TENSOR_RULES: tuple[tuple[type | tuple[type, ...], Any], ...] = (
    (Correlate, _MatrixEval.correlate),
    (CorrWeightGrad, _MatrixEval.correlate_weight_grad),
    (CorrInputGrad, _MatrixEval.correlate_input_grad),
    ((ChannelBias, ChannelSum, Flatten, Unflatten), _MatrixEval.reshaped),
    ((WindowSum, WindowMax), _MatrixEval.pool),
    (WindowSumGrad, _MatrixEval.sum_pool_grad),
    (WindowMaxGrad, _MatrixEval.max_pool_grad),
)


def run_program(
    prog: Program,
    env: Mapping[str, np.ndarray],
    sizes: Mapping[sp.Symbol, int],
    *,
    form: str = "component",
) -> dict[str, np.ndarray]:
    """Evaluate every equation of ``prog`` in order, for one sample.

    ``env`` holds the parameters (and, for a tangent program, their directions
    ``R<param>``), the input and the target. Returns ``env`` extended by every target.
    ``form="matrix"`` evaluates the per-sample matrix forms where equations have one.
    """
    out: dict[str, np.ndarray] = {k: np.asarray(v, dtype=float) for k, v in env.items()}

    def size(e: sp.Expr) -> int:
        return int(sp.sympify(e).xreplace({k: sp.Integer(v) for k, v in sizes.items()}))

    for eq in prog:
        shape = tuple(size(w) for w in eq.shape)
        if form == "matrix" and eq.matrix is not None:
            val = np.broadcast_to(eval_matrix(eq.matrix, out, sizes), shape).copy()
        else:
            rng = dict(zip(eq.indices, shape, strict=True))
            val = eval_component(eq.body, out, sizes, eq.indices, rng)
        out[eq.target] = val
    return out


def run_program_batch(
    prog: Program,
    env: Mapping[str, np.ndarray],
    sizes: Mapping[sp.Symbol, int],
    n: int,
) -> tuple[dict[str, np.ndarray], set[str]]:
    """Evaluate ``prog`` on a batch of ``n`` samples, for networks with a stage that couples
    the samples (batch norm): ``env`` holds the parameters and the batch's ``x`` and ``y``
    (one row per sample).

    A per-sample equation is evaluated for every sample at once (a leading sample axis);
    an equation that reads across the batch is evaluated as written, its sample index
    running over the rows. Returns the values and the names that carry a sample axis.
    Adjoints are those of the per-sample losses (the batch gradient is their mean).
    """
    out: dict[str, np.ndarray] = {k: np.asarray(v, dtype=float) for k, v in env.items()}
    batched = {name for name in out if name not in prog.params}
    allsizes = {**sizes, BATCH: n}

    def size(e: sp.Expr) -> int:
        return int(sp.sympify(e).xreplace({k: sp.Integer(v) for k, v in allsizes.items()}))

    for eq in prog:
        shape = tuple(size(w) for w in eq.shape)
        rng = dict(zip(eq.indices, shape, strict=True))
        if eq.sample is None:
            val = evaluate(NUMPY, eq.body, out, allsizes, eq.indices, rng, batched=batched, n=n)
            batched.add(eq.target)
        else:  # it subscripts every batch array with a sample index itself
            val = evaluate(NUMPY, eq.body, out, allsizes, eq.indices, rng)
            if eq.sample in eq.indices:
                batched.add(eq.target)
        out[eq.target] = np.array(val, dtype=float)
    return out, batched


def run_derivation(
    d, params: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray, *, form="component"
):
    """Forward and backward pass of one sample, evaluated from the derivation's program
    (:func:`symgrad.calculus.program.program`).

    Returns ``(loss, env)`` where ``env`` holds every forward value and every gradient
    (per-sample, un-averaged: the loss of one sample, its penalty added once).
    """
    net = d.network
    env: dict[str, np.ndarray] = {k: np.asarray(v, float) for k, v in params.items()}
    x = np.asarray(x, float)
    shape = tuple(net.input_shape or ())
    env[str(net.input)] = x.reshape(shape) if shape else x  # (channels, [height,] width)
    env[str(net.loss.target)] = np.asarray(y, float)
    env = run_program(equations(d), env, net.sizes, form=form)
    loss = float(env.pop(LOSS))
    return loss, env
