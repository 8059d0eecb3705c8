"""Stage 8, verification: a module's gradients against references that share none of its code.

``verify_network`` loads a module implementing the generated module's interface (freshly generated,
or any file: a hand-written backprop, an edited generated file) in a child process of its
own (:mod:`symgrad.verify.module_process`) and checks it at a random point against

- central finite differences (a 4th-order 5-point stencil, float64) of ``module.loss``
  (:mod:`symgrad.verify.differences`);
- PyTorch autograd, and JAX autograd, of an *independent* implementation of the network
  built from the Network IR (:mod:`symgrad.verify.reference`), so autograd, not symgrad,
  does the differentiating.

It also checks the API (:mod:`symgrad.verify.api_checks`), that the inputs are not
modified, and that the module is right on batches of other sizes and repeats itself
(:mod:`symgrad.verify.calls`). With ``symbolic=True`` the derivation itself is checked
(:mod:`symgrad.verify.symbolic`). Running out of memory or time is a
:class:`~symgrad.budgets.ResourceError`, a loss that is not finite at the drawn targets a
:class:`LossDomainError`: neither is reported as a wrong gradient.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from symgrad import budgets
from symgrad.errors import SpecError
from symgrad.ir.network import Network
from symgrad.verify.api_checks import check_api, check_grads_structure
from symgrad.verify.calls import check_more_calls, choose_batches
from symgrad.verify.differences import (
    FD_COORDINATES,
    fd_coordinates,
    finite_differences,
    has_kinks,
    real_scalar,
    sampled_differences,
    show_value,
)
from symgrad.verify.module_process import (
    API,
    DEFAULT_TIMEOUT,
    LocalModule,
    ModuleError,
    ModuleProcess,
    ModuleResourceError,
)
from symgrad.verify.module_process import load_module_file as _load_module_file
from symgrad.verify.points import TARGET_DOMAINS, random_point, random_targets, target_domain
from symgrad.verify.reference import (
    backend,
    jax_reference,
    reference_forward,
    reference_loss_and_grads,
    torch_reference,
)
from symgrad.verify.report import (
    REL_FLOOR,
    TOL_AUTOGRAD,
    TOL_FD,
    TOL_FLOAT32,
    TOL_SYMBOLIC,
    Row,
    VerifyReport,
    compare,
    diagnose,
    rel_error,
)
from symgrad.verify.symbolic import concrete_sizes, symbolic_rows

REFERENCES = ("fd", "torch", "jax")
#: Networks with more parameter elements than this get progress lines (``progress``).
PROGRESS_PARAMETERS = 100_000
#: ... or whose arrays verify estimates at more than this (bytes).
PROGRESS_BYTES = 64 << 20

# Former names, kept for callers of this module.
_Local = LocalModule
_diagnose = diagnose

#: How each target domain is drawn (for messages).
DRAWS = {
    "real": "Y ~ N(0, 1)",
    "positive": "Y ~ U(0.1, 2)",
    "unit": "Y ~ U(0.05, 0.95)",
    "onehot": "Y one-hot",
    "probabilities": "Y rows of probabilities",
}


class LossDomainError(SpecError):
    """The reference loss is not finite at the drawn targets: bad input, not a mismatch."""


def load_module_file(path: str | Path):
    """Import the Python file at ``path`` as a fresh module (in this process)."""
    if not Path(path).is_file():
        raise SpecError("no such file", file=str(path))
    return _load_module_file(path)


def mod_limit(mod: LocalModule | ModuleProcess) -> str:
    """The time the module has left, for progress lines."""
    deadline = getattr(mod, "deadline", None)
    return "none" if deadline is None else f"{deadline - time.monotonic():.0f} s left"


def mod_dead(mod: LocalModule | ModuleProcess) -> bool:
    """Whether the module's process has ended or timed out (nothing more can be asked)."""
    return mod.dead is not None


def _check_arguments(
    net: Network, dtype: str, against: tuple[str, ...], batch: int | None, timeout: float
) -> list[int]:
    """Bad arguments are bad input (SpecError); returns the layers that couple samples."""
    if dtype not in ("float64", "float32"):
        raise SpecError(f"unknown dtype {dtype!r} (choose float64 or float32)", field="--dtype")
    bad = [a for a in against if a not in REFERENCES]
    if bad:
        raise SpecError(f"unknown reference {bad[0]!r} (choose from {', '.join(REFERENCES)})")
    if batch is not None and batch < 1:
        raise SpecError("batch must be a positive integer", field="--batch")
    coupled = [s.layer for s in net.stages if s.sample is not None]
    if batch is not None and batch < 2 and coupled:
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
    return coupled


def verify_network(
    net: Network,
    module: str | None = None,
    dtype: str = "float64",
    against: tuple[str, ...] = REFERENCES,
    symbolic: bool = False,
    seed: int = 0,
    batch: int | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    targets: str | None = None,
    fd_coords: int = FD_COORDINATES,
    progress: Callable[[str], None] | None = None,
) -> VerifyReport:
    """Verify a module's loss and gradients for ``net`` at a random point, then on batches
    of other sizes and once more at the first point.

    Args:
        net: the network (concrete widths).
        module: a path to a Python file implementing the generated module's interface; None verifies
            freshly generated code. Either runs in a child process (its own session):
            whatever it does (exits, hangs, forks, returns garbage) is a failure in the
            report, and every process it started is killed when verify ends.
        dtype: "float64", or "float32" to run the module in float32 (compared with the
            float64 references at the float32-rounded point, rel tol 1e-3).
        against: references among "fd", "torch", "jax" (missing libraries are skipped).
        symbolic: also check every derivation step's matrix form against its component form.
        seed: random seed of the point (parameters from ``init_params(seed)`` plus noise).
        batch: samples of the first call (default: a size that is no width of the network).
        timeout: seconds the module (import and every call) may take in all.
        targets: the target domain (:data:`TARGET_DOMAINS`); default from the spec/loss.
        fd_coords: finite differences check at most this many coordinates per parameter.
        progress: called with a line of progress (big networks only).

    Raises:
        SpecError: bad arguments, a budget exceeded, a loss not finite at the targets.
        ResourceError: the module or a reference ran out of memory or time.
    """
    coupled = _check_arguments(net, dtype, against, batch, timeout)
    target_domain(net, targets)  # an unknown domain is bad input, before any work
    budgets.check_sizes(net)
    batch, extra = choose_batches(net, batch, bool(coupled))
    budgets.check_verify_memory(net, batch)
    report = VerifyReport(net.name, module or "<generated>", dtype, seed, batch)
    say = _progress(net, batch, progress)
    try:
        mod = _open_module(net, module, timeout, say)
    except ModuleResourceError as exc:
        raise budgets.ResourceError(f"verify: {exc}; raise --timeout") from None
    except ModuleError as exc:
        message = f"cannot import {module}: {exc}".replace("import raised ", "")
        report.check("import", False, message)
        return report
    try:
        if symbolic:
            report.symbolic.extend(symbolic_rows(net, seed))
        _verify_module(
            mod, net, report, dtype, against, seed, batch, targets, fd_coords, extra, say
        )
    except ModuleResourceError as exc:
        raise budgets.ResourceError(f"verify: {exc}; raise --timeout") from None
    except MemoryError:
        raise budgets.ResourceError("verify: out of memory; try a smaller --batch") from None
    except ModuleError as exc:
        report.check("module", False, str(exc))
    finally:
        mod.close()
    return report


def _open_module(
    net: Network, module: str | None, timeout: float, say: Callable[[str], None]
) -> LocalModule | ModuleProcess:
    """The module under test: a file in a child process of its own, or symgrad's freshly
    generated code in this process (trusted: it starts nothing), both under ``timeout``."""
    if module is None:
        from symgrad.backends.codegen import load_module
        from symgrad.pipeline import generate

        return LocalModule(load_module(generate(net), f"symgrad_verify_{net.name}"), timeout)
    if not Path(module).is_file():
        raise SpecError("no such file", file=str(module))
    say(f"starting the module ({module})")
    return ModuleProcess(str(module), timeout)


def _progress(
    net: Network, batch: int, progress: Callable[[str], None] | None
) -> Callable[[str], None]:
    """A progress printer for big networks (parameters or arrays); silent otherwise."""
    try:
        size = sum(int(np.prod(net.shape(p), dtype=np.int64)) for p in net.params)
    except SpecError:
        size = 0
    big = size >= PROGRESS_PARAMETERS or budgets.verify_bytes(net, batch) >= PROGRESS_BYTES
    if progress is None or not big:
        return lambda text: None
    start = time.monotonic()

    def say(text: str) -> None:
        progress(f"verify: {time.monotonic() - start:5.1f} s: {text}")

    return say


def _check_loss_domain(
    net: Network, ref_loss: float | None, domain: str, seed: int, batch: int
) -> None:
    """A reference loss that is not finite at the drawn point is the loss's domain, not
    the module's fault: one line naming the draw, exit code 2."""
    if ref_loss is None or np.isfinite(ref_loss):
        return
    others = ", ".join(d for d in TARGET_DOMAINS if d != domain)
    raise LossDomainError(
        f"the loss {net.loss.name!r} is {ref_loss} at the drawn targets ({DRAWS[domain]}, "
        f"domain {domain!r}, seed {seed}, batch {batch}): its reference is not finite "
        f"there, so no gradient can be checked; draw targets the loss accepts with "
        f'--targets ({others}) or the spec\'s targets = "..."',
        field="--targets",
    )


def _reference_loss(net: Network, point64) -> float | None:
    """The loss of an autograd reference at the point (for the domain check only, when
    no autograd reference was asked for); None when none is installed or applies."""
    for name in ("torch", "jax"):
        try:
            got = reference_loss_and_grads(name, net, *point64)
        except (SpecError, ValueError, TypeError, RuntimeError):
            continue
        if got is not None:
            return float(got[1])
    return None


def _first_calls(
    mod: LocalModule | ModuleProcess,
    net: Network,
    report: VerifyReport,
    point: tuple[dict[str, np.ndarray], np.ndarray, np.ndarray],
    np_dtype: np.dtype,
    say: Callable[[str], None] = lambda text: None,
    planned: int = 0,
) -> tuple[float, dict[str, np.ndarray], Any] | None:
    """loss_and_grads, forward and loss at the point: ``(loss, grads, yhat or None)``.

    ``planned`` calls of about the same cost follow: their time is estimated (``say``).
    """
    params, X, Y = point
    changed: dict[str, None] = {}

    def call(what, *args):
        start = time.monotonic()
        try:
            out = mod.call(what, *args)
            if what == "loss_and_grads":
                took = time.monotonic() - start
                say(
                    f"loss_and_grads took {took:.1f} s; about {planned} more calls follow, "
                    f"about {took * planned:.0f} s (time limit {mod_limit(mod)})"
                )
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
        return None
    if not (isinstance(res, tuple | list) and len(res) == 2):
        message = f"loss_and_grads returned {show_value(res)}, expected (loss, grads)"
        report.check("loss_and_grads", False, message)
        return None
    raw_value, grads = res
    value = real_scalar(raw_value)
    if not report.check(
        "loss value",
        value is not None,
        f"loss_and_grads returned a loss that is {show_value(raw_value)}, not a real number",
    ):
        return None
    assert value is not None
    if not check_grads_structure(report, net, grads, np_dtype):
        return None
    grads = {k: np.asarray(v) for k, v in grads.items()}
    ok2 = ok2 and _check_forward(report, net, yhat, X.shape[0], np_dtype)
    if ok3:
        _check_loss_function(report, lval, value)
    finite = np.isfinite(value) and all(
        np.all(np.isfinite(g.astype(np.float64))) for g in grads.values()
    )
    report.check("finite", bool(finite), "loss or gradients are not finite")
    return value, grads, (yhat if ok2 else None)


def _check_forward(report: VerifyReport, net: Network, yhat, batch: int, np_dtype) -> bool:
    C = net.size(net.output_width)
    y = yhat if isinstance(yhat, np.ndarray) else None
    ok = report.check(
        "forward shape",
        y is not None and y.shape == (batch, C) and y.dtype.kind in "biuf",
        f"forward returned {show_value(yhat)}, expected shape {(batch, C)}",
    )
    if ok and y is not None:
        report.check(
            "forward dtype",
            y.dtype == np_dtype,
            f"forward returned dtype {y.dtype}, expected {np_dtype}",
        )
    return ok


def _check_loss_function(report: VerifyReport, lval: object, value: float) -> None:
    lv = real_scalar(lval)
    if report.check(
        "loss value", lv is not None, f"loss() returned {show_value(lval)}, not a number"
    ):
        assert lv is not None
        a, r = rel_error(lv, value)
        report.check(
            "loss == loss_and_grads",
            r <= 1e-12 or a <= 1e-14,
            f"loss() = {lv!r} but loss_and_grads() gives {value!r}",
        )


def _autograd_references(
    net: Network, against: tuple[str, ...], point64, f32: bool, report: VerifyReport
) -> list[tuple[str, float, Any, Any, Any, dict[str, Any]]]:
    params64, X64, Y64 = point64
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
    return refs


def _fd_reference(
    mod,
    net: Network,
    point64,
    grads,
    f32: bool,
    seed: int,
    fd_coords: int,
    say,
    report,
    per_call: float | None = None,
) -> tuple | None:
    params64, X64, Y64 = point64
    coords = fd_coordinates(net, seed, fd_coords)
    hint = {k: v.astype(np.float64) for k, v in grads.items()}
    tol = TOL_FLOAT32 if f32 else TOL_FD
    count = 4 * sum(len(v) for v in coords.values())
    start = time.monotonic()
    if per_call is not None:
        left = getattr(mod, "deadline", None)
        limit = f" (time left {left - start:.0f} s)" if left is not None else ""
        say(f"finite differences: {count} loss evaluations, about {count * per_call:.0f} s{limit}")

    def losses(moves):
        return mod.losses(params64, X64, Y64, moves)

    try:
        fd = sampled_differences(losses, params64, coords, hint=hint, tol=tol, kinks=has_kinks(net))
    except ModuleError as exc:
        if mod_dead(mod):
            raise
        report.check("fd", False, f"finite differences: {exc}")
        return None
    say(f"finite differences done in {time.monotonic() - start:.1f} s")
    ref_g = {k: v[0] for k, v in fd.items()}
    noise = {k: float(np.max(v[1])) if v[1].size else 0.0 for k, v in fd.items()}
    return ("fd", tol, None, None, ref_g, {"coords": coords, "noise": noise})


def _compare_rows(report: VerifyReport, net: Network, refs, value, grads, yhat) -> None:
    for name, tol, ref_y, ref_l, ref_g, extra in refs:
        if ref_l is not None:
            a, r, ok = compare(np.float64(value), np.float64(ref_l), tol, 0.0)
            report.rows.append(Row("loss", name, a, r, tol, ok))
        if ref_y is not None and yhat is not None:
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
            note = "" if ok else diagnose(gp, rp, tol, floor)
            report.rows.append(Row(p, name, a, rel, tol, ok, note))


def _verify_module(
    mod: LocalModule | ModuleProcess,
    net: Network,
    report: VerifyReport,
    dtype: str,
    against: tuple[str, ...],
    seed: int,
    batch: int,
    targets: str | None,
    fd_coords: int,
    extra_batches: list[int] | None = None,
    say: Callable[[str], None] = lambda text: None,
) -> None:
    if not check_api(mod, net, report):
        return
    params64, X64, Y64 = random_point(net, mod, seed, batch, targets)
    shapes = {k: v.shape for k, v in params64.items()}
    want = {p.name: net.shape(p) for p in net.params}
    message = f"init_params returned {shapes}, expected the parameters {want}"
    if not report.check("init_params", shapes == want, message):
        return
    np_dtype = np.dtype(dtype)
    f32 = np_dtype == np.float32
    # The module's point, and the same point in float64 for the references.
    params = {k: v.astype(np_dtype) for k, v in params64.items()}
    X, Y = X64.astype(np_dtype), Y64.astype(np_dtype)
    point64 = (
        {k: v.astype(np.float64) for k, v in params.items()},
        *(a.astype(np.float64) for a in (X, Y)),
    )
    say("autograd references" if any(a != "fd" for a in against) else "the drawn point")
    refs = _autograd_references(net, against, point64, f32, report)
    domain = target_domain(net, targets)
    losses: list[float | None] = [float(ref[3]) for ref in refs]
    if not losses and budgets.verify_bytes(net, batch) < PROGRESS_BYTES:  # (cheap: small)
        losses = [_reference_loss(net, point64)]
    for ref_loss in losses:
        _check_loss_domain(net, ref_loss, domain, seed, batch)
    say(f"calling the module (batch {batch})")
    start = time.monotonic()
    planned = 2 + 3 + (4 * sum(map(len, fd_coordinates(net, seed, fd_coords).values())))
    first = _first_calls(mod, net, report, (params, X, Y), np_dtype, say, planned)
    per_call = (time.monotonic() - start) / 3  # loss_and_grads, forward, loss
    if first is None:
        return
    value, grads, yhat = first
    if "fd" in against:
        fd = _fd_reference(mod, net, point64, grads, f32, seed, fd_coords, say, report, per_call)
        if fd is not None:
            refs.append(fd)
    _compare_rows(report, net, refs, value, grads, yhat)
    if not refs:
        report.check(
            "references", False, "no reference available (" + "; ".join(report.skipped) + ")"
        )
    if extra_batches and report.ok:  # (a module already wrong is reported as such)
        say(f"more calls: batches {', '.join(map(str, extra_batches))} and a repeat")
        g64 = {k: v.astype(np.float64) for k, v in grads.items()}
        check_more_calls(
            mod,
            net,
            report,
            (params, X, Y),
            (value, g64),
            extra_batches,
            dtype=np_dtype,
            against=against,
            seed=seed,
            targets=targets,
        )


__all__ = [
    "API",
    "DEFAULT_TIMEOUT",
    "REFERENCES",
    "REL_FLOOR",
    "TARGET_DOMAINS",
    "TOL_AUTOGRAD",
    "TOL_FD",
    "TOL_FLOAT32",
    "TOL_SYMBOLIC",
    "LossDomainError",
    "ModuleError",
    "Row",
    "VerifyReport",
    "backend",
    "compare",
    "concrete_sizes",
    "fd_coordinates",
    "finite_differences",
    "has_kinks",
    "jax_reference",
    "load_module_file",
    "random_point",
    "random_targets",
    "reference_forward",
    "reference_loss_and_grads",
    "rel_error",
    "sampled_differences",
    "symbolic_rows",
    "torch_reference",
    "verify_network",
]
