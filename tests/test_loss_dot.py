"""The loss value as a dot product: chosen from the loss statement's factors (two arrays of
the full batched shape), and equal to PyTorch's loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from symgrad import Dense, build
from symgrad.backends.codegen import load_module
from symgrad.pipeline import generate


def _module(acts: tuple[str, ...], loss: str, name: str):
    layers = [Dense(w, f) for w, f in zip((5, 3), acts, strict=True)]
    src = generate(build(name, 4, layers, loss))
    return src, load_module(src, name)


def test_cross_entropy_value_is_one_dot_product_and_matches_torch():
    src, mod = _module(("tanh", "softmax"), "cross_entropy", "dot_ce")
    assert "np.vdot(Y, l1)" in src and "l1 *= Y" not in src
    rng = np.random.default_rng(3)
    X = rng.normal(size=(7, 4)) * 4
    Y = rng.dirichlet(np.ones(3), size=7)  # soft targets: every element of Y is read
    params = mod.init_params(seed=1)
    value, _ = mod.loss_and_grads(params, X, Y)
    t = {k: torch.tensor(v) for k, v in params.items()}
    z = torch.tanh(torch.tensor(X) @ t["W1"].T + t["b1"]) @ t["W2"].T + t["b2"]
    ref = torch.nn.functional.cross_entropy(z, torch.tensor(Y)).item()
    assert float(value) == pytest.approx(ref, rel=1e-12, abs=1e-14)


def test_squared_error_keeps_its_elementwise_sum():
    # (a - y)**2 is a power, not a product of two arrays: no dot product
    src, _ = _module(("tanh", "sigmoid"), "mse", "dot_mse")
    assert "vdot" not in src.split("def loss_and_grads")[1].split("_finite(")[0]


@pytest.mark.parametrize("n", [1, 21, 100, 300])  # each path of the target check
@pytest.mark.parametrize("bad", ["sum", "negative", "nan"])
def test_target_rows_checked_at_every_batch_size(n: int, bad: str):
    _, mod = _module(("tanh", "softmax"), "cross_entropy", "dot_ce_rows")
    rng = np.random.default_rng(n)
    X = rng.normal(size=(n, 4))
    Y = rng.dirichlet(np.ones(3), size=n)
    params = mod.init_params()
    mod.loss_and_grads(params, X, Y)  # valid targets pass
    r = n // 2
    Y[r] = {"sum": [0.5, 0.3, 0.3], "negative": [1.2, -0.2, 0.0], "nan": [np.nan, 0.5, 0.5]}[bad]
    want = "Y contains inf or nan" if bad == "nan" else f"Y row {r} is not a probability"
    with pytest.raises(ValueError, match=want):
        mod.loss_and_grads(params, X, Y)
