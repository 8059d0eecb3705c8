"""More calls than one: a module is not trusted on the strength of a single call.

A module that reads the batch size from the wrong axis (``N = X.shape[1]``), divides by a
constant, caches its first result or goes wrong after a few calls passes a check at one
batch. So ``loss_and_grads`` is called again on batches of other sizes (none equal to a
width of the network) and compared with a reference there, then called once more at the
first point, where it must reproduce its first answer.
"""

from __future__ import annotations

import numpy as np

from symgrad.ir.network import Network
from symgrad.verify.differences import real_scalar, sampled_differences, show_value
from symgrad.verify.module_process import LocalModule, ModuleError, ModuleProcess
from symgrad.verify.points import random_targets
from symgrad.verify.reference import reference_loss_and_grads
from symgrad.verify.report import TOL_AUTOGRAD, TOL_FD, TOL_FLOAT32, VerifyReport, compare

#: Batch sizes verify may use, in order of preference.
BATCH_CANDIDATES = (4, 5, 7, 3, 6, 9, 11, 13, 2, 8, 10, 12, 14, 15, 17, 19, 23)
#: Calls of ``loss_and_grads`` on batches of other sizes after the first call.
EXTRA_BATCHES = 2
#: Finite-difference coordinates per parameter at the extra batches (no autograd reference).
EXTRA_FD_COORDINATES = 6
#: Relative difference allowed between the first call and its repetition.
TOL_REPEAT = {"float64": 1e-12, "float32": 1e-6}

Module = ModuleProcess | LocalModule


def widths(net: Network) -> set[int]:
    """Every concrete width of the network: input, outputs, channels and spatial sizes."""
    out: set[int] = set(net.input_shape)
    for w in [net.input_width, *(s.width for s in net.stages)]:
        try:
            out.add(net.size(w))
        except Exception:  # noqa: BLE001 - a symbolic width has no value to avoid
            continue
    for st in net.stages:
        for s in st.shape:
            try:
                out.add(net.size(s))
            except Exception:  # noqa: BLE001
                continue
    return out


def choose_batches(net: Network, batch: int | None, coupled: bool) -> tuple[int, list[int]]:
    """The first call's batch (``batch``, or the first candidate that is no width of the
    network) and :data:`EXTRA_BATCHES` more sizes, all distinct and no width either."""
    avoid = widths(net)
    low = 2 if coupled else 1
    free = [b for b in BATCH_CANDIDATES if b not in avoid and b >= low]
    first = batch if batch is not None else free[0]
    extra = [b for b in free if b != first][:EXTRA_BATCHES]
    return first, extra


def _result(value: object, net: Network) -> tuple[float, dict[str, np.ndarray]] | str:
    """``(loss, grads)`` from a ``loss_and_grads`` reply, or what is wrong with it."""
    if not (isinstance(value, tuple | list) and len(value) == 2):
        return f"returned {show_value(value)}, expected (loss, grads)"
    loss = real_scalar(value[0])
    if loss is None:
        return f"returned a loss that is {show_value(value[0])}"
    grads = value[1]
    if not isinstance(grads, dict) or set(grads) != set(net.param_names):
        return "returned gradients that are not a dict of PARAM_NAMES"
    out = {}
    for p in net.params:
        g = np.asarray(grads[p.name])
        if g.dtype.kind not in "biuf" or g.shape != net.shape(p):
            return f"returned a gradient {p.name} of shape {g.shape}, expected {net.shape(p)}"
        out[p.name] = g.astype(np.float64)
    return loss, out


def _reference(
    net: Network,
    against: tuple[str, ...],
    params64: dict[str, np.ndarray],
    X: np.ndarray,
    Y: np.ndarray,
) -> tuple[str, float | None, dict[str, np.ndarray]]:
    """``(name, loss, grads)`` of the first autograd reference available, else finite
    differences of the module's own loss (no loss value then)."""
    for name in ("torch", "jax"):
        if name not in against:
            continue
        try:
            got = reference_loss_and_grads(name, net, params64, X, Y)
        except Exception:  # noqa: BLE001 - skipped at the first point already, with a reason
            got = None
        if got is not None:
            return name, float(got[1]), {k: np.asarray(v) for k, v in got[2].items()}
    return "fd", None, {}


def _mismatch(
    got: tuple[float, dict[str, np.ndarray]],
    ref_loss: float | None,
    ref: dict[str, np.ndarray],
    tol: float,
    floor: dict[str, float],
) -> str | None:
    """What differs between a module's result and a reference (None if nothing)."""
    loss, grads = got
    if ref_loss is not None:
        a, r, ok = compare(np.float64(loss), np.float64(ref_loss), tol, 0.0)
        if not ok:
            return f"the loss {loss!r} differs from {ref_loss!r} (rel err {r:.1e})"
    overall = max([float(np.max(np.abs(v))) for v in ref.values() if v.size] + [0.0])
    for name, want in ref.items():
        g = grads[name]
        if want.shape != g.shape:
            g = g.reshape(-1)[: want.size].reshape(want.shape)
        a, r, ok = compare(g, want, tol, 1e-2 * tol * overall + floor.get(name, 0.0))
        if not ok:
            return f"the gradient {name} differs (rel err {r:.1e}, tol {tol:.0e})"
    return None


def _sample(size: int) -> np.ndarray:
    """The coordinates finite differences check at an extra batch (spread over the array)."""
    return np.unique(np.linspace(0, max(size - 1, 0), EXTRA_FD_COORDINATES).astype(int))


def _fd_at(
    mod: Module, params64: dict[str, np.ndarray], X64: np.ndarray, Y64: np.ndarray, hint, tol
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Finite differences of the module's loss at a few coordinates, and their noise."""
    coords = {n: _sample(g.size) for n, g in hint.items()}
    out = sampled_differences(
        lambda moves: mod.losses(params64, X64, Y64, moves), params64, coords, hint=hint, tol=tol
    )
    noise = {n: float(np.max(v[1])) if v[1].size else 0.0 for n, v in out.items()}
    return {n: v[0] for n, v in out.items()}, noise


def _one_batch(
    mod: Module,
    net: Network,
    report: VerifyReport,
    params: dict[str, np.ndarray],
    X: np.ndarray,
    Y: np.ndarray,
    against: tuple[str, ...],
) -> None:
    """``loss_and_grads`` on the batch ``X, Y`` against a reference (one check)."""
    b, dtype = X.shape[0], X.dtype
    params64 = {k: v.astype(np.float64) for k, v in params.items()}
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    call = mod.calls + 1
    what = f"loss_and_grads on a batch of {b} (call {call})"
    try:
        raw = mod.call("loss_and_grads", params, X, Y)
    except ModuleError as exc:
        if mod.dead:
            raise
        report.check(f"batch {b}", False, f"{what}: {exc}")
        return
    got = _result(raw, net)
    if isinstance(got, str):
        report.check(f"batch {b}", False, f"{what} {got}")
        return
    f32 = dtype == np.float32
    name, ref_loss, ref = _reference(net, against, params64, X64, Y64)
    noise: dict[str, float] = {}
    if name == "fd":  # the module's own loss, at a few coordinates
        ref, noise = _fd_at(mod, params64, X64, Y64, got[1], TOL_FLOAT32 if f32 else TOL_FD)
        got = (got[0], {n: g.reshape(-1)[_sample(g.size)] for n, g in got[1].items()})
    tol = TOL_FLOAT32 if f32 else (TOL_FD if name == "fd" else TOL_AUTOGRAD)
    bad = _mismatch(got, ref_loss, ref, tol, noise)
    report.check(
        f"batch {b}",
        bad is None,
        f"{what}: {bad} against {name}; does the module assume a batch size, or keep "
        "state between calls?",
    )
    report.calls.append(f"batch {b} ({name})")


def check_more_calls(
    mod: Module,
    net: Network,
    report: VerifyReport,
    point: tuple[dict[str, np.ndarray], np.ndarray, np.ndarray],
    first: tuple[float, dict[str, np.ndarray]],
    batches: list[int],
    *,
    dtype: np.dtype,
    against: tuple[str, ...],
    seed: int,
    targets: str | None,
) -> None:
    """``loss_and_grads`` at each of ``batches`` (new inputs, same parameters) against a
    reference, then once more at ``point``: it must give ``first`` again."""
    params, X0, _ = point
    for k, b in enumerate(batches):
        rng = np.random.default_rng(seed + 4242 + k)
        X = rng.normal(0.0, 1.0, (b, *X0.shape[1:])).astype(dtype)
        Y = random_targets(net, b, rng, targets).astype(dtype)
        _one_batch(mod, net, report, params, X, Y, against)
    _check_repeat(mod, net, report, point, first, dtype)


def _check_repeat(
    mod: Module,
    net: Network,
    report: VerifyReport,
    point: tuple[dict[str, np.ndarray], np.ndarray, np.ndarray],
    first: tuple[float, dict[str, np.ndarray]],
    dtype: np.dtype,
) -> None:
    params, X, Y = point
    call = mod.calls + 1
    try:
        raw = mod.call("loss_and_grads", params, X, Y)
    except ModuleError as exc:
        if mod.dead:
            raise
        report.check("repeat", False, f"the repeated first call (call {call}): {exc}")
        return
    got = _result(raw, net)
    tol = TOL_REPEAT["float32" if dtype == np.float32 else "float64"]
    bad = got if isinstance(got, str) else _mismatch(got, first[0], first[1], tol, {})
    report.check(
        "repeat",
        bad is None,
        f"loss_and_grads at the first point again (call {call}) does not reproduce the "
        f"first call: {bad}; does the module keep state between calls?",
    )
    report.calls.append(f"batch {X.shape[0]} again (repeat)")


__all__ = ["BATCH_CANDIDATES", "EXTRA_BATCHES", "check_more_calls", "choose_batches", "widths"]
