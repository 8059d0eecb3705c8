"""Conv, pooling and flatten nets on the torch, JAX and CuPy targets: the generated
module's loss and gradients against the NumPy module's and the independent PyTorch
reference (float64, 1e-7 relative), the vector-Jacobian product against autograd,
``torch.autograd.gradcheck``, ``jax.jit`` and ``jax.test_util.check_grads``; CuPy runs
where cupy and a GPU are."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import test_conv
import test_pool

from symgrad.backends.codegen import load_module
from symgrad.ir import layers as L
from symgrad.ir.conv import Conv, Flatten, Pool
from symgrad.pipeline import generate_code, parse
from symgrad.verify.reference import backend, reference_forward
from symgrad.verify.verify import random_targets, rel_error, torch_reference

torch = pytest.importorskip("torch")

TOL = 1e-7
CASES = {
    **{f"conv:{k}": v for k, v in test_conv.CASES.items()},
    **{f"pool:{k}": v for k, v in test_pool.CASES.items()},
    "conv1d-avgpool1d": (
        [2, 12],
        [
            Conv(3, 3, padding=1, activation="tanh", dims=1),
            Pool("avg", 2, dims=1),
            Conv(2, 2, stride=2, dims=1, activation="relu"),
            Flatten(),
            L.Dense(3, "softmax"),
        ],
    ),
    "conv-dilated": (  # dilation (2, 1) with stride 2 and padding, then a dilated conv1d-like sweep
        [2, 9, 8],
        [
            Conv(3, (3, 2), stride=2, padding=1, dilation=(2, 1), activation="tanh"),
            Conv(2, 2, dilation=2, activation="relu"),
            Flatten(),
            L.Dense(3, "softmax"),
        ],
    ),
    "conv2d-maxpool-pad": (
        [1, 7, 7],
        [
            Conv(2, 3, padding=1, activation="relu"),
            Pool("max", 3, stride=2, padding=1),
            Flatten(),
            L.Dense(2, "sigmoid"),
        ],
    ),
}


@functools.cache
def network(case: str):
    if case == "digits_cnn":
        return parse("examples/digits_cnn/digits_cnn.toml")
    shape, layers = CASES[case]
    loss = "cross_entropy" if getattr(layers[-1], "activation", None) == "softmax" else "mse"
    return L.build(case.replace(":", "_").replace("-", "_"), shape, layers, loss)


@functools.cache
def generated(case: str, target: str):
    return load_module(generate_code(network(case), target=target), f"gen_{target}_conv")


def point(case: str, batch: int = 3, seed: int = 0):
    net = network(case)
    rng = np.random.default_rng(seed)
    params = {p.name: rng.uniform(-0.6, 0.6, net.shape(p)) for p in net.params}
    X = rng.normal(size=(batch, *net.input_shape))
    return params, X, random_targets(net, batch, rng)


NAMES = ["digits_cnn", *CASES]


@pytest.mark.parametrize("case", NAMES)
def test_torch_conv_matches_numpy_and_reference(case):
    net = network(case)
    params, X, Y = point(case)
    want_loss, want = generated(case, "numpy").loss_and_grads(params, X, Y)
    ref_yhat, ref_loss, ref = torch_reference(net, params, X, Y)
    mod = generated(case, "torch")
    tp = {k: torch.tensor(v) for k, v in params.items()}
    value, grads = mod.loss_and_grads(tp, X, Y)
    assert rel_error(float(value), want_loss)[1] <= TOL
    assert rel_error(float(value), ref_loss)[1] <= TOL
    assert rel_error(mod.forward(tp, X).numpy(), ref_yhat)[1] <= TOL
    for k in mod.PARAM_NAMES:
        assert rel_error(grads[k].numpy(), want[k])[1] <= TOL, k
        assert rel_error(grads[k].numpy(), ref[k])[1] <= TOL, k
    # through autograd, with an incoming gradient and dL/dX
    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    Xt = torch.tensor(X, requires_grad=True)
    (-1.5 * mod.loss(leaves, Xt, Y)).backward()
    for k in mod.PARAM_NAMES:
        assert rel_error(leaves[k].grad.numpy(), -1.5 * ref[k])[1] <= TOL, k
    ops = backend("torch")
    Xr = torch.tensor(X, requires_grad=True)
    _, rv = reference_forward(
        ops, net, {k: torch.tensor(v) for k, v in params.items()}, Xr, torch.tensor(Y)
    )
    (want_dx,) = torch.autograd.grad(-1.5 * rv, [Xr])
    assert rel_error(Xt.grad.numpy(), want_dx.numpy())[1] <= TOL


@pytest.mark.parametrize("case", NAMES)
def test_torch_conv_vjp_matches_autograd(case):
    net = network(case)
    params, X, _ = point(case, seed=1)
    G = np.random.default_rng(2).normal(size=(X.shape[0], net.size(net.output_width)))
    ref = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    Xr = torch.tensor(X, requires_grad=True)
    yhat, _ = reference_forward(backend("torch"), net, ref, Xr, torch.zeros(yhat_shape(net, X)))
    want = torch.autograd.grad(yhat, [Xr, *ref.values()], torch.tensor(G))
    mod = generated(case, "torch")
    dx, grads = mod.vjp({k: torch.tensor(v) for k, v in params.items()}, X, G)
    assert rel_error(dx.numpy(), want[0].numpy())[1] <= TOL
    for k, w in zip(ref, want[1:], strict=True):
        assert rel_error(grads[k].numpy(), w.numpy())[1] <= TOL, k


def yhat_shape(net, X) -> tuple[int, int]:
    return (X.shape[0], net.size(net.output_width))


@pytest.mark.parametrize("case", ["digits_cnn", "conv1d-avgpool1d", "conv2d-maxpool-pad"])
def test_torch_conv_gradcheck(case):
    mod = generated(case, "torch")
    params, X, Y = point(case, batch=2, seed=3)
    args = (torch.tensor(X, requires_grad=True), torch.tensor(Y))
    leaves = tuple(torch.tensor(params[k], requires_grad=True) for k in mod.PARAM_NAMES)
    assert torch.autograd.gradcheck(mod.LossFunction.apply, (*args, *leaves))
    assert torch.autograd.gradcheck(mod.NetworkFunction.apply, (args[0], *leaves))


def test_torch_conv_float32_stays_float32():
    mod = generated("digits_cnn", "torch")
    params, X, Y = point("digits_cnn")
    value, grads = mod.loss_and_grads(
        {k: torch.tensor(v, dtype=torch.float32) for k, v in params.items()}, X, Y
    )
    assert value.dtype == torch.float32
    assert all(g.dtype == torch.float32 for g in grads.values())
    with pytest.raises(ValueError, match=r"expected \(n, 1, 8, 8\)"):
        mod.loss_and_grads({k: torch.tensor(v) for k, v in params.items()}, X[:, 0], Y)


@pytest.fixture(scope="module")
def jax64():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


@pytest.mark.parametrize("case", NAMES)
def test_jax_conv_matches_numpy_and_reference(case, jax64):
    net = network(case)
    params, X, Y = point(case)
    want_loss, want = generated(case, "numpy").loss_and_grads(params, X, Y)
    ref_yhat, ref_loss, ref = torch_reference(net, params, X, Y)
    mod = generated(case, "jax")
    value, grads = jax64.jit(jax64.value_and_grad(mod.loss))(params, X, Y)
    assert rel_error(float(value), want_loss)[1] <= TOL
    assert rel_error(float(value), ref_loss)[1] <= TOL
    assert rel_error(np.asarray(jax64.jit(mod.forward)(params, X)), ref_yhat)[1] <= TOL
    v2, g2 = jax64.jit(mod.loss_and_grads)(params, X, Y)
    assert rel_error(float(v2), ref_loss)[1] <= TOL
    for k in mod.PARAM_NAMES:
        assert rel_error(np.asarray(grads[k]), want[k])[1] <= TOL, k
        assert rel_error(np.asarray(grads[k]), ref[k])[1] <= TOL, k
        assert rel_error(np.asarray(g2[k]), ref[k])[1] <= TOL, k
    # the VJP of the output against autograd through the reference network
    G = np.random.default_rng(2).normal(size=yhat_shape(net, X))
    tref = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    Xr = torch.tensor(X, requires_grad=True)
    yhat, _ = reference_forward(backend("torch"), net, tref, Xr, torch.zeros(yhat_shape(net, X)))
    wv = torch.autograd.grad(yhat, [Xr, *tref.values()], torch.tensor(G))
    dx, gv = jax64.jit(mod.vjp)(params, X, G)
    assert rel_error(np.asarray(dx), wv[0].numpy())[1] <= TOL
    for k, w in zip(tref, wv[1:], strict=True):
        assert rel_error(np.asarray(gv[k]), w.numpy())[1] <= TOL, k


@pytest.mark.parametrize("case", ["digits_cnn", "conv1d-avgpool1d"])
def test_jax_conv_check_grads(case, jax64):
    from jax.test_util import check_grads

    mod = generated(case, "jax")
    params, X, Y = point(case, batch=2, seed=4)
    check_grads(lambda p, x: mod.loss(p, x, Y), (params, X), order=1, modes=["rev"])
    check_grads(lambda p, x: mod.forward(p, x), (params, X), order=1, modes=["rev"])


@pytest.mark.parametrize("case", NAMES)
def test_cupy_conv_module_compiles(case):
    code = generate_code(network(case), target="cupy")
    compile(code, f"<cupy_{case}>", "exec")
    assert "np." not in code.split("def forward", 1)[1]


HVP_CASES = ["digits_cnn", "conv1d-avgpool1d", "conv2d-maxpool-pad", "conv:conv2d-stack-no-bias"]


def _reference_flat(case: str, params, X, Y):
    """The reference loss and output as torch functions of the flat parameter vector."""
    net = network(case)
    names = list(params)
    shapes = [params[k].shape for k in names]
    sizes = [int(np.prod(s)) for s in shapes]
    Xt, Yt = torch.tensor(X), torch.tensor(Y)

    def unflat(theta):
        return {k: t.reshape(s) for k, t, s in zip(names, theta.split(sizes), shapes, strict=True)}

    def run(theta):
        return reference_forward(backend("torch"), net, unflat(theta), Xt, Yt)

    flat = torch.cat([torch.tensor(params[k]).reshape(-1) for k in names])
    return run, flat, unflat


@pytest.mark.parametrize("target", ["numpy", "torch", "jax"])
@pytest.mark.parametrize("case", HVP_CASES)
def test_conv_hvp_matches_torch_autograd(case, target, jax64):
    """--hvp on conv nets: the R-operator through correlations, pooling (the tangent at
    the arg-max) and flatten, against torch.autograd.functional.hvp of the reference."""
    params, X, Y = point(case, batch=3, seed=6)
    rng = np.random.default_rng(7)
    V = {k: rng.normal(size=v.shape) for k, v in params.items()}
    run, flat, unflat = _reference_flat(case, params, X, Y)
    v = torch.cat([torch.tensor(V[k]).reshape(-1) for k in params])
    want = unflat(torch.autograd.functional.hvp(lambda th: run(th)[1], flat, v)[1])
    code = generate_code(network(case), target=target, hvp=True)
    mod = load_module(code, f"gen_{target}_conv_hvp")
    if target == "torch":
        tp, tv = ({k: torch.tensor(x) for k, x in d.items()} for d in (params, V))
        got = mod.hvp(tp, X, Y, tv)
    elif target == "jax":
        got = jax64.jit(mod.hvp)(params, X, Y, V)
    else:
        got = mod.hvp(params, X, Y, V)
    for k in params:
        assert rel_error(np.asarray(got[k]), want[k].numpy())[1] <= TOL, k
    if target == "numpy":  # the Gauss-Newton product: J^T H_L J V
        yhat = run(flat)[0].detach()
        J = torch.func.jacrev(lambda th: run(th)[0])(flat).reshape(-1, flat.numel())
        net = network(case)
        Yt = torch.tensor(Y)
        if net.loss.name == "cross_entropy":
            lo = lambda yh: -(Yt * torch.log(yh)).sum(1).mean()  # noqa: E731
        else:
            lo = lambda yh: ((yh - Yt) ** 2).mean()  # noqa: E731
        H = torch.func.hessian(lo)(yhat).reshape(yhat.numel(), yhat.numel())
        gv = unflat(J.T @ (H @ (J @ v)))
        got = mod.ggnvp(params, X, Y, V)
        for k in params:
            assert rel_error(got[k], gv[k].numpy())[1] <= TOL, k


@pytest.mark.parametrize(
    "case,batch", [("digits_cnn", 3), ("digits_cnn", 200)] + [(c, 3) for c in CASES]
)
def test_cupy_conv_code_on_numpy_standing_in(case, batch, monkeypatch):
    """The CuPy module's helpers (the NumPy ones on ``cp``) run with NumPy standing in for
    CuPy: the same values as the NumPy module, small and large batches (both code paths).
    (The real thing runs in test_targets.py where cupy and a GPU are.)"""
    monkeypatch.setitem(__import__("sys").modules, "cupy", np)
    mod = load_module(generate_code(network(case), target="cupy"), "gen_cupy_on_numpy")
    params, X, Y = point(case, batch=batch)
    want_loss, want = generated(case, "numpy").loss_and_grads(params, X, Y)
    value, grads = mod.loss_and_grads(params, X, Y)
    assert rel_error(float(value), want_loss)[1] <= 1e-12
    for k in want:
        assert rel_error(grads[k], want[k])[1] <= 1e-12, k


def _gpu() -> bool:
    import importlib.util

    if importlib.util.find_spec("cupy") is None:
        return False
    import cupy

    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no driver, no device: skip
        return False


@pytest.mark.skipif(not _gpu(), reason="needs cupy and a CUDA GPU")
@pytest.mark.parametrize("case", NAMES)
def test_cupy_conv_matches_reference(case):
    import cupy as cp

    mod = load_module(generate_code(network(case), target="cupy"), "gen_cupy_conv")
    params, X, Y = point(case)
    _, ref_loss, ref = torch_reference(network(case), params, X, Y)
    value, grads = mod.loss_and_grads({k: cp.asarray(v) for k, v in params.items()}, X, Y)
    assert rel_error(float(value), ref_loss)[1] <= TOL
    for k in mod.PARAM_NAMES:
        assert rel_error(cp.asnumpy(grads[k]), ref[k])[1] <= TOL, k


@pytest.mark.parametrize("target", ["numpy", "torch", "jax", "cupy"])
def test_conv_modules_are_lint_clean(target, tmp_path):
    import shutil
    import subprocess

    if shutil.which("ruff") is None:
        pytest.skip("ruff is not installed")
    path = tmp_path / f"cnn_{target}.py"
    path.write_text(generate_code(network("conv1d-avgpool1d"), target=target, hvp=True))
    res = subprocess.run(
        ["ruff", "check", "--isolated", "--no-cache", str(path)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr
