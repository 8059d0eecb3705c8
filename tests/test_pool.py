"""Pooling and flatten: generated code against PyTorch (ties included) and the references."""

from __future__ import annotations

import numpy as np
import pytest
from test_conv import check_against_torch, torch_grads

from symgrad.backends.codegen import load_module
from symgrad.ir import layers as L
from symgrad.ir.conv import Conv, Flatten, Pool
from symgrad.pipeline import generate
from symgrad.verify.reference import jax_reference, torch_reference

pytest.importorskip("torch")

CASES = {
    "maxpool2d": ([2, 6, 6], [Pool("max", 2), Flatten(), L.Dense(2)]),
    "maxpool2d-stride1-nonsquare": (
        [1, 5, 6],
        [Pool("max", (2, 3), stride=1), Flatten(), L.Dense(2)],
    ),
    "maxpool2d-pad1-stride2": (
        [1, 7, 7],
        [Pool("max", 3, stride=2, padding=1), Flatten(), L.Dense(2)],
    ),
    "avgpool2d": ([2, 6, 4], [Pool("avg", 2), Flatten(), L.Dense(2)]),
    "avgpool2d-pad1-stride2": (
        [1, 7, 5],
        [Pool("avg", 3, stride=2, padding=1), Flatten(), L.Dense(3)],
    ),
    "maxpool1d": ([3, 8], [Pool("max", 2, dims=1), Flatten(), L.Dense(2)]),
    "avgpool1d-stride1": ([1, 5], [Pool("avg", 2, stride=1, dims=1), Flatten(), L.Dense(1)]),
    "conv-relu-maxpool-avgpool": (
        [1, 8, 8],
        [Conv(3, 3, activation="relu"), Pool("max", 2), Pool("avg", 3), Flatten(), L.Dense(2)],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_pooling_matches_torch(case):
    shape, layers = CASES[case]
    check_against_torch(layers, shape)


@pytest.mark.parametrize("kernel,stride,n", [(2, None, 8), (2, None, 200), (3, 1, 8)])
def test_maxpool_ties_go_to_the_first_maximum_as_in_torch(kernel, stride, n):
    """Small and large batches take different code paths (windows as axes, or a loop over
    window offsets); both must route ties like torch."""
    layers = [
        Conv(2, 1, activation="relu"),
        Pool("max", kernel, stride=stride),
        Flatten(),
        L.Dense(2),
    ]
    net = L.build("ties", [1, 7, 7] if stride == 1 else [1, 6, 6], layers, "mse")
    mod = load_module(generate(net))
    params = mod.init_params(3)
    params["W1"] = np.abs(params["W1"]) + 0.5
    params["b1"] = np.zeros_like(params["b1"])
    rng = np.random.default_rng(1)
    X = rng.integers(-1, 2, size=(n, *net.input_shape)).astype(float)  # ties everywhere
    Y = rng.normal(size=(n, 2))
    want_loss, want = torch_grads(layers, "mse", params, X, Y)
    got_loss, got = mod.loss_and_grads(params, X, Y)
    assert got_loss == pytest.approx(want_loss, rel=1e-12)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-9, atol=1e-12)


def test_flatten_is_torch_row_major_order():
    layers = [Flatten(), L.Dense(3)]
    net = L.build("f", [2, 3, 4], layers, "mse")
    mod = load_module(generate(net))
    params = mod.init_params(0)
    X = np.arange(24.0).reshape(1, 2, 3, 4)
    want = X.reshape(1, -1) @ params["W2"].T + params["b2"]
    np.testing.assert_allclose(mod.forward(params, X), want, rtol=1e-12)
    check_against_torch(layers, [2, 3, 4])


@pytest.mark.parametrize("ref", [torch_reference, jax_reference])
def test_independent_references_agree_with_generated_code(ref):
    layers = [
        Conv(3, (3, 2), stride=2, padding=1, activation="tanh"),
        Pool("max", 2, stride=1),
        Pool("avg", (1, 3)),
        Flatten(),
        L.Dense(2, "softmax"),
    ]
    net = L.build("r", [2, 7, 6], layers, "cross_entropy")
    mod = load_module(generate(net))
    params = mod.init_params(2)
    rng = np.random.default_rng(2)
    X = rng.normal(size=(5, 2, 7, 6))
    Y = np.eye(2)[rng.integers(0, 2, 5)]
    out = ref(net, params, X, Y)
    if out is None:
        pytest.skip("library not installed")
    _, want_loss, want = out
    got_loss, got = mod.loss_and_grads(params, X, Y)
    assert got_loss == pytest.approx(want_loss, rel=1e-10)
    for k in want:
        assert np.abs(got[k] - want[k]).max() <= 1e-7 * np.abs(want[k]).max(), k
