"""dtype fidelity: float32 in gives float32 out, for every construct the spec
grammar allows (each function, each built-in activation and loss, max/min/abs forms, map
layers with sums) and for SymPy constants (pi, E) written with the Python API.

Each network is generated, run on float32 parameters, inputs and targets, and every
returned array is checked for its dtype, shape and finiteness.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from symgrad import Dense, Map, a, build, i, j, n, x, y_s, yhat_s
from symgrad.backends.codegen import load_module
from symgrad.frontend.spec import loads_spec
from symgrad.ir.layers import ACTIVATION_NAMES
from symgrad.pipeline import generate

#: One custom activation per function of the grammar (and forms of max/min/abs).
FUNCTION_FORMS = {
    "exp": "exp(-x**2)",
    "log": "log(1 + x**2)",
    "sqrt": "sqrt(1 + x**2)",
    "abs": "abs(x)",
    "tanh": "tanh(x)",
    "cosh": "cosh(x)",
    "sinh": "sinh(x)",
    "sin": "sin(x)",
    "cos": "cos(x)",
    "sigmoid": "sigmoid(x)",
    "max": "max(x, 0.5*x)",
    "min": "min(x, 1)",
    "clip": "max(min(x, 1), -1)",
    "nested_max": "max(max(x, 0.1*(x)), 0.1*(max(x, 0.1*(x))))",  # once a RecursionError
    "max_min_abs": "max(x, 0) + 0.1*min(x, 0) + 0.01*abs(x)",
    "power": "x**3/3 + x/2",
    "division": "x/(1 + abs(x))",
    "log1p": "log(1 + exp(x))",
    "expm1": "exp(x) - 1",
}

#: Map layers (component form with sums) written in the grammar.
MAP_FORMS = {
    "l2norm": "a[i] / sqrt(sum(a[j]**2, j) + 1e-6)",
    "log_softmax": "a[i] - log(sum(exp(a[j]), j))",
    "softmax_map": "exp(a[i]) / sum(exp(a[j]), j)",
    "center": "a[i] - sum(a[j], j)/3",
}

LOSSES = {
    "mse": '"mse"',
    "bce": '"bce"',
    "logcosh": '{ name = "logcosh", expr = "log(cosh(yhat - y))" }',
    "abs": '{ name = "l1", expr = "abs(yhat - y)" }',
    "huber": '{ name = "phuber", expr = "sqrt(1 + (yhat - y)**2) - 1" }',
    "max": '{ name = "hinge", expr = "max(0, 1 - yhat*y)" }',
}


def _spec(activation: str, loss: str = '"mse"', extra: str = "") -> str:
    return f"""
name = "dtype_net"
input = 3
loss = {loss}
[[layer]]
units = 3
activation = {activation}
{extra}
"""


def _check_float32(net, seed: int = 0) -> None:
    mod = load_module(generate(net), "dtype_net")
    rng = np.random.default_rng(seed)
    params = mod.init_params(seed, dtype=np.float32)
    X = rng.normal(0, 1, (5, mod.INPUT_SIZE)).astype(np.float32)
    Y = rng.uniform(0.1, 0.9, (5, mod.OUTPUT_SIZE)).astype(np.float32)
    if net.loss.name == "cross_entropy":
        Y /= Y.sum(axis=1, keepdims=True)
    yhat = mod.forward(params, X)
    assert yhat.dtype == np.float32
    value, grads = mod.loss_and_grads(params, X, Y)
    assert np.isfinite(value)
    assert type(value) is np.float32, type(value)
    for k, p in params.items():
        assert grads[k].dtype == np.float32, f"d{k} is {grads[k].dtype}"
        assert grads[k].shape == p.shape
        assert np.isfinite(grads[k]).all()


@pytest.mark.parametrize("form", sorted(FUNCTION_FORMS))
def test_every_function_keeps_float32(form):
    act = f'{{ name = "f_{form}", expr = "{FUNCTION_FORMS[form]}" }}'
    _check_float32(loads_spec(_spec(act)))


@pytest.mark.parametrize("act", ACTIVATION_NAMES)
def test_every_builtin_activation_keeps_float32(act):
    loss = '"cross_entropy"' if act == "softmax" else '"mse"'
    _check_float32(loads_spec(_spec(f'"{act}"', loss)))


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_loss_keeps_float32(loss):
    _check_float32(loads_spec(_spec('"sigmoid"', LOSSES[loss])))


def test_cross_entropy_keeps_float32():
    _check_float32(loads_spec(_spec('"softmax"', '"cross_entropy"')))


@pytest.mark.parametrize("form", sorted(MAP_FORMS))
def test_map_layers_keep_float32(form):
    extra = f'[[layer]]\ntype = "map"\nexpr = "{MAP_FORMS[form]}"'
    _check_float32(loads_spec(_spec('"tanh"', extra=extra)))


@pytest.mark.parametrize(
    "expr",
    [
        sp.pi * x,
        sp.E * x,
        x / sp.sqrt(sp.pi),
        sp.exp(-(x**2) / 2) / sp.sqrt(2 * sp.pi),
        sp.tanh(sp.sqrt(2 / sp.pi) * (x + sp.Rational(447, 10000) * x**3)),
    ],
    ids=["pi", "E", "1/sqrt(pi)", "gaussian", "gelu_tanh"],
)
def test_sympy_constants_print_as_python_floats(expr):
    net = build("consts", 3, [Dense(3, expr), Dense(2)], "mse")
    code = generate(net)
    assert "np.pi" not in code and "np.e " not in code and "np.e)" not in code
    _check_float32(net)


def test_constants_in_a_map_and_a_loss_keep_float32():
    net = build(
        "consts_map",
        3,
        [Dense(3, "tanh"), Map(a[i] * sp.pi - sp.Sum(a[j], (j, 0, n - 1)) / sp.E, name="m")],
        ("custom", sp.sqrt(sp.pi) * (yhat_s - y_s) ** 2),
    )
    _check_float32(net)


# -- the loss keeps the dtype on every target ---------------------------------------------


def _stand_in_cupy(monkeypatch):
    """NumPy standing in for CuPy (the CuPy module is the NumPy module's code on cp)."""
    import sys

    monkeypatch.setitem(sys.modules, "cupy", np)


@pytest.mark.parametrize("target", ["numpy", "cupy", "torch", "jax"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy", "bce"])
def test_loss_value_has_the_parameters_dtype_on_every_target(target, loss, monkeypatch):
    act = "softmax" if loss == "cross_entropy" else "sigmoid"
    net = build("dtype_loss", 3, [Dense(4, "tanh"), Dense(3, act)], loss)
    if target == "cupy":
        _stand_in_cupy(monkeypatch)
    mod = load_module(generate(net, target=target), f"dtype_loss_{target}_{loss}")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 3))
    Y = rng.uniform(0.1, 0.9, (5, 3))
    Y /= Y.sum(axis=1, keepdims=True)
    for dtype in ("float32", "float64"):
        if target == "torch":
            torch = pytest.importorskip("torch")
            dt = getattr(torch, dtype)
            params = mod.init_params(0, dt)
            Xt, Yt = torch.tensor(X, dtype=dt), torch.tensor(Y, dtype=dt)
            for value in (mod.loss_and_grads(params, Xt, Yt)[0], mod.loss(params, Xt, Yt)):
                assert isinstance(value, torch.Tensor) and value.dim() == 0
                assert value.dtype == dt
        elif target == "jax":
            jax = pytest.importorskip("jax")
            jax.config.update("jax_enable_x64", True)
            jnp = jax.numpy
            params = mod.init_params(0, getattr(jnp, dtype))
            Xj, Yj = jnp.asarray(X, dtype), jnp.asarray(Y, dtype)
            for value in (mod.loss_and_grads(params, Xj, Yj)[0], mod.loss(params, Xj, Yj)):
                assert value.shape == () and value.dtype == np.dtype(dtype)
        else:
            params = mod.init_params(0, getattr(np, dtype))
            Xn, Yn = X.astype(dtype), Y.astype(dtype)
            for value in (mod.loss_and_grads(params, Xn, Yn)[0], mod.loss(params, Xn, Yn)):
                assert type(value) is getattr(np, dtype), type(value)
            # the same number as the float64 computation, to float32's precision
            ref = mod.loss({k: v.astype(np.float64) for k, v in params.items()}, X, Y)
            rel = 1e-6 if dtype == "float32" else 1e-15
            assert float(value) == pytest.approx(float(ref), rel=rel)
