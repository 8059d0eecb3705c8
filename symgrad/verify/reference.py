"""Verification references: the network evaluated and differentiated by PyTorch or JAX.

An implementation of the network built from the Network IR that shares no code with
symgrad's derivation or generated code: dense stages and named activations/losses are
library calls (``torch.nn.functional``, ``jax.nn``); custom activations, map layers and
custom losses are evaluated from the stage's SymPy component form with the library's
tensor ops over the index grid, so autograd, not symgrad, does the differentiating.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import sympy as sp

from symgrad.errors import SpecError
from symgrad.interrupts import quietly
from symgrad.ir.indices import BATCH
from symgrad.ir.layers import ACTIVATIONS, x, y_s, yhat_s
from symgrad.ir.network import Network, Stage
from symgrad.ir.ops import OPS
from symgrad.verify.grid import SAMPLE_AXIS, ArrayOps, evaluate


class _Ops(ArrayOps):
    """The tensor operations the reference needs, for one library (see the subclasses):
    the grid evaluator's (``grid.ArrayOps``) and the library's own layers and losses."""

    name = ""
    funcs: dict = {}
    acts: dict = {}

    def asarray(self, a: Any) -> Any:
        raise NotImplementedError

    def to_numpy(self, t: Any) -> np.ndarray:
        raise NotImplementedError

    def layer_norm(self, a: Any, gamma: Any, beta: Any, eps: float) -> Any:
        """The library's own LayerNorm over the last axis (None: evaluate the component form)."""
        return None

    def rms_norm(self, a: Any, gamma: Any, eps: float) -> Any:
        """The library's own RMSNorm over the last axis (None: evaluate the component form)."""
        return None

    def batch_norm(self, a: Any, gamma: Any, beta: Any, eps: float) -> Any:
        """Training-mode batch norm of an (n, features) tensor: each feature normalised by
        its mean and biased variance over the batch."""
        raise NotImplementedError

    def conv(
        self, a: Any, W: Any, b: Any, stride: tuple, padding: tuple, dilation: tuple | None = None
    ) -> Any:
        """torch's cross-correlation (conv1d/2d) on (n, C, *spatial) tensors."""
        raise NotImplementedError

    def pool(self, kind: str, a: Any, kernel: tuple, stride: tuple, padding: tuple) -> Any:
        """Max or average pooling (torch's: zeros counted in the average)."""
        raise NotImplementedError

    def dense(self, a: Any, W: Any, b: Any) -> Any:
        """``a W^T + b`` (torch.nn.Linear); the same code for every array library."""
        z = a @ W.T
        return z if b is None else z + b

    def softmax(self, z: Any) -> Any:
        raise NotImplementedError

    def mse(self, yhat: Any, Y: Any) -> Any:
        raise NotImplementedError

    def bce(self, yhat: Any, Y: Any) -> Any:
        raise NotImplementedError

    def cross_entropy(self, logits: Any, Y: Any) -> Any:
        raise NotImplementedError

    def mean(self, t: Any) -> Any:
        raise NotImplementedError

    def loss_and_grads(
        self, fn: Callable[[dict[str, Any]], tuple[Any, Any]], params: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, float, dict[str, np.ndarray]]:
        raise NotImplementedError


class _TorchOps(_Ops):
    name = "torch"

    def __init__(self) -> None:
        import torch
        import torch.nn.functional as TF

        self.t, self.F = torch, TF
        # every registered op, spelled by torch (ir/ops.py)
        self.funcs = {op.func: op.torch_fn(torch) for op in OPS.values()}
        self.acts = {
            "identity": lambda v: v,
            "sigmoid": torch.sigmoid,
            "tanh": torch.tanh,
            "relu": torch.relu,
            "leaky_relu": lambda v: TF.leaky_relu(v, 0.01),
            "softplus": TF.softplus,
            "elu": TF.elu,
            "silu": TF.silu,
        }

    def const(self, v):
        return self.t.tensor(float(v), dtype=self.t.float64)

    def conv(self, a, W, b, stride, padding, dilation=None):
        f = self.F.conv1d if len(stride) == 1 else self.F.conv2d
        dilation = dilation or (1,) * len(stride)
        return f(a, W, b, stride=stride, padding=padding, dilation=dilation)

    def pool(self, kind, a, kernel, stride, padding):
        nd = len(kernel)
        f = getattr(self.F, f"{kind}_pool{nd}d")
        return f(a, kernel, stride=stride, padding=padding)

    def asarray(self, a):
        return self.t.tensor(np.array(a, dtype=np.float64), dtype=self.t.float64)

    def to_numpy(self, t) -> np.ndarray:
        return t.detach().cpu().numpy().astype(np.float64)

    def transpose(self, t, perm):
        return t.permute(*perm) if perm else t

    def reshape(self, t, shape):
        return t.reshape(tuple(shape))

    def sum(self, t, axis):
        return t.sum(dim=axis)

    def eye(self, n, m):
        return self.t.eye(n, m, dtype=self.t.float64)

    def gather(self, arr, positions):
        t = self.t
        parts = t.broadcast_tensors(*(t.as_tensor(q, dtype=t.float64) for q in positions))
        ok = t.ones(parts[0].shape, dtype=t.bool)
        for part, n in zip(parts, arr.shape, strict=False):
            r = t.round(part)
            ok = ok & (r == part) & (r >= 0) & (r < n)
        idx = tuple(t.where(ok, t.round(q), 0.0).long() for q in parts)
        out = arr[idx]
        mask = ok.reshape(*ok.shape, *(1,) * (out.dim() - ok.dim()))
        return t.where(mask, out, t.zeros((), dtype=out.dtype))

    def arange(self, n):
        return self.t.arange(n, dtype=self.t.float64)

    def einsum(self, spec, t):
        return self.t.einsum(spec, t)

    def broadcast_to(self, t, shape):
        return t.expand(*shape) if shape else t

    def maximum(self, a, b):
        return self.t.maximum(a, b)

    def amax(self, t, axis):
        return self.t.amax(t, dim=axis)  # ties share the gradient equally

    def layer_norm(self, a, gamma, beta, eps):
        return self.F.layer_norm(a, (a.shape[-1],), gamma, beta, eps)

    def rms_norm(self, a, gamma, eps):
        return self.F.rms_norm(a, (a.shape[-1],), gamma, eps)

    def batch_norm(self, a, gamma, beta, eps):
        return self.F.batch_norm(a, None, None, gamma, beta, training=True, eps=eps)

    def amin(self, t, axis):
        return self.t.amin(t, dim=axis)

    def minimum(self, a, b):
        return self.t.minimum(a, b)

    def softmax(self, z):
        return self.t.softmax(z, dim=1)

    def mse(self, yhat, Y):
        return self.F.mse_loss(yhat, Y)

    def bce(self, yhat, Y):
        return self.F.binary_cross_entropy(yhat, Y)

    def cross_entropy(self, logits, Y):
        return self.F.cross_entropy(logits, Y)

    def mean(self, t):
        return t.mean()

    def loss_and_grads(self, fn, params: Mapping[str, np.ndarray]):
        leaves = {k: self.asarray(v).requires_grad_(True) for k, v in params.items()}
        value, yhat = fn(leaves)
        names = list(leaves)
        # No parameters, or a loss that does not depend on them: every gradient is zero.
        gs = (
            self.t.autograd.grad(value, [leaves[k] for k in names], allow_unused=True)
            if names and value.requires_grad
            else [None] * len(names)
        )
        grads = {
            k: (self.to_numpy(g) if g is not None else np.zeros(params[k].shape))
            for k, g in zip(names, gs, strict=True)
        }
        return self.to_numpy(yhat), float(value.detach()), grads


class _JaxOps(_Ops):
    name = "jax"

    def __init__(self) -> None:
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", True)
        self.jax, self.np = jax, jnp
        nn = jax.nn
        self.funcs = {op.func: op.jax_fn(jax) for op in OPS.values()}
        self.acts = {
            "identity": lambda v: v,
            "sigmoid": nn.sigmoid,
            "tanh": jnp.tanh,
            "relu": nn.relu,
            "leaky_relu": lambda v: nn.leaky_relu(v, 0.01),
            "softplus": nn.softplus,
            "elu": nn.elu,
            "silu": nn.silu,
        }

    def const(self, v):
        return self.np.asarray(float(v), dtype=self.np.float64)

    def batch_norm(self, a, gamma, beta, eps):
        mu = self.np.mean(a, axis=0)
        var = self.np.mean((a - mu) ** 2, axis=0)
        return gamma * (a - mu) / self.np.sqrt(var + eps) + beta

    def conv(self, a, W, b, stride, padding, dilation=None):
        nd = len(stride)
        spec = ("NCH", "OIH", "NCH") if nd == 1 else ("NCHW", "OIHW", "NCHW")
        out = self.jax.lax.conv_general_dilated(
            a,
            W,
            stride,
            [(p, p) for p in padding],
            rhs_dilation=dilation or (1,) * nd,
            dimension_numbers=spec,
        )
        return out if b is None else out + self.np.reshape(b, (-1, *[1] * nd))

    def pool(self, kind, a, kernel, stride, padding):
        lax = self.jax.lax
        dims, strides = (1, 1, *kernel), (1, 1, *stride)
        pads = [(0, 0), (0, 0), *[(p, p) for p in padding]]
        if kind == "max":
            return lax.reduce_window(a, -self.np.inf, lax.max, dims, strides, pads)
        area = float(np.prod(kernel))
        return lax.reduce_window(a, 0.0, lax.add, dims, strides, pads) / area

    def asarray(self, a):
        return self.np.asarray(np.asarray(a, dtype=np.float64))

    def to_numpy(self, t) -> np.ndarray:
        return np.asarray(t, dtype=np.float64)

    def transpose(self, t, perm):
        return self.np.transpose(t, perm) if perm else t

    def reshape(self, t, shape):
        return self.np.reshape(t, tuple(shape))

    def sum(self, t, axis):
        return self.np.sum(t, axis=axis)

    def eye(self, n, m):
        return self.np.eye(n, m, dtype=self.np.float64)

    def gather(self, arr, positions):
        jnp = self.np
        parts = jnp.broadcast_arrays(*(jnp.asarray(q, dtype=jnp.float64) for q in positions))
        ok = jnp.ones(parts[0].shape, dtype=bool)
        for part, n in zip(parts, arr.shape, strict=False):
            r = jnp.round(part)
            ok = ok & (r == part) & (r >= 0) & (r < n)
        idx = tuple(jnp.where(ok, jnp.round(q), 0.0).astype(int) for q in parts)
        out = arr[idx]
        mask = ok.reshape(*ok.shape, *(1,) * (out.ndim - ok.ndim))
        return jnp.where(mask, out, 0.0)

    def arange(self, n):
        return self.np.arange(n, dtype=self.np.float64)

    def einsum(self, spec, t):
        return self.np.einsum(spec, t)

    def broadcast_to(self, t, shape):
        return self.np.broadcast_to(t, tuple(shape))

    def maximum(self, a, b):
        return self.np.maximum(a, b)

    def amax(self, t, axis):
        return self.np.max(t, axis=axis)

    def amin(self, t, axis):
        return self.np.min(t, axis=axis)

    def minimum(self, a, b):
        return self.np.minimum(a, b)

    def softmax(self, z):
        return self.jax.nn.softmax(z, axis=1)

    def mse(self, yhat, Y):
        return self.np.mean((yhat - Y) ** 2)

    def bce(self, yhat, Y):
        # PyTorch's definition, logs clamped at -100 as F.binary_cross_entropy does.
        lg = self.np.maximum(self.np.log(yhat), -100.0)
        l1 = self.np.maximum(self.np.log1p(-yhat), -100.0)
        return -self.np.mean(Y * lg + (1 - Y) * l1)

    def cross_entropy(self, logits, Y):
        return self.np.mean(-self.np.sum(Y * self.jax.nn.log_softmax(logits, axis=1), axis=1))

    def mean(self, t):
        return self.np.mean(t)

    def loss_and_grads(self, fn, params: Mapping[str, np.ndarray]):
        leaves = {k: self.asarray(v) for k, v in params.items()}
        (value, yhat), grads = self.jax.value_and_grad(fn, has_aux=True)(leaves)
        return self.to_numpy(yhat), float(value), {k: self.to_numpy(g) for k, g in grads.items()}


def backend(name: str) -> _Ops | None:
    """The ops of ``name`` ("torch" or "jax"), or None when that library is not installed."""
    try:
        return _TorchOps() if name == "torch" else _JaxOps()
    except ImportError:
        return None


def eval_tensor(
    ops: _Ops,
    expr: sp.Expr,
    env: Mapping[str, object],
    batched: set[str],
    sizes: Mapping[sp.Symbol, int],
    free: tuple[sp.Symbol, ...],
    ranges: Mapping[sp.Symbol, int],
    n: int,
):
    """Evaluate a component expression with the library's ops over the index grid
    (``grid.evaluate``). Arrays named in ``batched`` carry a leading sample axis; the
    result has shape ``(n, *[ranges[f] for f in free])``, differentiable in every array
    of ``env``."""
    return evaluate(ops, expr, env, sizes, free, ranges, batched=batched, n=n, error=SpecError)


def _dense_body(stage: Stage) -> sp.Expr | None:
    """The body a plain dense stage has (None if ``stage`` is not one)."""
    if not 1 <= len(stage.params) <= 2 or len(stage.params[0].shape) != 2:
        return None
    if len(stage.params) == 2 and len(stage.params[1].shape) != 1:
        return None
    W = stage.params[0].base
    j = sp.Symbol("j", integer=True)
    body = sp.Sum(W[stage.index, j] * stage.inp[j], (j, 0, stage.in_width - 1))
    if len(stage.params) == 2:
        body = body + stage.params[1].base[stage.index]
    return body


def _conv_layer(stage: Stage) -> dict | None:
    """The hyper-parameters of a conv, pooling or flatten stage whose body is exactly the
    one its layer writes (None otherwise: such a stage is evaluated from its body)."""
    from symgrad.ir import conv as C

    attrs = dict(stage.attrs)
    op = attrs.get("op")
    if op is None:
        return None
    if op == "flatten":
        want = C.flatten_body(stage.inp, tuple(int(s) for s in stage.in_shape), stage.index)
    elif op.startswith("conv"):
        W = stage.params[0].base
        b = stage.params[1].base if len(stage.params) == 2 else None
        cin = int(stage.in_shape[0])
        dil = attrs.get("dilation", (1,) * len(attrs["kernel"]))
        attrs["dilation"] = dil
        want = C.conv_body(
            stage.inp, W, b, cin, attrs["kernel"], attrs["stride"], attrs["padding"], dil
        )
    else:
        kind = op[:3]
        want = C.pool_body(kind, stage.inp, attrs["kernel"], attrs["stride"], attrs["padding"])
    return attrs if stage.body == want else None


def _builtin_activation(stage: Stage) -> str | None:
    """The named activation whose expression ``stage`` computes, found by comparing
    expressions (never by the stage's label), or None."""
    if stage.width != stage.in_width:
        return None
    at = stage.indices or (stage.index,)  # one index per axis for (channels, h, w) stages
    for name, expr in ACTIVATIONS.items():
        if stage.body == expr.xreplace({x: stage.inp[at]}):
            return name
    return None


def _is_softmax(stage: Stage) -> bool:
    j = sp.Symbol("j", integer=True)
    i = stage.index
    want = sp.exp(stage.inp[i]) / sp.Sum(sp.exp(stage.inp[j]), (j, 0, stage.width - 1))
    return stage.body == want


_BUILTIN_LOSS = {
    "mse": (yhat_s - y_s) ** 2,
    "bce": -(y_s * sp.log(yhat_s) + (1 - y_s) * sp.log(1 - yhat_s)),
}


def _norm_layer(stage: Stage) -> tuple[str, float] | None:
    """``("layernorm" | "rmsnorm", eps)`` when the stage's body is exactly that norm of its
    input with its own parameters (compared as expressions, never by name)."""
    from symgrad.ir.layers import layernorm_body, rmsnorm_body

    ps = [p.base for p in stage.params]
    if stage.extra or stage.width != stage.in_width or len(ps) not in (1, 2):
        return None
    for f in stage.body.atoms(sp.Float):
        eps = float(f)
        w = stage.in_width
        if len(ps) == 2 and stage.body == layernorm_body(stage.inp, ps[0], ps[1], w, eps):
            return "layernorm", eps
        if len(ps) == 1 and stage.body == rmsnorm_body(stage.inp, ps[0], w, eps):
            return "rmsnorm", eps
    return None


def _batch_norm_layer(stage: Stage) -> float | None:
    """The epsilon of a training-mode batch-norm stage (from the hyper-parameters it was
    built with, its body checked to be exactly that norm), or None."""
    from symgrad.ir.layers import batchnorm_body

    attrs = dict(stage.attrs)
    if attrs.get("norm") != "batchnorm" or not attrs.get("training") or len(stage.params) != 2:
        return None
    eps = float(attrs["eps"])
    gamma, beta = (p.base for p in stage.params)
    if stage.body != batchnorm_body(stage.inp, gamma, beta, eps):
        return None
    return eps


def reference_forward(ops: _Ops, net: Network, params: Mapping[str, object], X, Y):
    """``(yhat, loss)`` of ``net`` in the library of ``ops`` (params, X, Y are its tensors)."""
    n = int(X.shape[0])
    sizes = {s: int(v) for s, v in net.sizes.items()}
    env: dict[str, object] = dict(params)
    env[str(net.input)] = X
    env[str(net.loss.target)] = Y
    batched = {str(net.input), str(net.loss.target)}
    cur = X
    for s in net.stages:
        dense = _dense_body(s)
        layer = _conv_layer(s)
        if dense is not None and s.body == dense:
            b = params[s.params[1].name] if len(s.params) == 2 else None
            out = ops.dense(cur, params[s.params[0].name], b)
        elif layer is not None and layer["op"] == "flatten":
            out = ops.reshape(cur, (n, -1))
        elif layer is not None and layer["op"].startswith("conv"):
            b = params[s.params[1].name] if len(s.params) == 2 else None
            out = ops.conv(
                cur,
                params[s.params[0].name],
                b,
                layer["stride"],
                layer["padding"],
                dilation=layer["dilation"],
            )
        elif layer is not None:
            k, st, pd = layer["kernel"], layer["stride"], layer["padding"]
            out = ops.pool(layer["op"][:3], cur, k, st, pd)
        elif (norm := _norm_layer(s)) is not None and (
            out := (
                ops.layer_norm(cur, params[s.params[0].name], params[s.params[1].name], norm[1])
                if norm[0] == "layernorm"
                else ops.rms_norm(cur, params[s.params[0].name], norm[1])
            )
        ) is not None:
            pass  # the library's own norm layer
        elif (bn_eps := _batch_norm_layer(s)) is not None:
            out = ops.batch_norm(cur, params[s.params[0].name], params[s.params[1].name], bn_eps)
        elif s.sample is not None:  # a map that couples the samples: its sample index is
            # the arrays' own first axis (none of them gets an implicit one)
            w = net.size(s.width)
            body = s.body.xreplace({s.sample: SAMPLE_AXIS})
            out = eval_tensor(
                ops, body, env, set(), {**sizes, BATCH: n}, (s.index,), {s.index: w}, n
            )
        elif (act := _builtin_activation(s)) in ops.acts:
            out = ops.acts[act](cur)  # the library's own activation
        elif _is_softmax(s):
            out = ops.softmax(cur)
        else:  # custom activation or map layer: its component form over the index grid
            free = tuple(s.indices) or (s.index,)
            ext = [net.size(e) for e in (s.shape or (s.width,))]
            rng = dict(zip(free, ext, strict=True))
            out = eval_tensor(ops, s.body, env, batched, sizes, free, rng, n)
        env[s.name] = out
        batched.add(s.name)
        cur = out
    loss = net.loss
    last = net.stages[-1]
    builtin = [k for k, e in _BUILTIN_LOSS.items() if loss.elementwise == e]
    k_ = sp.Symbol("i", integer=True)
    ce = -sp.Sum(loss.target[k_] * sp.log(net.output[k_]), (k_, 0, loss.width - 1))
    if _is_softmax(last) and loss.body.dummy_eq(ce):
        value = ops.cross_entropy(env[str(last.inp)], Y)
    elif builtin:
        value = getattr(ops, builtin[0])(cur, Y)
    else:  # a custom loss: the mean over samples of the per-sample loss
        per = eval_tensor(ops, loss.body, env, batched, sizes, (), {}, n)
        value = ops.mean(per)
    if net.penalty is not None:  # once per batch: the same for every sample, so its mean
        value = value + ops.mean(eval_tensor(ops, net.penalty, env, batched, sizes, (), {}, n))
    return cur, value


def reference_loss_and_grads(
    name: str, net: Network, params: Mapping[str, np.ndarray], X: np.ndarray, Y: np.ndarray
) -> tuple[np.ndarray, float, dict[str, np.ndarray]] | None:
    """``(yhat, loss, grads)`` in float64 from torch or jax autograd (None if not installed).

    In the command, Ctrl-C while the framework loads or computes ends the process
    quietly (:func:`symgrad.interrupts.quietly`): this writes nothing.
    """
    with quietly():
        ops = backend(name)
        if ops is None:
            return None
        Xt, Yt = ops.asarray(X), ops.asarray(Y)

        def fn(leaves):
            yhat, value = reference_forward(ops, net, leaves, Xt, Yt)
            return value, yhat

        return ops.loss_and_grads(fn, params)


def torch_reference(net: Network, params, X, Y):
    """``(yhat, loss, grads)`` from PyTorch autograd (float64); None without torch."""
    return reference_loss_and_grads("torch", net, params, X, Y)


def jax_reference(net: Network, params, X, Y):
    """``(yhat, loss, grads)`` from JAX autograd (float64); None without jax."""
    return reference_loss_and_grads("jax", net, params, X, Y)


# -- finite differences -----------------------------------------------------------------
