"""Stage 5, verification: a module's gradients against references that share none of its code.

``verify_network`` loads a module implementing CONTRACT section 4 (freshly generated, or
any file: a hand-written backprop, an edited generated file) and checks it at a random
point against

- central finite differences (a 4th-order 5-point stencil, float64) of ``module.loss``;
- PyTorch autograd, and JAX autograd, of an *independent* implementation of the network
  built from the Network IR: dense stages and named activations/losses are torch (or
  jax) library calls; custom activations, map layers and custom losses are evaluated
  from the stage's SymPy component form with the library's tensor ops over the index
  grid (:func:`reference_forward`), so autograd, not symgrad, does the differentiating.

It also checks the API (names, shapes, dtypes of the gradients, float32 in gives float32
out) and that the inputs are not modified. With ``symbolic=True`` the derivation itself is
checked: every step's matrix form against its component form, evaluated numerically.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import sympy as sp

from . import functions as F
from .errors import SpecError
from .layers import ACTIVATIONS, x, y_s, yhat_s
from .network import Network, Stage

#: Relative tolerances, float64 module.
TOL_AUTOGRAD = 1e-7
TOL_FD = 1e-6
#: Relative tolerance for a float32 module against the float64 references.
TOL_FLOAT32 = 1e-3
#: Relative tolerance of matrix form vs component form (``symbolic=True``).
TOL_SYMBOLIC = 1e-10
#: Denominator floor of the relative error (a gradient that is all ~0 is compared absolutely).
REL_FLOOR = 1e-8

REFERENCES = ("fd", "torch", "jax")
API = ("PARAM_NAMES", "PARAM_SHAPES", "init_params", "forward", "loss", "loss_and_grads")


# -- the report ------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One numeric comparison of ``name`` (a parameter, ``loss``, ``yhat``) with ``reference``."""

    name: str
    reference: str
    max_abs: float
    max_rel: float
    tol: float
    ok: bool
    note: str = ""

    def line(self) -> str:
        return (
            f"{self.name} ({self.reference}): max rel err {self.max_rel:.1e} "
            f"(max abs err {self.max_abs:.1e}, tol {self.tol:.0e})"
            + (f"; {self.note}" if self.note else "")
        )


@dataclass
class VerifyReport:
    """The result of :func:`verify_network`: numeric rows, structural checks, skips."""

    network: str
    module: str
    dtype: str
    seed: int
    batch: int
    rows: list[Row] = field(default_factory=list)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # (what, ok, message)
    skipped: list[str] = field(default_factory=list)
    symbolic: list[Row] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows + self.symbolic) and all(c[1] for c in self.checks)

    @property
    def n_checks(self) -> int:
        return len(self.rows) + len(self.symbolic) + len(self.checks)

    def failures(self) -> list[str]:
        out = [msg for _, ok, msg in self.checks if not ok]
        out += [r.line() for r in self.rows + self.symbolic if not r.ok]
        return out

    def row(self, name: str, reference: str) -> Row:
        for r in self.rows + self.symbolic:
            if r.name == name and r.reference == reference:
                return r
        raise KeyError((name, reference))

    def check(self, what: str, ok: bool, message: str = "") -> bool:
        self.checks.append((what, ok, message or what))
        return ok

    def format(self) -> str:
        lines = [
            f"verify {self.network}: module {self.module}, dtype {self.dtype}, "
            f"batch {self.batch}, seed {self.seed}"
        ]
        if self.rows:
            lines.append(_table(self.rows, "quantity"))
        if self.symbolic:
            lines.append("symbolic derivation (matrix form vs component form, one sample):")
            lines.append(_table(self.symbolic, "step"))
        for s in self.skipped:
            lines.append(f"skipped: {s}")
        fails = self.failures()
        if not fails:
            lines.append(f"OK: {self.n_checks} checks passed")
            return "\n".join(lines)
        if len(fails) > 1:
            lines.append(f"{len(fails)} of {self.n_checks} checks failed:")
            lines.extend(f"  {f}" for f in fails)
        lines.append(f"FAIL: {fails[0]}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _table(rows: Sequence[Row], first: str) -> str:
    head = (first, "reference", "max abs err", "max rel err", "tol", "result")
    body = [
        (
            r.name,
            r.reference,
            f"{r.max_abs:.2e}",
            f"{r.max_rel:.2e}",
            f"{r.tol:.0e}",
            "ok" if r.ok else "FAIL" + (f" ({r.note})" if r.note else ""),
        )
        for r in rows
    ]
    widths = [max(len(t[c]) for t in [head, *body]) for c in range(len(head))]
    fmt = "  " + "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*t).rstrip() for t in [head, *body])


def rel_error(got, ref, floor: float = REL_FLOOR) -> tuple[float, float]:
    """``(max |got - ref|, max |got - ref| / max(max |ref|, floor))``; inf on shape mismatch."""
    g = np.asarray(got, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    if g.shape != r.shape:
        return math.inf, math.inf
    if g.size == 0:
        return 0.0, 0.0
    if not (np.all(np.isfinite(g)) and np.all(np.isfinite(r))):
        same = np.array_equal(g, r, equal_nan=True)
        return (0.0, 0.0) if same else (math.inf, math.inf)
    err = float(np.max(np.abs(g - r)))
    return err, err / max(float(np.max(np.abs(r))), floor)


# -- loading a module ------------------------------------------------------------------


def load_module_file(path: str | Path) -> ModuleType:
    """Import the Python file at ``path`` as a fresh module (never cached in sys.modules)."""
    p = Path(path)
    if not p.is_file():
        raise SpecError("no such file", file=str(path))
    name = f"symgrad_verify_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise SpecError("cannot import this file as a Python module", file=str(path))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses & co. look themselves up here while executing
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop(name, None)
    return mod


# -- random inputs ---------------------------------------------------------------------


def random_targets(net: Network, n: int, rng: np.random.Generator) -> np.ndarray:
    """Targets valid for the network's loss: probabilities for cross-entropy, (0, 1) for bce."""
    C = net.size(net.output_width)
    name = net.loss.name
    if net.loss.requires_softmax or any(k == "sum_y_is_1" for k, _ in net.loss.identities):
        y = rng.uniform(0.05, 1.0, (n, C))
        return y / y.sum(axis=1, keepdims=True)
    if name == "bce":
        return rng.uniform(0.05, 0.95, (n, C))
    return rng.normal(0.0, 1.0, (n, C))


def random_point(
    net: Network, mod: ModuleType | None, seed: int, batch: int
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Float64 parameters (from ``mod.init_params`` plus noise), inputs X and targets Y."""
    rng = np.random.default_rng(seed + 12345)
    if mod is not None:
        base = mod.init_params(seed, np.float64)
        params = {k: np.array(v, dtype=np.float64) for k, v in base.items()}
    else:
        params = {p.name: rng.uniform(-0.5, 0.5, net.shape(p)) for p in net.params}
    # A little noise: parameters initialised to constants (zeros, ones) hide transposes.
    for k in params:
        params[k] = params[k] + rng.normal(0.0, 0.1, params[k].shape)
    X = rng.normal(0.0, 1.0, (batch, net.size(net.input_width)))
    Y = random_targets(net, batch, rng)
    return params, X, Y


# -- an independent reference implementation (torch or jax) ----------------------------

_BATCH = sp.Symbol("_n_batch_")


class _Ops:
    """The tensor operations the reference needs, for one library (see the subclasses)."""

    name = ""
    funcs: dict = {}
    acts: dict = {}

    # The interface the subclasses implement (tensors are the library's own type).
    def const(self, v: float) -> Any:
        raise NotImplementedError

    def asarray(self, a: Any) -> Any:
        raise NotImplementedError

    def to_numpy(self, t: Any) -> np.ndarray:
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
        f64 = torch.float64
        self.funcs = {
            sp.exp: torch.exp,
            sp.log: torch.log,
            sp.tanh: torch.tanh,
            sp.cosh: torch.cosh,
            sp.sinh: torch.sinh,
            sp.sin: torch.sin,
            sp.cos: torch.cos,
            sp.Abs: torch.abs,
            sp.sign: torch.sign,
            F.sigmoid: torch.sigmoid,
            F.relu: torch.relu,
            F.leaky_relu: lambda v: TF.leaky_relu(v, 0.01),
            F.elu: TF.elu,
            F.softplus: TF.softplus,
            F.step: lambda v: (v > 0).to(f64),
        }
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

    def arange(self, n):
        return self.t.arange(n, dtype=self.t.float64)

    def einsum(self, spec, t):
        return self.t.einsum(spec, t)

    def broadcast_to(self, t, shape):
        return t.expand(*shape) if shape else t

    def maximum(self, a, b):
        return self.t.maximum(a, b)

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
        gs = self.t.autograd.grad(value, [leaves[k] for k in names], allow_unused=True)
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
        self.funcs = {
            sp.exp: jnp.exp,
            sp.log: jnp.log,
            sp.tanh: jnp.tanh,
            sp.cosh: jnp.cosh,
            sp.sinh: jnp.sinh,
            sp.sin: jnp.sin,
            sp.cos: jnp.cos,
            sp.Abs: jnp.abs,
            sp.sign: jnp.sign,
            F.sigmoid: nn.sigmoid,
            F.relu: nn.relu,
            F.leaky_relu: lambda v: nn.leaky_relu(v, 0.01),
            F.elu: nn.elu,
            F.softplus: nn.softplus,
            F.step: lambda v: (v > 0).astype(jnp.float64),
        }
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

    def arange(self, n):
        return self.np.arange(n, dtype=self.np.float64)

    def einsum(self, spec, t):
        return self.np.einsum(spec, t)

    def broadcast_to(self, t, shape):
        return self.np.broadcast_to(t, tuple(shape))

    def maximum(self, a, b):
        return self.np.maximum(a, b)

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


class _Named:
    """A tensor with one named axis per index symbol (``_BATCH`` is the sample axis)."""

    __slots__ = ("axes", "t")

    def __init__(self, t, axes: tuple[sp.Symbol, ...]):
        self.t = t
        self.axes = axes


def _align(ops: _Ops, items: Sequence[_Named]):
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
    """Evaluate a component expression with the library's ops over the index grid.

    Arrays named in ``batched`` carry a leading sample axis. The result has shape
    ``(n, *[ranges[f] for f in free])`` (differentiable in every array of ``env``).
    """

    def size(e) -> int:
        return int(sp.sympify(e).xreplace({s: sp.Integer(v) for s, v in sizes.items()}))

    def ev(e, rng) -> _Named:
        sub: str | _Named
        if e.is_Number:
            return _Named(ops.const(float(e)), ())
        if isinstance(e, sp.Indexed):
            name = str(e.base.label)
            ind = tuple(e.indices)
            if any(not isinstance(s, sp.Symbol) for s in ind):
                raise SpecError(f"cannot evaluate {e}: subscripts must be index names")
            t = env[name]
            lead = (_BATCH,) if name in batched else ()
            if len(set(ind)) != len(ind):  # a repeated index: the diagonal
                letters = "bcdefgh"
                uniq = list(dict.fromkeys(ind))
                sub = "".join(letters[uniq.index(s)] for s in ind)
                spec = ("a" if lead else "") + sub
                t = ops.einsum(f"{spec}->{''.join(dict.fromkeys(spec))}", t)
                ind = tuple(uniq)
            return _Named(t, lead + ind)
        if isinstance(e, sp.KroneckerDelta):
            a, b = e.args
            return _Named(ops.eye(rng[a], rng[b]), (a, b))
        if isinstance(e, sp.Symbol):
            if e in rng:
                return _Named(ops.arange(rng[e]), (e,))
            if e in sizes:
                return _Named(ops.const(sizes[e]), ())
            if str(e) in env:
                return _Named(env[str(e)], (_BATCH,) if str(e) in batched else ())
            raise SpecError(f"cannot evaluate symbol {e}")
        if isinstance(e, sp.Sum):
            inner = dict(rng)
            for var, lo, hi in e.limits:
                if lo != 0:
                    raise SpecError(f"sums must start at 0: {e}")
                inner[var] = size(hi) + 1
            sub = ev(e.function, inner)
            t, axes = sub.t, list(sub.axes)
            for var, _, _ in e.limits:
                if var in axes:
                    ax = axes.index(var)
                    t = ops.sum(t, ax)
                    axes.pop(ax)
                else:
                    t = t * float(inner[var])
            return _Named(t, tuple(axes))
        if e.is_Add or e.is_Mul:
            ts, axes = _align(ops, [ev(a, rng) for a in e.args])
            acc = ts[0]
            for t in ts[1:]:
                acc = acc + t if e.is_Add else acc * t
            return _Named(acc, axes)
        if e.is_Pow:
            base = ev(e.base, rng)
            if e.exp.is_Integer:
                return _Named(base.t ** int(e.exp), base.axes)
            if e.exp.is_Number:
                return _Named(base.t ** float(e.exp), base.axes)
            (b, p), axes = _align(ops, [base, ev(e.exp, rng)])
            return _Named(b**p, axes)
        if isinstance(e, sp.Function):
            ts, axes = _align(ops, [ev(a, rng) for a in e.args])
            if e.func in ops.funcs:
                return _Named(ops.funcs[e.func](*ts), axes)
            if e.func in (sp.Max, sp.Min):
                pick = ops.maximum if e.func is sp.Max else ops.minimum
                acc = ts[0]
                for t in ts[1:]:
                    acc = pick(acc, t)
                return _Named(acc, axes)
            raise SpecError(f"the {ops.name} reference has no rule for function {e.func}")
        raise SpecError(f"the {ops.name} reference cannot evaluate {e!r}")

    res = ev(expr, dict(ranges))
    want = (_BATCH, *free)
    extra = [a for a in res.axes if a not in want]
    if extra:
        raise SpecError(f"free indices {extra} left in {expr}")
    t = res.t
    if res.axes:
        t = ops.transpose(t, [res.axes.index(a) for a in want if a in res.axes])
        present = [a for a in want if a in res.axes]
        t = ops.reshape(t, [t.shape[present.index(a)] if a in res.axes else 1 for a in want])
    shape = [n, *(ranges[f] for f in free)]
    return ops.broadcast_to(t, shape)


def _dense_body(stage: Stage) -> sp.Expr | None:
    """The body a plain dense stage has (None if ``stage`` is not one)."""
    if stage.kind != "affine" or stage.label != "dense" or not stage.params:
        return None
    W = stage.params[0].base
    j = sp.Symbol("j", integer=True)
    body = sp.Sum(W[stage.index, j] * stage.inp[j], (j, 0, stage.in_width - 1))
    if len(stage.params) == 2:
        body = body + stage.params[1].base[stage.index]
    return body


def _is_builtin_activation(stage: Stage) -> bool:
    if stage.kind != "elementwise" or stage.label not in ACTIVATIONS:
        return False
    return stage.body == ACTIVATIONS[stage.label].xreplace({x: stage.inp[stage.index]})


def _is_softmax(stage: Stage) -> bool:
    if stage.label != "softmax":
        return False
    j = sp.Symbol("j", integer=True)
    i = stage.index
    want = sp.exp(stage.inp[i]) / sp.Sum(sp.exp(stage.inp[j]), (j, 0, stage.width - 1))
    return stage.body == want


_BUILTIN_LOSS = {
    "mse": (yhat_s - y_s) ** 2,
    "bce": -(y_s * sp.log(yhat_s) + (1 - y_s) * sp.log(1 - yhat_s)),
}


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
        if dense is not None and s.body == dense:
            b = params[s.params[1].name] if len(s.params) == 2 else None
            out = ops.dense(cur, params[s.params[0].name], b)
        elif _is_builtin_activation(s):
            out = ops.acts[s.label](cur)
        elif _is_softmax(s):
            out = ops.softmax(cur)
        else:  # custom activation or map layer: its component form over the index grid
            w = net.size(s.width)
            out = eval_tensor(ops, s.body, env, batched, sizes, (s.index,), {s.index: w}, n)
        env[s.name] = out
        batched.add(s.name)
        cur = out
    loss = net.loss
    last = net.stages[-1]
    if loss.name == "cross_entropy" and loss.requires_softmax and _is_softmax(last):
        value = ops.cross_entropy(env[str(last.inp)], Y)
    elif loss.name in _BUILTIN_LOSS and loss.elementwise == _BUILTIN_LOSS[loss.name]:
        value = getattr(ops, loss.name)(cur, Y)
    else:  # a custom loss: the mean over samples of the per-sample loss
        per = eval_tensor(ops, loss.body, env, batched, sizes, (), {}, n)
        value = ops.mean(per)
    return cur, value


def reference_loss_and_grads(
    name: str, net: Network, params: Mapping[str, np.ndarray], X: np.ndarray, Y: np.ndarray
) -> tuple[np.ndarray, float, dict[str, np.ndarray]] | None:
    """``(yhat, loss, grads)`` in float64 from torch or jax autograd (None if not installed)."""
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


def _stencil(f: Callable[[float], float], h: float) -> float:
    return (-f(2 * h) + 8 * f(h) - 8 * f(-h) + f(-2 * h)) / (12 * h)


def finite_differences(
    loss: Callable[[dict[str, np.ndarray], np.ndarray, np.ndarray], float],
    params: Mapping[str, np.ndarray],
    X: np.ndarray,
    Y: np.ndarray,
    *,
    h_rel: float = 1e-3,
    hint: Mapping[str, np.ndarray] | None = None,
    tol: float = TOL_FD,
) -> dict[str, np.ndarray]:
    """Central 5-point (4th-order) finite differences of ``loss`` in float64.

    The step is ``h_rel * max(1, |p|)``. With ``hint`` (the gradient under test), an
    element whose difference disagrees is recomputed with steps 10 and 100 times smaller
    and the closest value is kept: a step that straddles a kink (relu) is then avoided,
    while a wrong gradient disagrees at every step.
    """
    base = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    X = np.array(X, dtype=np.float64)
    Y = np.array(Y, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    pos: int | np.intp
    for name, value in base.items():
        g = np.zeros_like(value)
        flat = g.reshape(-1)
        for pos in range(value.size):
            idx = np.unravel_index(pos, value.shape) if value.shape else ()
            x0 = float(value[idx])

            def f(d, idx=idx, x0=x0, name=name):
                trial = dict(base)
                arr = base[name].copy()
                arr[idx] = x0 + d
                trial[name] = arr
                return float(loss(trial, X.copy(), Y.copy()))

            h = h_rel * max(1.0, abs(x0))
            flat[pos] = _stencil(f, h)
        if hint is not None and name in hint and np.shape(hint[name]) == value.shape:
            want = np.asarray(hint[name], dtype=np.float64)
            scale = max(float(np.max(np.abs(g))) if g.size else 0.0, REL_FLOOR)
            for pos in np.flatnonzero(np.abs(want - g).reshape(-1) > 0.1 * tol * scale):
                idx = np.unravel_index(pos, value.shape) if value.shape else ()
                x0 = float(value[idx])

                def f(d, idx=idx, x0=x0, name=name):
                    trial = dict(base)
                    arr = base[name].copy()
                    arr[idx] = x0 + d
                    trial[name] = arr
                    return float(loss(trial, X.copy(), Y.copy()))

                h = h_rel * max(1.0, abs(x0))
                tries = [flat[pos], _stencil(f, h / 10), _stencil(f, h / 100)]
                target = float(want.reshape(-1)[pos])
                flat[pos] = min(tries, key=lambda v: abs(v - target))
        out[name] = g
    return out


# -- the verifier -----------------------------------------------------------------------


def _describe_exc(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _check_api(mod: ModuleType, net: Network, report: VerifyReport) -> bool:
    missing = [a for a in API if not hasattr(mod, a)]
    if not report.check(
        "api", not missing, f"module lacks {', '.join(missing)} (CONTRACT section 4)"
    ):
        return False
    not_callable = [a for a in API[2:] if not callable(getattr(mod, a))]
    if not report.check(
        "api callables", not not_callable, f"not callable: {', '.join(not_callable)}"
    ):
        return False
    names = tuple(mod.PARAM_NAMES)
    want = net.param_names
    if set(names) != set(want):
        extra = sorted(set(names) - set(want))
        lack = sorted(set(want) - set(names))
        detail = "; ".join(
            s
            for s in (
                f"unexpected {', '.join(extra)}" if extra else "",
                f"missing {', '.join(lack)}" if lack else "",
            )
            if s
        )
        report.check(
            "PARAM_NAMES", False, f"PARAM_NAMES {names} do not match the network {want}: {detail}"
        )
        return False
    report.check("PARAM_NAMES", True)
    ok = True
    shapes = dict(mod.PARAM_SHAPES)
    for p in net.params:
        got = tuple(shapes.get(p.name, ()))
        exp = net.shape(p)
        ok &= report.check(
            f"shape {p.name}",
            got == exp,
            f"PARAM_SHAPES[{p.name!r}] is {got}, the network has {exp}",
        )
    return ok


def _copy(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.array(v, copy=True) for k, v in params.items()}


def _call(report: VerifyReport, what: str, fn, *args):
    try:
        return True, fn(*args)
    except Exception as exc:  # a module under test may fail in any way: report it
        report.check(what, False, f"{what} raised {_describe_exc(exc)}")
        return False, None


def _check_grads_structure(report: VerifyReport, net: Network, grads, dtype: np.dtype) -> bool:
    """Keys and shapes (False stops the numeric checks); dtypes are reported only."""
    if not report.check("grads dict", isinstance(grads, dict), "grads is not a dict"):
        return False
    want, got = set(net.param_names), set(grads)
    if not report.check(
        "grads keys", got == want, f"grads keys {sorted(got)} != PARAM_NAMES {sorted(want)}"
    ):
        return False
    ok = True
    for p in net.params:
        g = np.asarray(grads[p.name])
        exp = net.shape(p)
        ok &= report.check(
            f"grad shape {p.name}",
            g.shape == exp,
            f"{p.name}: gradient has shape {g.shape}, expected {exp}",
        )
        report.check(
            f"grad dtype {p.name}",
            g.dtype == dtype,
            f"{p.name}: gradient has dtype {g.dtype}, expected {dtype}",
        )
    return ok


def verify_network(
    net: Network,
    module: str | None = None,
    dtype: str = "float64",
    against: tuple[str, ...] = REFERENCES,
    symbolic: bool = False,
    seed: int = 0,
    batch: int = 4,
) -> VerifyReport:
    """Verify a module's loss and gradients for ``net`` at a random point.

    Args:
        net: the network (concrete widths).
        module: a path to a Python file implementing CONTRACT section 4; None verifies
            freshly generated code.
        dtype: "float64", or "float32" to run the module in float32 (compared with the
            float64 references at the float32-rounded point, rel tol 1e-3).
        against: references among "fd", "torch", "jax" (missing libraries are skipped).
        symbolic: also check every derivation step's matrix form against its component form.
        seed: random seed of the point (parameters from ``init_params(seed)`` plus noise).
        batch: number of samples.
    """
    if dtype not in ("float64", "float32"):
        raise SpecError(f"unknown dtype {dtype!r} (choose float64 or float32)", field="--dtype")
    bad = [a for a in against if a not in REFERENCES]
    if bad:
        raise SpecError(f"unknown reference {bad[0]!r} (choose from {', '.join(REFERENCES)})")
    if batch < 1:
        raise SpecError("batch must be a positive integer", field="--batch")
    if not net.is_concrete:
        raise SpecError("every width must be a concrete integer to verify")
    report = VerifyReport(net.name, module or "<generated>", dtype, seed, batch)

    if module is None:
        from .codegen import generate, load_module

        mod = load_module(generate(net), f"symgrad_verify_{net.name}")
    else:
        try:
            mod = load_module_file(module)
        except SpecError:
            raise
        except Exception as exc:
            report.check("import", False, f"cannot import {module}: {_describe_exc(exc)}")
            return report

    if symbolic:
        report.symbolic.extend(symbolic_rows(net, seed))
    if not _check_api(mod, net, report):
        return report

    ok, point = _call(report, "init_params", random_point, net, mod, seed, batch)
    if not ok:
        return report
    params64, X64, Y64 = point
    shapes = {k: v.shape for k, v in params64.items()}
    want = {p.name: net.shape(p) for p in net.params}
    if not report.check(
        "init_params",
        shapes == want,
        f"init_params returned {shapes}, expected the parameters {want}",
    ):
        return report
    np_dtype = np.dtype(dtype)
    # The module's point, and the same point in float64 for the references.
    params = {k: v.astype(np_dtype) for k, v in params64.items()}
    X, Y = X64.astype(np_dtype), Y64.astype(np_dtype)
    params64 = {k: v.astype(np.float64) for k, v in params.items()}
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)

    # Each call gets its own copies, compared afterwards: a module that modifies its
    # inputs is reported, and cannot spoil the point the other calls see.
    changed: dict[str, None] = {}

    def call(what, fn, *args):
        copies = [_copy(a) if isinstance(a, dict) else a.copy() for a in args]
        ok, out = _call(report, what, fn, *copies)
        for nm, a, c in zip(("params", "X", "Y"), args, copies, strict=False):
            if nm == "params":
                changed.update({k: None for k in a if not np.array_equal(a[k], c.get(k))})
            elif not np.array_equal(a, c):
                changed[nm] = None
        return ok, out

    ok1, res = call("loss_and_grads", mod.loss_and_grads, params, X, Y)
    ok2, yhat = call("forward", mod.forward, params, X)
    ok3, lval = call("loss", mod.loss, params, X, Y)
    report.check(
        "inputs unchanged", not changed, f"the module modified its inputs: {', '.join(changed)}"
    )
    if not ok1:
        return report
    if not (isinstance(res, tuple) and len(res) == 2):
        report.check("loss_and_grads", False, "loss_and_grads must return (loss, grads)")
        return report
    value, grads = res
    if not _check_grads_structure(report, net, grads, np_dtype):
        return report
    C = net.size(net.output_width)
    if ok2:
        y = np.asarray(yhat)
        ok2 = report.check(
            "forward shape",
            y.shape == (batch, C),
            f"forward returned shape {y.shape}, expected {(batch, C)}",
        )
        report.check(
            "forward dtype",
            y.dtype == np_dtype,
            f"forward returned dtype {y.dtype}, expected {np_dtype}",
        )
    if ok3:
        a, r = rel_error(float(lval), float(value))
        report.check(
            "loss == loss_and_grads",
            r <= 1e-12,
            f"loss() = {float(lval)!r} but loss_and_grads() gives {float(value)!r}",
        )
    finite = np.isfinite(float(value)) and all(
        np.all(np.isfinite(np.asarray(g, dtype=np.float64))) for g in grads.values()
    )
    report.check("finite", bool(finite), "loss or gradients are not finite")

    f32 = np_dtype == np.float32
    refs: list[tuple[str, float, np.ndarray | None, float | None, dict[str, np.ndarray]]] = []
    for name in against:
        if name == "fd":
            continue
        try:
            got = reference_loss_and_grads(name, net, params64, X64, Y64)
        except SpecError as exc:
            report.skipped.append(f"{name}: {exc.line()}")
            continue
        if got is None:
            report.skipped.append(f"{name} not installed")
            continue
        ref_y: np.ndarray | None
        ref_l: float | None
        ref_y, ref_l, ref_g = got
        refs.append((name, TOL_FLOAT32 if f32 else TOL_AUTOGRAD, ref_y, ref_l, ref_g))
    if "fd" in against:
        loss64 = _loss64(mod)
        hint = {k: np.asarray(v, dtype=np.float64) for k, v in grads.items()}
        try:
            fd = finite_differences(loss64, params64, X64, Y64, hint=hint)
        except Exception as exc:
            report.check("fd", False, f"finite differences: loss raised {_describe_exc(exc)}")
        else:
            refs.append(("fd", TOL_FLOAT32 if f32 else TOL_FD, None, None, fd))

    for name, tol, ref_y, ref_l, ref_g in refs:
        if ref_l is not None:
            a, r = rel_error(float(value), ref_l)
            report.rows.append(Row("loss", name, a, r, tol, r <= tol))
        if ref_y is not None and ok2:
            a, r = rel_error(np.asarray(yhat, dtype=np.float64), ref_y)
            report.rows.append(Row("yhat", name, a, r, tol, r <= tol))
        for p in net.param_names:
            a, r = rel_error(np.asarray(grads[p], dtype=np.float64), ref_g[p])
            note = _diagnose(np.asarray(grads[p], dtype=np.float64), ref_g[p], tol)
            report.rows.append(Row(p, name, a, r, tol, r <= tol, note if r > tol else ""))
    if not refs:
        report.check(
            "references", False, "no reference available (" + "; ".join(report.skipped) + ")"
        )
    return report


def _loss64(mod: ModuleType) -> Callable:
    def loss(params, X, Y):
        return float(mod.loss(params, X, Y))

    return loss


def _diagnose(got: np.ndarray, ref: np.ndarray, tol: float) -> str:
    """A hint at the kind of mistake: a sign, a transpose, a constant factor."""
    if got.shape != ref.shape:
        return f"shape {got.shape} vs {ref.shape}"
    scale = max(float(np.max(np.abs(ref))), REL_FLOOR)

    def close(a):
        return float(np.max(np.abs(a - ref))) <= 10 * tol * scale

    if close(-got):
        return "sign flipped"
    if got.ndim == 2 and got.shape[0] == got.shape[1] and close(got.T):
        return "transposed"
    denom = float(np.vdot(got, got))
    if denom > 0:
        c = float(np.vdot(got, ref)) / denom
        if close(c * got) and abs(c - 1) > 1e-6:
            return f"off by a factor {c:.4g}"
    return ""


def concrete_sizes(net: Network, seed: int = 0, low: int = 2, high: int = 5) -> Network:
    """``net`` with every symbolic width set to a random small integer."""
    if net.is_concrete:
        return net
    rng = np.random.default_rng(seed + 31)
    widths = {str(s.width) for s in net.stages} | {str(net.input_width)}
    widths |= {str(sym) for p in net.params for e in p.shape for sym in sp.sympify(e).free_symbols}
    known = {str(k) for k in net.sizes}
    new = {
        w: int(rng.integers(low, high + 1)) for w in widths if w not in known and w.isidentifier()
    }
    return net.with_sizes(**new)


def _resized(net: Network, seed: int) -> Network | None:
    """``net`` with every width redrawn at random (None if a shape is a fixed integer)."""
    if any(not sp.sympify(e).free_symbols for p in net.params for e in p.shape):
        return None
    rng = np.random.default_rng(seed + 57)
    return net.with_sizes(**{str(s): int(rng.integers(2, 6)) for s in net.sizes})


def symbolic_rows(net: Network, seed: int = 0) -> list[Row]:
    """Every step of the derivation: matrix form vs component form on one random sample.

    The derivation is symbolic in the widths: it is evaluated at the network's widths and
    again at random small widths (symbolic widths get random values). When PyTorch is
    installed, each parameter step is also compared with autograd of one sample's loss.
    """
    from dataclasses import replace

    from .derivation import derive
    from .evaluation import run_derivation

    net = concrete_sizes(net, seed)
    d = derive(net)
    variants = [net] + [v for v in (_resized(net, seed),) if v is not None]
    errors: dict[tuple[str, str], tuple[float, float]] = {}
    ref, env0 = None, {}
    for k, sized in enumerate(variants):
        dk = replace(d, network=sized)
        params, X, Y = random_point(sized, None, seed + k, 1)
        _, env_c = run_derivation(dk, params, X[0], Y[0], form="component")
        _, env_m = run_derivation(dk, params, X[0], Y[0], form="matrix")
        pairs = [(f.stage.name, "forward matrix form") for f in d.forward]
        pairs += [(st.grad, "matrix form") for st in d.steps]
        for name, what in pairs:
            a, r = rel_error(env_m[name], env_c[name])
            old = errors.get((name, what), (0.0, 0.0))
            errors[(name, what)] = (max(a, old[0]), max(r, old[1]))
        if k == 0:
            ref = torch_reference(sized, params, X, Y)
            env0 = env_c
    rows = [
        Row(name, what, a, r, TOL_SYMBOLIC, r <= TOL_SYMBOLIC)
        for (name, what), (a, r) in errors.items()
    ]
    if ref is not None:
        for name, st in d.param_steps().items():
            a, r = rel_error(env0[st.grad], ref[2][name])
            rows.append(Row(st.grad, "torch", a, r, TOL_AUTOGRAD, r <= TOL_AUTOGRAD))
    return rows


__all__ = [
    "REFERENCES",
    "Row",
    "VerifyReport",
    "concrete_sizes",
    "finite_differences",
    "jax_reference",
    "load_module_file",
    "random_point",
    "random_targets",
    "reference_forward",
    "reference_loss_and_grads",
    "rel_error",
    "symbolic_rows",
    "torch_reference",
    "verify_network",
]
