"""Generated PyTorch, JAX and CuPy modules (``codegen --target``): every catalogue network
against the independent PyTorch reference (``verify/reference.py``) in float64 (1e-7),
``torch.autograd.gradcheck`` on ``LossFunction``, ``jax.test_util.check_grads`` on the
JAX ``loss``, float32 staying float32, the vector-Jacobian product inside a bigger model,
and lint-clean source for every target. CuPy runs only where cupy and a GPU are present.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import subprocess
import sys

import numpy as np
import pytest
from catalogue import catalogue

from symgrad.backends.codegen import load_module
from symgrad.errors import SpecError
from symgrad.pipeline import generate_code
from symgrad.verify.reference import backend, reference_forward
from symgrad.verify.verify import random_targets, rel_error, torch_reference

NETS = catalogue()
NAMES = sorted(NETS)
TOL = 1e-7

torch = pytest.importorskip("torch")


@functools.cache
def generated(name: str, target: str):
    code = generate_code(NETS[name], target=target)
    return code, load_module(code, f"gen_{target}_{name}")


def point(name: str, seed: int = 0, batch: int = 5):
    """float64 NumPy parameters, X and Y near the initialisation (not at it: W != 0)."""
    net = NETS[name]
    rng = np.random.default_rng(seed)
    params = {
        p.name: rng.uniform(-0.6, 0.6, net.shape(p)) + (1.0 if p.init == "ones" else 0.0)
        for p in net.params
    }
    X = rng.normal(0.0, 1.0, (batch, net.size(net.input_width)))
    return params, X, random_targets(net, batch, rng)


def tensors(params, dtype=torch.float64, grad=False):
    return {k: torch.tensor(v, dtype=dtype, requires_grad=grad) for k, v in params.items()}


# -- torch --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_torch_matches_reference(name):
    _, mod = generated(name, "torch")
    params, X, Y = point(name)
    ref_yhat, ref_loss, ref_grads = torch_reference(NETS[name], params, X, Y)
    tp = tensors(params)
    value, grads = mod.loss_and_grads(tp, X, Y)
    assert rel_error(mod.forward(tp, X).numpy(), ref_yhat)[1] <= TOL
    assert rel_error(float(value), ref_loss)[1] <= TOL
    for p in mod.PARAM_NAMES:
        assert rel_error(grads[p].numpy(), ref_grads[p])[1] <= TOL, p
    # The same gradients through autograd: loss(...).backward() runs LossFunction.backward.
    leaves = tensors(params, grad=True)
    mod.loss(leaves, X, Y).backward()
    for p in mod.PARAM_NAMES:
        assert rel_error(leaves[p].grad.numpy(), ref_grads[p])[1] <= TOL, p
    # An incoming gradient g != 1 (the loss inside a bigger objective) scales them all.
    leaves = tensors(params, grad=True)
    (-2.5 * mod.loss(leaves, X, Y)).backward()
    for p in mod.PARAM_NAMES:
        assert rel_error(leaves[p].grad.numpy(), -2.5 * ref_grads[p])[1] <= TOL, p


@pytest.mark.parametrize("name", NAMES)
def test_torch_vjp_and_input_gradient_match_autograd(name):
    """NetworkFunction's backward (the derived VJP) and LossFunction's dL/dX against
    autograd through the reference network."""
    _, mod = generated(name, "torch")
    net = NETS[name]
    params, X, Y = point(name, seed=1)
    G = np.random.default_rng(2).normal(size=(X.shape[0], net.size(net.output_width)))
    ops = backend("torch")
    ref = tensors(params, grad=True)
    Xr = torch.tensor(X, requires_grad=True)
    yhat, _ = reference_forward(ops, net, ref, Xr, torch.tensor(Y))
    want = torch.autograd.grad(yhat, [Xr, *ref.values()], torch.tensor(G))
    dx, grads = mod.vjp(tensors(params), X, G)
    assert rel_error(dx.numpy(), want[0].numpy())[1] <= TOL
    for k, w in zip(ref, want[1:], strict=True):
        assert rel_error(grads[k].numpy(), w.numpy())[1] <= TOL, k
    # Through autograd: the generated output feeding a user loss (sum(G * yhat)).
    leaves = tensors(params, grad=True)
    Xg = torch.tensor(X, requires_grad=True)
    (mod.forward(leaves, Xg) * torch.tensor(G)).sum().backward()
    assert rel_error(Xg.grad.numpy(), want[0].numpy())[1] <= TOL
    # LossFunction passes dL/dX on too.
    Xl = torch.tensor(X, requires_grad=True)
    _, value = reference_forward(ops, net, tensors(params), Xl, torch.tensor(Y))
    (want_dx,) = torch.autograd.grad(value, [Xl])
    Xg2 = torch.tensor(X, requires_grad=True)
    mod.loss(tensors(params), Xg2, Y).backward()
    assert rel_error(Xg2.grad.numpy(), want_dx.numpy())[1] <= TOL


@pytest.mark.parametrize(
    "name", ["seed", "softmax_ce", "custom", "bilinear", "gain", "residual", "maxshift"]
)
def test_torch_gradcheck_loss_function(name):
    _, mod = generated(name, "torch")
    params, X, Y = point(name, seed=3, batch=3)
    args = (torch.tensor(X, requires_grad=True), torch.tensor(Y))
    leaves = tuple(tensors(params, grad=True)[k] for k in mod.PARAM_NAMES)
    assert torch.autograd.gradcheck(mod.LossFunction.apply, (*args, *leaves))
    assert torch.autograd.gradcheck(mod.NetworkFunction.apply, (args[0], *leaves))


@pytest.mark.parametrize("name", ["seed", "softmax_ce", "custom", "bce"])
def test_torch_float32_stays_float32(name):
    _, mod = generated(name, "torch")
    params, X, Y = point(name)
    p32 = tensors(params, dtype=torch.float32)
    value, grads = mod.loss_and_grads(p32, X, Y)
    assert value.dtype == torch.float32
    assert mod.forward(p32, X).dtype == torch.float32
    assert all(g.dtype == torch.float32 for g in grads.values())
    assert mod.init_params(0, torch.float32)[mod.PARAM_NAMES[0]].dtype == torch.float32
    assert mod.init_params()[mod.PARAM_NAMES[0]].dtype == torch.float64


def test_torch_model_inside_sequential():
    """The generated Model between two torch layers: the whole stack's gradients equal
    autograd's through the reference network in the same place."""
    name = "softmax_map"
    _, mod = generated(name, "torch")
    net = NETS[name]
    torch.manual_seed(0)
    pre = torch.nn.Linear(5, net.size(net.input_width), dtype=torch.float64)
    model = mod.Model(seed=1)
    stack = torch.nn.Sequential(pre, model, torch.nn.Tanh())
    assert dict(model.named_parameters()).keys() == set(mod.PARAM_NAMES)
    X = torch.randn(7, 5, dtype=torch.float64)
    stack(X).square().mean().backward()
    ops = backend("torch")
    ref = {k: v.detach().clone().requires_grad_(True) for k, v in model.params().items()}
    Y0 = torch.zeros(7, net.size(net.output_width), dtype=torch.float64)
    yhat, _ = reference_forward(ops, net, ref, pre(X), Y0)
    torch.tanh(yhat).square().mean().backward()
    for k in mod.PARAM_NAMES:
        assert rel_error(getattr(model, k).grad.numpy(), ref[k].grad.numpy())[1] <= TOL
    assert pre.weight.grad is not None
    # Model.loss(X, Y).backward() fills the parameters' .grad.
    model.zero_grad()
    params, Xn, Yn = point(name)
    model.loss(torch.tensor(Xn), torch.tensor(Yn)).backward()
    assert all(getattr(model, k).grad is not None for k in mod.PARAM_NAMES)


def test_torch_double_backward_is_refused():
    """The generated backward is not itself differentiable: an error, never a wrong value."""
    _, mod = generated("seed", "torch")
    params, X, Y = point("seed")
    leaves = tensors(params, grad=True)
    (g,) = torch.autograd.grad(mod.loss(leaves, X, Y), [leaves["W1"]], create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


@pytest.mark.slow
def test_torch_compile(tmp_path, monkeypatch):
    # Dynamo looks the module up by name: import the generated file as a real module.
    code, _ = generated("seed", "torch")
    path = tmp_path / "seed_torch_compiled.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("seed_torch_compiled", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "seed_torch_compiled", mod)
    spec.loader.exec_module(mod)
    model = mod.Model()
    params, X, Y = point("seed")
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    compiled = torch.compile(model.loss)
    value = compiled(Xt, Yt)
    value.backward()
    value = value.detach()
    _, ref_loss, ref_grads = torch_reference(
        NETS["seed"], {k: v.detach().numpy() for k, v in model.params().items()}, X, Y
    )
    assert rel_error(float(value), ref_loss)[1] <= TOL
    for k in mod.PARAM_NAMES:
        assert rel_error(getattr(model, k).grad.numpy(), ref_grads[k])[1] <= TOL


def test_torch_module_imports_only_torch():
    code, _ = generated("seed", "torch")
    imports = [ln for ln in code.splitlines() if ln.startswith(("import ", "from "))]
    assert imports == ["from __future__ import annotations", "import torch"]


# -- jax ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jax64():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


@pytest.mark.parametrize("name", NAMES)
def test_jax_matches_reference(name, jax64):
    _, mod = generated(name, "jax")
    params, X, Y = point(name)
    ref_yhat, ref_loss, ref_grads = torch_reference(NETS[name], params, X, Y)
    value, grads = jax64.jit(jax64.value_and_grad(mod.loss))(params, X, Y)
    assert rel_error(np.asarray(mod.forward(params, X)), ref_yhat)[1] <= TOL
    assert rel_error(float(value), ref_loss)[1] <= TOL
    g3 = jax64.grad(lambda p: -2.5 * mod.loss(p, X, Y))(params)
    for p in mod.PARAM_NAMES:
        assert rel_error(np.asarray(g3[p]), -2.5 * ref_grads[p])[1] <= TOL, p
    v2, g2 = jax64.jit(mod.loss_and_grads)(params, X, Y)
    assert rel_error(float(v2), ref_loss)[1] <= TOL
    for p in mod.PARAM_NAMES:
        assert rel_error(np.asarray(grads[p]), ref_grads[p])[1] <= TOL, p
        assert rel_error(np.asarray(g2[p]), ref_grads[p])[1] <= TOL, p


@pytest.mark.parametrize("name", ["seed", "softmax_ce", "custom", "bilinear"])
def test_jax_check_grads(name, jax64):
    from jax.test_util import check_grads

    _, mod = generated(name, "jax")
    params, X, Y = point(name, seed=4, batch=3)
    check_grads(lambda p, x: mod.loss(p, x, Y), (params, X), order=1, modes=["rev"])
    check_grads(lambda p, x: mod.forward(p, x), (params, X), order=1, modes=["rev"])


def test_jax_vmap_and_float32(jax64):
    jnp = jax64.numpy
    _, mod = generated("softmax_ce", "jax")
    params, X, Y = point("softmax_ce", batch=6)
    Xs, Ys = X.reshape(2, 3, -1), Y.reshape(2, 3, -1)
    per = jax64.vmap(jax64.grad(mod.loss), in_axes=(None, 0, 0))(params, Xs, Ys)
    for k in mod.PARAM_NAMES:
        one = jax64.grad(mod.loss)(params, Xs[1], Ys[1])[k]
        assert rel_error(np.asarray(per[k][1]), np.asarray(one))[1] <= TOL
    p32 = {k: jnp.asarray(v, dtype=jnp.float32) for k, v in params.items()}
    value, grads = mod.loss_and_grads(p32, X, Y)
    assert value.dtype == jnp.float32
    assert all(g.dtype == jnp.float32 for g in grads.values())


def test_jax_module_imports_only_jax():
    code, _ = generated("seed", "jax")
    imports = [ln for ln in code.splitlines() if ln.startswith(("import ", "from "))]
    assert imports == [
        "from __future__ import annotations",
        "import jax",
        "import jax.numpy as jnp",
    ]


# -- cupy ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_cupy_module_compiles(name):
    code = generate_code(NETS[name], target="cupy", hvp=True)
    compile(code, f"<cupy_{name}>", "exec")
    assert "import cupy as cp" in code
    assert "np." not in code.split("def forward", 1)[1]  # numpy only draws the initial values


def _gpu() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    import cupy

    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no driver, no device: skip
        return False


@pytest.mark.skipif(not _gpu(), reason="needs cupy and a CUDA GPU")
@pytest.mark.parametrize("name", NAMES)
def test_cupy_matches_reference(name):
    import cupy as cp

    code = generate_code(NETS[name], target="cupy")
    mod = load_module(code, f"gen_cupy_{name}")
    params, X, Y = point(name)
    _, ref_loss, ref_grads = torch_reference(NETS[name], params, X, Y)
    value, grads = mod.loss_and_grads({k: cp.asarray(v) for k, v in params.items()}, X, Y)
    assert rel_error(value, ref_loss)[1] <= TOL
    for p in mod.PARAM_NAMES:
        assert rel_error(cp.asnumpy(grads[p]), ref_grads[p])[1] <= TOL, p


# -- every target -------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed")
@pytest.mark.parametrize("target", ["torch", "jax", "cupy"])
@pytest.mark.parametrize("name", ["deep", "custom", "softmax_ce", "width1", "bilinear"])
def test_ruff_check(name, target, tmp_path):
    path = tmp_path / f"{name}_{target}.py"
    path.write_text(generate_code(NETS[name], target=target, hvp=True))
    res = subprocess.run(
        ["ruff", "check", "--isolated", "--no-cache", str(path)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_unknown_target_and_optimizer_elsewhere_are_errors():
    with pytest.raises(SpecError, match="unknown target"):
        generate_code(NETS["seed"], target="tensorflow")
    with pytest.raises(SpecError, match="only for the numpy target"):
        generate_code(NETS["seed"], target="torch", optimizer="adam")


@pytest.mark.parametrize("name", NAMES)
def test_every_target_returns_the_numpy_loss_value(name, jax64):
    """The loss value (every term: a penalty is added once per batch) is the NumPy module's in
    every target; a regression test for ``a + b / n`` printed without parentheses."""
    pytest.importorskip("torch")
    import torch

    params, X, Y = point(name)
    want = generated(name, "numpy")[1].loss(params, X, Y)
    _, tmod = generated(name, "torch")
    tp = {k: torch.tensor(v) for k, v in params.items()}
    got_torch = float(tmod.loss(tp, torch.tensor(X), torch.tensor(Y)))
    got_jax = float(generated(name, "jax")[1].loss(params, X, Y))
    assert rel_error(got_torch, want)[1] <= TOL
    assert rel_error(got_jax, want)[1] <= TOL


PENALTY_SPEC = """
name = "decay"
input = 3
loss = "mse"
penalty = "1e-2 * W1[p, q]**2 + 1e-3 * b1[p]**4 + 1e-2 * g2[i]**2"

[[layer]]
units = 4
activation = "tanh"

[[layer]]
type = "map"
expr = "g[i] * sin(a[i])"
params = { g = ["n"] }

[[layer]]
units = 2
"""


@pytest.mark.parametrize("scale", [2.5, -1.0])
def test_penalty_gradient_is_scaled_by_the_incoming_gradient(scale, jax64):
    """A penalty's gradient (added once per batch) is multiplied by the incoming gradient g
    like the rest of the loss's, in LossFunction.backward and in the JAX custom_vjp."""
    from symgrad.frontend.spec import loads_spec

    net = loads_spec(PENALTY_SPEC)
    rng = np.random.default_rng(5)
    params = {p.name: rng.uniform(-0.8, 0.8, net.shape(p)) for p in net.params}
    X, Y = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    _, ref_loss, ref_grads = torch_reference(net, params, X, Y)
    tmod = load_module(generate_code(net, target="torch"), "gen_torch_decay")
    leaves = tensors(params, grad=True)
    (scale * tmod.loss(leaves, X, Y)).backward()
    for p in tmod.PARAM_NAMES:
        assert rel_error(leaves[p].grad.numpy(), scale * ref_grads[p])[1] <= TOL, p
    args = (torch.tensor(X, requires_grad=True), torch.tensor(Y))
    leaf = tuple(tensors(params, grad=True)[k] for k in tmod.PARAM_NAMES)
    assert torch.autograd.gradcheck(tmod.LossFunction.apply, (*args, *leaf))
    jmod = load_module(generate_code(net, target="jax"), "gen_jax_decay")
    g = jax64.grad(lambda p: scale * jmod.loss(p, X, Y))(params)
    assert rel_error(float(jmod.loss(params, X, Y)), ref_loss)[1] <= TOL
    for p in jmod.PARAM_NAMES:
        assert rel_error(np.asarray(g[p]), scale * ref_grads[p])[1] <= TOL, p


_PMAP_SCRIPT = """
import sys
import numpy as np
import jax
jax.config.update("jax_enable_x64", True)
from symgrad.backends.codegen import load_module
from symgrad.pipeline import generate_code
sys.path.insert(0, sys.argv[2])
from catalogue import catalogue

assert jax.local_device_count() == 2, jax.devices()
net = catalogue()[sys.argv[1]]
mod = load_module(generate_code(net, target="jax", hvp=True), "gen_jax_pmap")
params = mod.init_params(0)
rng = np.random.default_rng(0)
X = rng.normal(size=(2, 3, net.size(net.input_width)))
Y = np.eye(net.size(net.output_width))[rng.integers(0, net.size(net.output_width), (2, 3))]
# data parallel: parameters replicated, one shard of the batch per device, gradients averaged
step = jax.pmap(
    lambda p, x, y: jax.lax.pmean(jax.grad(mod.loss)(p, x, y), "d"),
    axis_name="d", in_axes=(None, 0, 0),
)
got = step(params, X, Y)
want = jax.grad(mod.loss)(params, X.reshape(6, -1), Y.reshape(6, -1))
err = max(float(np.max(np.abs(got[k][1] - want[k]))) for k in mod.PARAM_NAMES)
assert err < 1e-12, err
for f in (mod.forward, lambda p, x: mod.vjp(p, x, np.ones((3, Y.shape[-1])))[0]):
    out = jax.pmap(f, in_axes=(None, 0))(params, X)
    assert np.allclose(out[1], f(params, X[1]), rtol=1e-12, atol=1e-14)
hv = jax.pmap(mod.hvp, in_axes=(None, 0, 0, None))(params, X, Y, params)
one = mod.hvp(params, X[0], Y[0], params)
assert all(np.allclose(hv[k][0], one[k], rtol=1e-12, atol=1e-14) for k in mod.PARAM_NAMES)
print("pmap ok", err)
"""


@pytest.mark.parametrize("name", ["softmax_ce", "residual"])
def test_jax_pmap_over_two_host_devices(name):
    """The JAX module's loss, gradients, forward, VJP and HVP under ``jax.pmap`` (two CPU
    devices forced by XLA_FLAGS, in a subprocess): data-parallel gradients averaged with
    ``pmean`` equal the whole batch's."""
    pytest.importorskip("jax")
    import os

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    res = subprocess.run(
        [sys.executable, "-c", _PMAP_SCRIPT, name, os.path.dirname(__file__)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "pmap ok" in res.stdout


def test_jax_vmap_of_forward_vjp_and_hvp(jax64):
    _, mod = generated("softmax_map", "jax")
    code = generate_code(NETS["softmax_map"], target="jax", hvp=True)
    hmod = load_module(code, "gen_jax_vmap_hvp")
    params, X, Y = point("softmax_map", batch=6)
    Xs, Ys = X.reshape(2, 3, -1), Y.reshape(2, 3, -1)
    out = jax64.vmap(mod.forward, in_axes=(None, 0))(params, Xs)
    assert rel_error(np.asarray(out[1]), np.asarray(mod.forward(params, Xs[1])))[1] <= TOL
    G = np.ones((3, Y.shape[1]))
    dx = jax64.vmap(lambda x: mod.vjp(params, x, G)[0])(Xs)
    assert rel_error(np.asarray(dx[0]), np.asarray(mod.vjp(params, Xs[0], G)[0]))[1] <= TOL
    hv = jax64.vmap(hmod.hvp, in_axes=(None, 0, 0, None))(params, Xs, Ys, params)
    one = hmod.hvp(params, Xs[1], Ys[1], params)
    for k in mod.PARAM_NAMES:
        assert rel_error(np.asarray(hv[k][1]), np.asarray(one[k]))[1] <= TOL, k
