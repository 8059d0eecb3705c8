"""Finite differences of a module's loss: the reference that needs nothing but the module.

:func:`sampled_differences` evaluates central 5-point differences at a bounded sample of
coordinates (:func:`fd_coordinates`), in one batch of loss evaluations, and retries a
coordinate that disagrees with smaller and, near a kink, one-sided steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import sympy as sp

from symgrad.ir.network import Network
from symgrad.verify.module_process import ModuleError
from symgrad.verify.report import REL_FLOOR, TOL_FD


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
    losses: Callable[[list[tuple[str, int, float]]], Sequence[object]],
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

    plan: list[tuple[str, int, float]] = []
    for name, idx in coords.items():
        flat_v = base[name].reshape(-1)
        for flat in idx:
            h = h_rel * max(1.0, abs(float(flat_v[flat])))
            plan += _steps(name, int(flat), h, False)
    values = floats(losses(plan))
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
    _retry(losses, base, coords, out, hint, h_rel=h_rel, tol=tol, kinks=kinks)
    return out


def _steps(name: str, flat: int, h: float, one_sided: bool) -> list[tuple[str, int, float]]:
    moves = [(name, flat, d) for d in (-2 * h, -h, h, 2 * h)]
    if one_sided:
        moves.append((name, flat, 0.0))
    return moves


def _retry(
    losses: Callable[[list[tuple[str, int, float]]], Sequence[object]],
    base: Mapping[str, np.ndarray],
    coords: Mapping[str, np.ndarray],
    out: dict[str, tuple[np.ndarray, np.ndarray]],
    hint: Mapping[str, np.ndarray],
    *,
    h_rel: float,
    tol: float,
    kinks: bool,
) -> None:
    """Coordinates that disagree with ``hint``, again with smaller (and, near kinks,
    one-sided) steps, all in one batch; the value closest to the hint is kept in ``out``."""
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
        return
    plan = []
    for name, _, flat, h in retry:
        for div in (10.0, 100.0, 1000.0):
            plan += _steps(name, flat, h / div, kinks)
    values = floats(losses(plan))
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


def floats(values: Sequence[object]) -> list[float]:
    out = []
    for v in values:
        f = real_scalar(v)
        if f is None:
            raise ModuleError(f"loss returned {show_value(v)}, expected a real number")
        out.append(f)
    return out


def real_scalar(value: object) -> float | None:
    """``value`` as a float if it is one real number (a 0-d or one-element array too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, np.generic) and value.dtype.kind in "iuf":  # np.float32(...)
        return float(value)
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iuf":
        return float(value.reshape(()))
    return None


def show_value(value: object) -> str:
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
