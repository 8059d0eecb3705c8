"""Every target's generated module against the independent PyTorch reference.

Shared by the differential test (random expressions, ``test_differential_targets.py``),
the named regressions (``test_target_regressions.py``) and the generated-source checks
(``test_generated_source.py``). One call generates the NumPy, torch, JAX and CuPy modules
(with ``--hvp``) for a network and compares each with ``verify/reference.py``'s network
(PyTorch autograd through the IR, no symgrad code in between):

- the loss value and every parameter gradient (``loss_and_grads``), float64, relative 1e-7;
- torch: ``loss(...).backward()`` under an incoming gradient g = -2.5 (``LossFunction``),
  and dL/dX; JAX: ``jax.grad`` of ``g * loss`` (the ``custom_vjp``);
- ``hvp`` against ``torch.autograd.functional.hvp`` of the reference loss;
- float32 consistency: float32 in, float32 gradients out, within float32 rounding of the
  float64 reference.

CuPy runs on the GPU where cupy and a device are present; elsewhere its module runs with
NumPy standing in for ``cupy`` (the same array API), so its code paths are still executed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from symgrad.backends.codegen import load_module
from symgrad.ir.network import Network
from symgrad.pipeline import generate_code
from symgrad.verify.reference import backend, reference_forward
from symgrad.verify.verify import random_targets, rel_error

TARGETS = ("numpy", "torch", "jax", "cupy")
TOL = 1e-7
#: float32 against the float64 reference: relative to the largest entry of each gradient.
TOL32 = 2e-3
#: The loss's incoming gradient in the autograd checks (a loss inside a bigger objective).
SCALE = -2.5


def gpu() -> bool:
    """Whether cupy and a CUDA device are present."""
    if importlib.util.find_spec("cupy") is None:
        return False
    import cupy

    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no driver, no device
        return False


@contextlib.contextmanager
def _cupy_module() -> Iterator[object]:
    """cupy itself on a GPU; otherwise NumPy installed as ``cupy`` while the module loads."""
    if gpu():
        import cupy

        yield cupy
        return
    saved = sys.modules.get("cupy")
    sys.modules["cupy"] = np
    try:
        yield np
    finally:
        if saved is None:
            sys.modules.pop("cupy", None)
        else:
            sys.modules["cupy"] = saved


def modules(net: Network, hvp: bool = True, targets=TARGETS) -> dict[str, object]:
    """The generated module of every target (source compiled; CuPy as :func:`_cupy_module`)."""
    out: dict[str, object] = {}
    for t in targets:
        code = generate_code(net, target=t, hvp=hvp)
        if t == "cupy":
            with _cupy_module():
                out[t] = load_module(code, f"diff_{t}_{net.name}")
        else:
            out[t] = load_module(code, f"diff_{t}_{net.name}")
    return out


def draw_point(
    net: Network, seed: int, batch: int = 4, scale: float = 1.0, targets: str | None = None
):
    """float64 parameters, inputs (times ``scale``), targets and a direction V."""
    rng = np.random.default_rng(seed)
    params = {
        p.name: rng.uniform(-0.8, 0.8, net.shape(p)) + (1.0 if p.init == "ones" else 0.0)
        for p in net.params
    }
    X = scale * rng.normal(0.0, 1.0, (batch, net.size(net.input_width)))
    Y = random_targets(net, batch, rng, targets)
    V = {k: rng.normal(0.0, 1.0, v.shape) for k, v in params.items()}
    return params, X, Y, V


@dataclass
class Reference:
    """The reference network's loss, gradients, dL/dX and H V (float64, PyTorch)."""

    loss: float
    grads: dict[str, np.ndarray]
    dx: np.ndarray
    hvp: dict[str, np.ndarray] = field(default_factory=dict)


def reference(net: Network, params, X, Y, V=None) -> Reference:
    import torch

    ops = backend("torch")
    names = list(params)
    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    Xt = torch.tensor(X, requires_grad=True)
    _, value = reference_forward(ops, net, leaves, Xt, torch.tensor(Y))
    wrt = [Xt, *leaves.values()]
    grads = torch.autograd.grad(value, wrt, create_graph=V is not None, allow_unused=True)
    # (a parameter the loss does not read, behind a constant activation: gradient 0)
    grads = tuple(torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt, strict=True))
    ref = Reference(
        float(value.detach()),
        {k: g.detach().numpy() for k, g in zip(names, grads[1:], strict=True)},
        grads[0].detach().numpy(),
    )
    ref.hvp = {k: np.zeros_like(v) for k, v in params.items()}  # (a loss linear in them)
    if V is not None and any(g.requires_grad for g in grads[1:]):
        dot = sum((g * torch.tensor(V[k])).sum() for k, g in zip(names, grads[1:], strict=True))
        hv = torch.autograd.grad(dot, list(leaves.values()), allow_unused=True)
        ref.hvp = {
            k: (np.zeros_like(params[k]) if h is None else h.detach().numpy())
            for k, h in zip(names, hv, strict=True)
        }
    return ref


def _np(a) -> np.ndarray:
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    if type(a).__module__.startswith("cupy"):
        import cupy

        return cupy.asnumpy(a)
    return np.asarray(a)


def _close(what: str, got, want, tol: float, errors: list[str]) -> None:
    err = rel_error(_np(got), want)[1]
    if not err <= tol:
        errors.append(f"{what}: relative error {err:.3g} > {tol:g}")


def _outputs(target: str, mod, params, X, Y, V, hvp: bool, dtype=np.float64):
    """(loss, grads, H V or None) from one target's module, all as NumPy arrays."""
    p = {k: v.astype(dtype) for k, v in params.items()}
    v = {k: w.astype(dtype) for k, w in V.items()}
    if target == "torch":
        import torch

        p = {k: torch.tensor(a) for k, a in p.items()}
        v = {k: torch.tensor(a) for k, a in v.items()}
    elif target == "cupy" and gpu():
        import cupy

        p = {k: cupy.asarray(a) for k, a in p.items()}
        v = {k: cupy.asarray(a) for k, a in v.items()}
    value, grads = mod.loss_and_grads(p, X, Y)
    hv = mod.hvp(p, X, Y, v) if hvp else None
    return value, grads, hv


def check_targets(
    net: Network,
    params,
    X,
    Y,
    V,
    *,
    mods: dict[str, object] | None = None,
    hvp: bool = True,
    float32: bool = True,
    tol: float = TOL,
) -> list[str]:
    """Every target against the reference; the list of what disagrees (empty: all agree)."""
    mods = mods or modules(net, hvp)
    ref = reference(net, params, X, Y, V if hvp else None)
    errors: list[str] = []
    if not (np.isfinite(ref.loss) and all(np.all(np.isfinite(g)) for g in ref.grads.values())):
        return [f"the reference is not finite at this point (loss {ref.loss})"]
    for target, mod in mods.items():
        value, grads, hv = _outputs(target, mod, params, X, Y, V, hvp)
        _close(f"{target} loss", float(_np(value)), ref.loss, tol, errors)
        for k, want in ref.grads.items():
            _close(f"{target} d{k}", grads[k], want, tol, errors)
            if hv is not None:
                _close(f"{target} (H V)[{k}]", hv[k], ref.hvp[k], 10 * tol, errors)
        if float32:
            _check_float32(target, mod, params, X, Y, V, ref, errors)
    if "torch" in mods:
        _check_torch_autograd(mods["torch"], params, X, Y, ref, tol, errors)
    if "jax" in mods:
        _check_jax_grad(mods["jax"], params, X, Y, ref, tol, errors)
    return errors


def _check_float32(target, mod, params, X, Y, V, ref: Reference, errors: list[str]) -> None:
    value, grads, _ = _outputs(target, mod, params, X, Y, V, False, np.float32)
    for k, want in ref.grads.items():
        g = _np(grads[k])
        if g.dtype != np.float32:
            errors.append(f"{target} float32: d{k} came back as {g.dtype}")
        _close(f"{target} float32 d{k}", g, want, TOL32, errors)


def _check_torch_autograd(mod, params, X, Y, ref: Reference, tol, errors) -> None:
    import torch

    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    Xt = torch.tensor(X, requires_grad=True)
    (SCALE * mod.loss(leaves, Xt, Y)).backward()
    for k, want in ref.grads.items():
        _close(f"torch autograd d{k}", leaves[k].grad, SCALE * want, tol, errors)
    _close("torch autograd dX", Xt.grad, SCALE * ref.dx, tol, errors)


def _check_jax_grad(mod, params, X, Y, ref: Reference, tol, errors) -> None:
    import jax

    g = jax.grad(lambda p, x: SCALE * mod.loss(p, x, Y), argnums=(0, 1))(params, X)
    for k, want in ref.grads.items():
        _close(f"jax grad d{k}", g[0][k], SCALE * want, tol, errors)
    _close("jax grad dX", g[1], SCALE * ref.dx, tol, errors)


# -- generated source ---------------------------------------------------------------------


def lint(sources: dict[str, str]) -> str:
    """``compile()`` every source, then ``ruff check`` them in one call (pyflakes' rules
    and ruff's defaults: undefined names, unused variables, syntax). The problems found,
    or "" when every file is clean. Skipped lint (no ruff) still compiles."""
    problems = []
    for name, code in sources.items():
        try:
            compile(code, f"<{name}>", "exec")
        except SyntaxError as exc:
            problems.append(f"{name}: {exc}")
    if problems or shutil.which("ruff") is None:
        return "\n".join(problems)
    with tempfile.TemporaryDirectory() as tmp:
        for name, code in sources.items():
            (Path(tmp) / f"{name}.py").write_text(code)
        res = subprocess.run(
            ["ruff", "check", "--isolated", "--no-cache", "--select", "E9,F", tmp],
            capture_output=True,
            text=True,
        )
    return "" if res.returncode == 0 else res.stdout + res.stderr
