"""Stage 5, verification: a module's gradients against references that share none of its code.

``verify_network`` loads a module implementing CONTRACT section 4 (freshly generated, or
any file: a hand-written backprop, an edited generated file) and checks it at a random
point against

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

import importlib.util
import math
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
import sympy as sp

from symgrad.errors import SpecError
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
    X = rng.normal(0.0, 1.0, (batch, *(net.input_shape or (net.size(net.input_width),))))
    Y = random_targets(net, batch, rng)
    return params, X, Y


# -- an independent reference implementation (torch or jax) ----------------------------


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
        from symgrad.backends.codegen import load_module
        from symgrad.pipeline import generate

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
