"""Stage 5, verification: a module's gradients against references that share none of its code.

``verify_network`` loads a module implementing the generated module's interface
(freshly generated, or any file: a hand-written backprop, an edited generated file) and
checks it at a random point against

- central finite differences (a 4th-order 5-point stencil, float64) of ``module.loss``;
- PyTorch autograd, and JAX autograd, of an *independent* implementation of the network
  built from the Network IR: dense stages and named activations/losses are torch (or
  jax) library calls; custom activations, map layers and custom losses are evaluated
  from the stage's SymPy component form with the library's tensor ops over the index
  grid (``autograd_reference.py``), so autograd, not symgrad, does the differentiating.

It also checks the API (names, shapes, dtypes of the gradients, float32 in gives float32
out) and that the inputs are not modified. With ``symbolic=True`` the derivation itself is
checked: every step's matrix form against its component form, evaluated numerically.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import sympy as sp

from symgrad.errors import SpecError
from symgrad.ir.layers import y_s
from symgrad.ir.network import Network
from symgrad.verify.reference import (
    backend,
    jax_reference,
    reference_forward,
    reference_loss_and_grads,
    torch_reference,
)

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
    """Import the Python file at ``path`` as a fresh module (never cached in sys.modules).

    In-process: :func:`verify_network` runs a user's module in a child process instead
    (:class:`ModuleProcess`); this is what that child calls.
    """
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


#: Default wall-clock limit (seconds) for everything a user's module does under verify.
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Opaque:
    """A value the module returned that is not plain data (shown by its type name)."""

    type_name: str

    def __repr__(self) -> str:
        return f"<{self.type_name} object>"


def _plain(value: object, depth: int = 0) -> object:
    """``value`` reduced to plain data (numbers, str, arrays of numbers, dicts, lists,
    tuples) before it leaves the child: the parent never unpickles the module's objects."""
    if depth > 8:
        return Opaque(type(value).__name__)
    if value is None or isinstance(value, bool | int | float | complex | str):
        return value
    if isinstance(value, np.generic):
        return value.item() if value.dtype.kind in "biufc" else Opaque(type(value).__name__)
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biufc":
            return np.array(value)
        return Opaque(f"ndarray of {value.dtype}")
    if isinstance(value, dict):
        return {_plain(k, depth + 1): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v, depth + 1) for v in value)
    return Opaque(type(value).__name__)


def _copies(args: tuple) -> tuple:
    """Copies of the array arguments (dicts of arrays too); other arguments as they are."""
    return tuple(
        {k: np.array(v, copy=True) for k, v in a.items()}
        if isinstance(a, dict)
        else np.array(a, copy=True)
        if isinstance(a, np.ndarray)
        else a
        for a in args
    )


def _changed(args: tuple, copies: tuple) -> list[str]:
    out: list[str] = []
    for nm, a, c in zip(("params", "X", "Y"), args, copies, strict=False):
        if isinstance(a, dict):
            out += [k for k in a if not np.array_equal(a[k], c.get(k))]
        elif isinstance(a, np.ndarray) and not np.array_equal(a, c):
            out.append(nm)
    return out


def _serve(path: str, fd: int) -> None:
    """The child: import the module, then answer calls over the connection ``fd``.

    Replies are ``("ok", plain value, modified inputs)`` or ``("raise", description)``;
    every exception of the module, SystemExit and KeyboardInterrupt included, is a reply.
    """
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    try:
        mod = load_module_file(path)
    except BaseException as exc:  # noqa: BLE001 - SystemExit at import is a result too
        conn.send(("raise", _describe_exc(exc)))
        return
    attrs = {k: _plain(getattr(mod, k)) for k in API if hasattr(mod, k) and k[0].isupper()}
    funcs = [k for k in API if hasattr(mod, k) and callable(getattr(mod, k))]
    conn.send(("ok", (attrs, funcs), []))
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        kind, name, args = request
        try:
            if kind == "losses":  # finite differences: many loss values in one request
                params, X, Y, moves = args
                values = []
                for pname, flat, delta in moves:
                    trial = dict(params)
                    arr = params[pname].copy()
                    arr.reshape(-1)[flat] += delta
                    trial[pname] = arr
                    values.append(_plain(mod.loss(trial, X.copy(), Y.copy())))
                conn.send(("ok", values, []))
                continue
            copies = _copies(args)
            result = getattr(mod, name)(*args)
            conn.send(("ok", _plain(result), _changed(args, copies)))
        except BaseException as exc:  # noqa: BLE001 - sys.exit() in the module is a failure
            conn.send(("raise", _describe_exc(exc)))


class ModuleError(Exception):
    """The module under test raised, or its process ended or timed out."""


class ModuleProcess:
    """A user's module imported in a child process, called over a pipe, with a time limit.

    The module can end its process (``sys.exit``, ``os._exit``), hang or return garbage:
    each is a :class:`ModuleError` with a one-line message, never a false pass. The
    attributes (``PARAM_NAMES`` ...) are copies of plain data; the functions are proxies.
    """

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT):
        from multiprocessing.connection import Connection

        self.path = path
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.dead: str | None = None
        parent, child = socket.socketpair()
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        code = (
            "import sys\nfrom symgrad.verify.verify import _serve\n"
            "_serve(sys.argv[1], int(sys.argv[2]))"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, path, str(child.fileno())],
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
            # A module may print or warn: none of it may reach the report.
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        child.close()
        self.conn = Connection(parent.detach())
        self.attrs: dict[str, object] = {}
        self.funcs: list[str] = []
        loaded = self._receive("import")
        self.attrs, self.funcs = loaded  # type: ignore[misc]

    def _remaining(self) -> float:

        return self.deadline - time.monotonic()

    def _receive(self, what: str) -> object:
        if self.dead:
            raise ModuleError(self.dead)
        left = self._remaining()
        try:
            ready = left > 0 and self.conn.poll(left)
            reply = self.conn.recv() if ready else None
        except (EOFError, OSError):
            reply = None
            ready = True
        if reply is None:
            self.close()
            if not ready:
                self.dead = f"{what} did not finish within the time limit ({self.timeout:g} s)"
            else:
                code = self.proc.returncode
                how = f"exit code {code}" if code is not None and code >= 0 else f"signal {-code}"
                self.dead = f"{what} ended the module's process ({how})"
            raise ModuleError(self.dead)
        if reply[0] == "raise":
            raise ModuleError(f"{what} raised {reply[1]}")
        self.last_changed = reply[2]
        return reply[1]

    def call(self, name: str, *args: object) -> object:
        """``module.name(*args)`` in the child; inputs it modified are in ``last_changed``."""
        if self.dead:
            raise ModuleError(self.dead)
        with contextlib.suppress(OSError):  # a dead child: _receive says how it ended
            self.conn.send(("call", name, args))
        return self._receive(name)

    def losses(self, params, X, Y, moves) -> list[object]:
        """``module.loss`` at ``params`` with each ``(name, flat index, delta)`` applied."""
        if self.dead:
            raise ModuleError(self.dead)
        with contextlib.suppress(OSError):  # a dead child: _receive says how it ended
            self.conn.send(("losses", "loss", (params, X, Y, moves)))
        return self._receive("loss")  # type: ignore[return-value]

    def close(self) -> None:
        """End the child (it may be hanging) and release the pipe."""

        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        with contextlib.suppress(OSError):
            self.conn.close()


# -- random inputs ---------------------------------------------------------------------

#: Target domains (``--targets``, the spec's ``targets``): what Y is drawn from.
TARGET_DOMAINS = ("real", "positive", "unit", "onehot", "probabilities")


def target_domain(net: Network, targets: str | None = None) -> str:
    """The domain Y is drawn from: ``targets`` if given, else the spec's ``targets`` field,
    else what the loss needs (probabilities for cross-entropy, (0, 1) for bce, else real)."""
    chosen = targets or getattr(net, "targets", None)
    if chosen and chosen != "auto":
        if chosen not in TARGET_DOMAINS:
            raise SpecError(
                f"unknown target domain {chosen!r} (choose from {', '.join(TARGET_DOMAINS)})",
                field="--targets",
            )
        return chosen
    if net.loss.requires_softmax or any(k == "sum_y_is_1" for k, _ in net.loss.identities):
        return "probabilities"
    elem = net.loss.elementwise
    if elem is not None and elem.has(sp.log) and elem.has(1 - y_s):  # y and 1 - y: BCE-like
        return "unit"
    return "real"


def random_targets(
    net: Network, n: int, rng: np.random.Generator, targets: str | None = None
) -> np.ndarray:
    """Targets from the network's target domain (:func:`target_domain`)."""
    C = net.size(net.output_width)
    domain = target_domain(net, targets)
    if domain == "probabilities":
        y = rng.uniform(0.05, 1.0, (n, C))
        return y / y.sum(axis=1, keepdims=True)
    if domain == "onehot":
        return np.eye(C)[rng.integers(0, C, n)]
    if domain == "unit":
        return rng.uniform(0.05, 0.95, (n, C))
    if domain == "positive":
        return rng.uniform(0.1, 2.0, (n, C))
    return rng.normal(0.0, 1.0, (n, C))


def random_point(
    net: Network,
    mod: ModuleType | ModuleProcess | _Local | None,
    seed: int,
    batch: int,
    targets: str | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Float64 parameters (from ``mod.init_params`` plus noise), inputs X and targets Y."""
    rng = np.random.default_rng(seed + 12345)
    if isinstance(mod, ModuleProcess | _Local):
        base = mod.call("init_params", seed, np.float64)
    elif mod is not None:
        base = mod.init_params(seed, np.float64)
    else:
        base = {p.name: rng.uniform(-0.5, 0.5, net.shape(p)) for p in net.params}
    if not isinstance(base, dict):
        raise ModuleError(f"init_params returned {type(base).__name__}, expected a dict")
    params = {}
    for k, v in base.items():
        arr = np.asarray(v)
        if arr.dtype.kind not in "biuf":
            raise ModuleError(f"init_params returned {k!r} of dtype {arr.dtype}")
        params[str(k)] = arr.astype(np.float64)
    # A little noise: parameters initialised to constants (zeros, ones) hide transposes.
    for k in params:
        # (np.asarray: a 0-dim parameter plus noise is a NumPy scalar, not an array)
        params[k] = np.asarray(params[k] + rng.normal(0.0, 0.1, params[k].shape))
    X = rng.normal(0.0, 1.0, (batch, *(net.input_shape or (net.size(net.input_width),))))
    Y = random_targets(net, batch, rng, targets)
    return params, X, Y


# -- finite differences ----------------------------------------------------------------


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
    """Central 5-point (4th-order) finite differences of ``loss`` in float64, every element.

    The step is ``h_rel * max(1, |p|)``. With ``hint`` (the gradient under test), an
    element whose difference disagrees is recomputed with steps 10 and 100 times smaller
    and the closest value is kept: a step that straddles a kink (relu) is then avoided,
    while a wrong gradient disagrees at every step. (:func:`verify_network` uses the
    bounded, batched :func:`sampled_differences` instead.)
    """
    base = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    X = np.array(X, dtype=np.float64)
    Y = np.array(Y, dtype=np.float64)

    def losses(moves: list[tuple[str, int, float]]) -> list[float]:
        out = []
        for name, flat, delta in moves:
            trial = dict(base)
            arr = base[name].copy()
            arr.reshape(-1)[flat] += delta
            trial[name] = arr
            out.append(float(loss(trial, X.copy(), Y.copy())))
        return out

    coords = {k: np.arange(v.size) for k, v in base.items()}
    got = sampled_differences(losses, base, coords, h_rel=h_rel, hint=hint, tol=tol)
    return {k: got[k][0].reshape(base[k].shape) for k in base}


_EPS = float(np.finfo(np.float64).eps)
#: Finite-difference noise estimate: this many float64 roundings of the loss per step
#: (the module's own loss carries rounding errors of many operations).
NOISE_ULPS = 256.0


def _central(f: Sequence[float], h: float) -> tuple[float, float]:
    """5-point central difference from f(-2h), f(-h), f(h), f(2h), and its noise level."""
    m2, m1, p1, p2 = f
    g = (-p2 + 8 * p1 - 8 * m1 + m2) / (12 * h)
    return g, NOISE_ULPS * _EPS * max(abs(v) for v in f) * 1.5 / h


def _one_sided(f0: float, f1: float, f2: float, h: float) -> tuple[float, float]:
    """2nd-order one-sided difference from f(0), f(h), f(2h) (h may be negative)."""
    g = (-3 * f0 + 4 * f1 - f2) / (2 * h)
    return g, NOISE_ULPS * _EPS * max(abs(f0), abs(f1), abs(f2)) * 4 / abs(h)


def sampled_differences(
    losses: Callable[[list[tuple[str, int, float]]], list[float]],
    params: Mapping[str, np.ndarray],
    coords: Mapping[str, np.ndarray],
    *,
    h_rel: float = 1e-3,
    hint: Mapping[str, np.ndarray] | None = None,
    tol: float = TOL_FD,
    kinks: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Finite differences at the flat indices ``coords[name]`` of each parameter.

    ``losses(moves)`` evaluates the loss with each ``(name, flat index, delta)`` applied to
    ``params`` (one batch: one round trip to a module's process). Returns, per parameter,
    the differences and their noise estimates (the absolute error floor of a comparison).

    With ``hint`` (the gradient under test), a coordinate that disagrees is retried with
    central steps 10 and 100 times smaller and, when the network has kinks (``kinks``:
    relu, abs, max ... found in its expressions), with one-sided steps on either side:
    near a kink one side is clean. The value closest to the hint is kept; a wrong
    gradient disagrees at every step.
    """
    base = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}

    def steps(name: str, flat: int, h: float, one_sided: bool) -> list[tuple[str, int, float]]:
        moves = [(name, flat, d) for d in (-2 * h, -h, h, 2 * h)]
        if one_sided:
            moves.append((name, flat, 0.0))
        return moves

    plan: list[tuple[str, int, float]] = []
    for name, idx in coords.items():
        flat_v = base[name].reshape(-1)
        for flat in idx:
            h = h_rel * max(1.0, abs(float(flat_v[flat])))
            plan += steps(name, int(flat), h, False)
    values = _floats(losses(plan))
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    pos = 0
    for name, idx in coords.items():
        g = np.zeros(len(idx))
        noise = np.zeros(len(idx))
        for k in range(len(idx)):
            flat_v = base[name].reshape(-1)
            h = h_rel * max(1.0, abs(float(flat_v[idx[k]])))
            g[k], noise[k] = _central(values[pos : pos + 4], h)
            pos += 4
        out[name] = (g, noise)
    if hint is None:
        return out
    # Retries, all in one more batch.
    retry: list[tuple[str, int, int, float]] = []
    for name, idx in coords.items():
        if name not in hint or np.shape(hint[name]) != base[name].shape:
            continue
        want = np.asarray(hint[name], dtype=np.float64).reshape(-1)[idx]
        g, noise = out[name]
        scale = max(float(np.max(np.abs(g))) if g.size else 0.0, REL_FLOOR)
        for kk in np.flatnonzero(np.abs(want - g) > 0.1 * tol * scale + noise):
            flat = int(idx[kk])
            h = h_rel * max(1.0, abs(float(base[name].reshape(-1)[flat])))
            retry.append((name, int(kk), flat, h))
    if not retry:
        return out
    plan = []
    for name, _, flat, h in retry:
        for div in (10.0, 100.0, 1000.0):
            plan += steps(name, flat, h / div, kinks)
    values = _floats(losses(plan))
    per = 5 if kinks else 4
    pos = 0
    for name, k, flat, h in retry:
        g, noise = out[name]
        target = float(np.asarray(hint[name], dtype=np.float64).reshape(-1)[flat])
        tries = [(g[k], noise[k])]
        for div in (10.0, 100.0, 1000.0):
            f = values[pos : pos + per]
            pos += per
            hh = h / div
            tries.append(_central(f[:4], hh))
            if kinks:  # f = f(-2h), f(-h), f(h), f(2h), f(0)
                tries.append(_one_sided(f[4], f[2], f[3], hh))
                tries.append(_one_sided(f[4], f[1], f[0], -hh))
        g[k], noise[k] = min(tries, key=lambda t: abs(t[0] - target) - t[1])
    return out


def _floats(values: Sequence[object]) -> list[float]:
    out = []
    for v in values:
        f = _real_scalar(v)
        if f is None:
            raise ModuleError(f"loss returned {_show_value(v)}, expected a real number")
        out.append(f)
    return out


def _real_scalar(value: object) -> float | None:
    """``value`` as a float if it is one real number (a 0-d or one-element array too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iuf":
        return float(value.reshape(()))
    return None


def _show_value(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


#: Functions with a kink (a point where the derivative jumps): found in the expressions.
def _kink_funcs() -> tuple[type, ...]:
    from symgrad.ir import ops as F

    names = ("relu", "leaky_relu", "step")
    own = tuple(getattr(F, n) for n in names if hasattr(F, n))
    return (*own, sp.Abs, sp.Max, sp.Min, sp.Heaviside, sp.sign, sp.Piecewise, sp.floor)


def has_kinks(net: Network) -> bool:
    """Whether any stage or the loss contains a function with a kink (relu, leaky_relu,
    step, abs, max, min, sign, piecewise), whatever the layer is called."""
    kinds = _kink_funcs()
    exprs = [s.body for s in net.stages] + [net.loss.body]
    return any(e.atoms(*kinds) for e in exprs)


#: Parameters with more elements than this are checked at a random sample of this many
#: coordinates by finite differences (autograd references compare every element).
FD_COORDINATES = 32


def fd_coordinates(net: Network, seed: int, limit: int = FD_COORDINATES) -> dict[str, np.ndarray]:
    """The flat indices checked by finite differences: every element of a small parameter,
    ``limit`` random ones (and the first and last) of a large one."""
    rng = np.random.default_rng(seed + 777)
    out = {}
    for p in net.params:
        size = int(np.prod(net.shape(p), dtype=np.int64))
        if size <= limit:
            out[p.name] = np.arange(size)
        else:
            pick = 1 + rng.choice(size - 2, limit - 2, replace=False)
            out[p.name] = np.unique(np.concatenate([[0, size - 1], pick]))
    return out


# -- the verifier -----------------------------------------------------------------------


def _describe_exc(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Local:
    """symgrad's own generated module, called in-process (same interface as ModuleProcess)."""

    def __init__(self, mod: ModuleType):
        self.mod = mod
        self.attrs = {k: getattr(mod, k) for k in API if hasattr(mod, k) and k[0].isupper()}
        self.funcs = [k for k in API if callable(getattr(mod, k, None))]
        self.last_changed: list[str] = []

    def call(self, name: str, *args: object) -> object:
        copies = _copies(args)
        try:
            out = getattr(self.mod, name)(*copies)
        except Exception as exc:
            raise ModuleError(f"{name} raised {_describe_exc(exc)}") from None
        self.last_changed = _changed(copies, args)
        return out

    def losses(self, params, X, Y, moves) -> list[object]:
        out: list[object] = []
        for pname, flat, delta in moves:
            trial = dict(params)
            arr = params[pname].copy()
            arr.reshape(-1)[flat] += delta
            trial[pname] = arr
            out.append(self.call("loss", trial, X, Y))
        return out

    def close(self) -> None:
        pass


def _check_api(mod: _Local | ModuleProcess, net: Network, report: VerifyReport) -> bool:
    missing = [a for a in API if a not in mod.attrs and a not in mod.funcs]
    if not report.check(
        "api", not missing, f"module lacks {', '.join(missing)} (the generated module's interface)"
    ):
        return False
    not_callable = [a for a in API[2:] if a not in mod.funcs]
    if not report.check(
        "api callables", not not_callable, f"not callable: {', '.join(not_callable)}"
    ):
        return False
    raw_names = mod.attrs["PARAM_NAMES"]
    if not (isinstance(raw_names, tuple | list) and all(isinstance(n, str) for n in raw_names)):
        report.check(
            "PARAM_NAMES", False, f"PARAM_NAMES is {_show_value(raw_names)}, not a tuple of str"
        )
        return False
    names = tuple(raw_names)
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
    raw_shapes = mod.attrs["PARAM_SHAPES"]
    if not isinstance(raw_shapes, dict):
        report.check(
            "PARAM_SHAPES", False, f"PARAM_SHAPES is {_show_value(raw_shapes)}, not a dict"
        )
        return False
    ok = True
    for p in net.params:
        got_raw = raw_shapes.get(p.name, ())
        try:
            got = tuple(int(v) for v in got_raw)
        except (TypeError, ValueError):
            got = None
        exp = net.shape(p)
        ok &= report.check(
            f"shape {p.name}",
            got == exp,
            f"PARAM_SHAPES[{p.name!r}] is {got_raw!r}, the network has {exp}",
        )
    return ok


def _check_grads_structure(report: VerifyReport, net: Network, grads, dtype: np.dtype) -> bool:
    """Keys, shapes and real numbers (False stops the numeric checks); dtypes are reported."""
    if not report.check("grads dict", isinstance(grads, dict), "grads is not a dict"):
        return False
    want, got = set(net.param_names), set(grads)
    if not report.check(
        "grads keys",
        got == want,
        f"grads keys {sorted(map(str, got))} != PARAM_NAMES {sorted(want)}",
    ):
        return False
    ok = True
    for p in net.params:
        g = grads[p.name]
        if not (isinstance(g, np.ndarray | int | float) and np.asarray(g).dtype.kind in "biuf"):
            ok &= report.check(
                f"grad type {p.name}",
                False,
                f"{p.name}: gradient is {_show_value(g)}, expected a real array",
            )
            continue
        g = np.asarray(g)
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


def compare(
    got: np.ndarray | float, ref: np.ndarray | float, tol: float, abs_floor: float
) -> tuple[float, float, bool]:
    """``(max abs err, max rel err, ok)``.

    The relative error is ``max |got - ref| / max |ref|`` (``REL_FLOOR`` at least); the
    check passes when the absolute error is within ``tol`` times the reference's largest
    magnitude or within ``abs_floor`` (the reference's own noise, and a floor relative to
    the whole gradient's scale): a gradient that is exactly zero (a dead relu, a vanishing
    deep net) is compared with the noise of its reference, not with itself.
    """
    a, rel = rel_error(got, ref)
    if not math.isfinite(a):
        return a, rel, False
    r = np.asarray(ref, dtype=np.float64)
    scale = float(np.max(np.abs(r))) if r.size else 0.0
    return a, rel, a <= max(tol * scale, abs_floor)


def verify_network(
    net: Network,
    module: str | None = None,
    dtype: str = "float64",
    against: tuple[str, ...] = REFERENCES,
    symbolic: bool = False,
    seed: int = 0,
    batch: int = 4,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    targets: str | None = None,
    fd_coords: int = FD_COORDINATES,
) -> VerifyReport:
    """Verify a module's loss and gradients for ``net`` at a random point.

    Args:
        net: the network (concrete widths).
        module: a path to a Python file implementing the generated module's interface; None verifies
            freshly generated code. A file is imported and called in a child process:
            whatever it does (exits, hangs, returns garbage) is a failure in the report.
        dtype: "float64", or "float32" to run the module in float32 (compared with the
            float64 references at the float32-rounded point, rel tol 1e-3).
        against: references among "fd", "torch", "jax" (missing libraries are skipped).
        symbolic: also check every derivation step's matrix form against its component form.
        seed: random seed of the point (parameters from ``init_params(seed)`` plus noise).
        batch: number of samples.
        timeout: seconds the module (import and every call) may take in all.
        targets: the target domain (:data:`TARGET_DOMAINS`); default from the spec/loss.
        fd_coords: finite differences check at most this many coordinates per parameter.
    """
    if dtype not in ("float64", "float32"):
        raise SpecError(f"unknown dtype {dtype!r} (choose float64 or float32)", field="--dtype")
    bad = [a for a in against if a not in REFERENCES]
    if bad:
        raise SpecError(f"unknown reference {bad[0]!r} (choose from {', '.join(REFERENCES)})")
    if batch < 1:
        raise SpecError("batch must be a positive integer", field="--batch")
    coupled = [s.layer for s in net.stages if s.sample is not None]
    if batch < 2 and coupled:
        # one sample is its own batch mean: the normalised value is 0 and the reference
        # (torch's batch norm in training mode) refuses it; nothing would be tested
        raise SpecError(
            f"layer {coupled[0]} couples the samples (batch statistics): verify it with "
            "a batch of at least 2",
            field="--batch",
        )
    if not timeout > 0:
        raise SpecError("the time limit must be positive", field="--timeout")
    if not net.is_concrete:
        raise SpecError("every width must be a concrete integer to verify")
    target_domain(net, targets)  # an unknown domain is bad input, before any work
    report = VerifyReport(net.name, module or "<generated>", dtype, seed, batch)

    mod: _Local | ModuleProcess
    if module is None:
        from symgrad.backends.codegen import load_module
        from symgrad.pipeline import generate

        mod = _Local(load_module(generate(net), f"symgrad_verify_{net.name}"))
    else:
        if not Path(module).is_file():
            raise SpecError("no such file", file=str(module))
        try:
            mod = ModuleProcess(module, timeout)
        except ModuleError as exc:
            report.check(
                "import", False, f"cannot import {module}: {exc}".replace("import raised ", "")
            )
            return report
    try:
        if symbolic:
            report.symbolic.extend(symbolic_rows(net, seed))
        _verify_module(mod, net, report, dtype, against, seed, batch, targets, fd_coords)
    except ModuleError as exc:
        report.check("module", False, str(exc))
    finally:
        mod.close()
    return report


def _verify_module(
    mod: _Local | ModuleProcess,
    net: Network,
    report: VerifyReport,
    dtype: str,
    against: tuple[str, ...],
    seed: int,
    batch: int,
    targets: str | None,
    fd_coords: int,
) -> None:
    if not _check_api(mod, net, report):
        return
    params64, X64, Y64 = random_point(net, mod, seed, batch, targets)
    shapes = {k: v.shape for k, v in params64.items()}
    want = {p.name: net.shape(p) for p in net.params}
    if not report.check(
        "init_params",
        shapes == want,
        f"init_params returned {shapes}, expected the parameters {want}",
    ):
        return
    np_dtype = np.dtype(dtype)
    # The module's point, and the same point in float64 for the references.
    params = {k: v.astype(np_dtype) for k, v in params64.items()}
    X, Y = X64.astype(np_dtype), Y64.astype(np_dtype)
    params64 = {k: v.astype(np.float64) for k, v in params.items()}
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)

    # Each call gets its own copies, compared afterwards: a module that modifies its
    # inputs is reported, and cannot spoil the point the other calls see.
    changed: dict[str, None] = {}

    def call(what, *args):
        try:
            out = mod.call(what, *args)
        except ModuleError as exc:
            if mod_dead(mod):
                raise
            report.check(what, False, str(exc))
            return False, None
        changed.update(dict.fromkeys(mod.last_changed))
        return True, out

    ok1, res = call("loss_and_grads", params, X, Y)
    ok2, yhat = call("forward", params, X)
    ok3, lval = call("loss", params, X, Y)
    report.check(
        "inputs unchanged", not changed, f"the module modified its inputs: {', '.join(changed)}"
    )
    if not ok1:
        return
    if not (isinstance(res, tuple | list) and len(res) == 2):
        report.check(
            "loss_and_grads",
            False,
            f"loss_and_grads returned {_show_value(res)}, expected (loss, grads)",
        )
        return
    raw_value, grads = res
    value = _real_scalar(raw_value)
    if not report.check(
        "loss value",
        value is not None,
        f"loss_and_grads returned a loss that is {_show_value(raw_value)}, not a real number",
    ):
        return
    assert value is not None
    if not _check_grads_structure(report, net, grads, np_dtype):
        return
    grads = {k: np.asarray(v) for k, v in grads.items()}
    C = net.size(net.output_width)
    if ok2:
        y = yhat if isinstance(yhat, np.ndarray) else None
        ok2 = report.check(
            "forward shape",
            y is not None and y.shape == (batch, C) and y.dtype.kind in "biuf",
            f"forward returned {_show_value(yhat)}, expected shape {(batch, C)}",
        )
        if ok2 and y is not None:
            report.check(
                "forward dtype",
                y.dtype == np_dtype,
                f"forward returned dtype {y.dtype}, expected {np_dtype}",
            )
    if ok3:
        lv = _real_scalar(lval)
        if report.check(
            "loss value", lv is not None, f"loss() returned {_show_value(lval)}, not a number"
        ):
            assert lv is not None
            a, r = rel_error(lv, value)
            report.check(
                "loss == loss_and_grads",
                r <= 1e-12 or a <= 1e-14,
                f"loss() = {lv!r} but loss_and_grads() gives {value!r}",
            )
    finite = np.isfinite(value) and all(
        np.all(np.isfinite(g.astype(np.float64))) for g in grads.values()
    )
    report.check("finite", bool(finite), "loss or gradients are not finite")

    f32 = np_dtype == np.float32
    refs: list[tuple[str, float, Any, Any, Any, dict[str, Any]]] = []
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
        ref_y, ref_l, ref_g = got
        tol = TOL_FLOAT32 if f32 else TOL_AUTOGRAD
        refs.append((name, tol, ref_y, ref_l, ref_g, {}))
    if "fd" in against:
        coords = fd_coordinates(net, seed, fd_coords)
        hint = {k: v.astype(np.float64) for k, v in grads.items()}
        tol = TOL_FLOAT32 if f32 else TOL_FD

        def losses(moves):
            return mod.losses(params64, X64, Y64, moves)

        try:
            fd = sampled_differences(
                losses, params64, coords, hint=hint, tol=tol, kinks=has_kinks(net)
            )
        except ModuleError as exc:
            if mod_dead(mod):
                raise
            report.check("fd", False, f"finite differences: {exc}")
        else:
            ref_g = {k: v[0] for k, v in fd.items()}
            noise = {k: float(np.max(v[1])) if v[1].size else 0.0 for k, v in fd.items()}
            refs.append(("fd", tol, None, None, ref_g, {"coords": coords, "noise": noise}))

    for name, tol, ref_y, ref_l, ref_g, extra in refs:
        if ref_l is not None:
            a, r, ok = compare(np.float64(value), np.float64(ref_l), tol, 0.0)
            report.rows.append(Row("loss", name, a, r, tol, ok))
        if ref_y is not None and ok2:
            a, r, ok = compare(np.asarray(yhat, dtype=np.float64), ref_y, tol, 0.0)
            report.rows.append(Row("yhat", name, a, r, tol, ok))
        sub = extra.get("coords")
        pairs = {}
        for p in net.param_names:
            g = grads[p].astype(np.float64)
            if sub is not None and len(sub[p]) < g.size:  # a sample of the coordinates
                g = g.reshape(-1)[sub[p]]
            pairs[p] = (g, np.asarray(ref_g[p], dtype=np.float64).reshape(g.shape))
        # The scale of the whole gradient: a parameter whose gradient is ~0 is compared
        # with a floor relative to it (plus the finite differences' own noise).
        overall = max([float(np.max(np.abs(v))) for _, v in pairs.values() if v.size] + [0.0])
        for p, (gp, rp) in pairs.items():
            floor = 1e-2 * tol * overall + extra.get("noise", {}).get(p, 0.0)
            a, rel, ok = compare(gp, rp, tol, floor)
            note = "" if ok else _diagnose(gp, rp, tol, floor)
            report.rows.append(Row(p, name, a, rel, tol, ok, note))
    if not refs:
        report.check(
            "references", False, "no reference available (" + "; ".join(report.skipped) + ")"
        )


def mod_dead(mod: _Local | ModuleProcess) -> bool:
    """Whether the module's process has ended or timed out (nothing more can be asked)."""
    return isinstance(mod, ModuleProcess) and mod.dead is not None


def _diagnose(got: np.ndarray, ref: np.ndarray, tol: float, floor: float = 0.0) -> str:
    """A hint at the kind of mistake: a sign, a transpose, a constant factor.

    Only for a reference that is clearly non-zero (above the comparison's floor), and only
    when the whole error is explained by the hint (a constant factor, not a varying one).
    """
    if got.shape != ref.shape:
        return f"shape {got.shape} vs {ref.shape}"
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    if scale <= max(10 * floor, 1e3 * REL_FLOOR * tol):
        return ""

    def close(a):
        return float(np.max(np.abs(a - ref))) <= 10 * tol * scale

    if close(-got):
        return "sign flipped"
    if got.ndim == 2 and got.shape[0] == got.shape[1] and close(got.T):
        return "transposed"
    denom = float(np.vdot(got, got))
    if denom > 0:
        c = float(np.vdot(got, ref)) / denom
        if close(c * got) and abs(c - 1) > 1e-6 and abs(c) > 1e-6:
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

    from symgrad.pipeline import derive
    from symgrad.verify.evaluation import run_derivation

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
    "backend",
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
