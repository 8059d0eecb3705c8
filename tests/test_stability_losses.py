"""Exact losses: near convergence (Y = yhat + eps) every built-in loss and two
custom ones keep their digits: float64 relative error <= 1e-6 at eps = 1e-8 and float32
<= 1e-3 at eps = 1e-3, against an mpmath reference (50 digits) evaluated at the very same
logits ``z = X W^T + b`` and targets the module sees. (An expanded residual
``a**2 + y**2 - 2 a y`` is 11% wrong at eps = 1e-8 in float64.)
"""

from __future__ import annotations

import functools

import mpmath as mp
import numpy as np
import pytest

from symgrad.backends.codegen import load_module
from symgrad.frontend.spec import loads_spec
from symgrad.pipeline import generate

mp.mp.dps = 50


def _spec(activation: str, loss: str) -> str:
    return f"""
name = "exact"
input = 3
loss = {loss}
[[layer]]
units = 3
activation = {activation}
"""


def _sig(z):
    return 1 / (1 + mp.exp(-z))


def _softmax(row):
    m = max(row)
    e = [mp.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


def _elementwise(act, loss):
    def ref(Z, Y):
        pairs = [(z, y) for zr, yr in zip(Z, Y, strict=True) for z, y in zip(zr, yr, strict=True)]
        vals = [loss(act(z), y) for z, y in pairs]
        return sum(vals) / len(vals)

    return ref


def _cross_entropy(Z, Y):
    rows = [
        -sum(y * mp.log(p) for y, p in zip(yr, _softmax(zr), strict=True))
        for zr, yr in zip(Z, Y, strict=True)
    ]
    return sum(rows) / len(rows)


CASES = {
    "mse_sigmoid": (_spec('"sigmoid"', '"mse"'), _elementwise(_sig, lambda a, y: (a - y) ** 2)),
    "mse_identity": (
        _spec('"identity"', '"mse"'),
        _elementwise(lambda z: z, lambda a, y: (a - y) ** 2),
    ),
    "bce_sigmoid": (
        _spec('"sigmoid"', '"bce"'),
        _elementwise(_sig, lambda a, y: -(y * mp.log(a) + (1 - y) * mp.log(1 - a))),
    ),
    "cross_entropy_softmax": (_spec('"softmax"', '"cross_entropy"'), _cross_entropy),
    "custom_logcosh": (
        _spec('"tanh"', '{ name = "logcosh", expr = "log(cosh(yhat - y))" }'),
        _elementwise(mp.tanh, lambda a, y: mp.log(mp.cosh(a - y))),
    ),
    "custom_pseudo_huber": (
        _spec('"identity"', '{ name = "phuber", expr = "sqrt(1 + (yhat - y)**2) - 1" }'),
        _elementwise(lambda z: z, lambda a, y: mp.sqrt(1 + (a - y) ** 2) - 1),
    ),
}


@functools.cache
def _module(name: str):
    return load_module(generate(loads_spec(CASES[name][0])), f"exact_{name}")


@pytest.mark.parametrize(
    ("dtype", "eps", "tol"), [(np.float64, 1e-8, 1e-6), (np.float32, 1e-3, 1e-3)]
)
@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_keeps_its_digits_near_convergence(name, dtype, eps, tol):
    mod = _module(name)
    rng = np.random.default_rng(3)
    params = {k: rng.normal(0, 0.5, v.shape).astype(dtype) for k, v in mod.init_params().items()}
    X = rng.normal(0, 1, (8, 3)).astype(dtype)
    yhat = mod.forward(params, X)
    Y = (yhat + dtype(eps)).astype(dtype)
    if name.startswith("cross_entropy"):  # targets must stay probability vectors
        Y64 = Y.astype(np.float64)
        Y = (Y64 / Y64.sum(axis=1, keepdims=True)).astype(dtype)
    value = mod.loss(params, X, Y)
    # The logits exactly as the module computes them (the same NumPy operations).
    Z = X @ params["W1"].T
    Z += params["b1"]
    Zm = [[mp.mpf(float(v)) for v in row] for row in Z]
    Ym = [[mp.mpf(float(v)) for v in row] for row in Y]
    ref = CASES[name][1](Zm, Ym)
    err = abs((mp.mpf(float(value)) - ref) / ref)
    assert err <= tol, f"{name}: relative error {float(err):.2e} (value {value}, ref {ref})"


def test_mse_residual_is_never_expanded():
    code = generate(loads_spec(CASES["mse_sigmoid"][0]))
    loss_part = code.split("# Loss:")[1].split("value =")[0]
    assert "Y**2" not in loss_part and "a1**2" not in loss_part
