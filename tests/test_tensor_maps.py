"""Tensor maps: a map's output may have several axes (``indices``, ``shape``) and it may
read earlier quantities of any shape (a sequence ``[T, d]``, channels ``[C, W]``). Checked
against hand-written PyTorch (``tensor_map_check.check_spec``)."""

from __future__ import annotations

import pytest
import sympy as sp
from tensor_map_check import check_spec, torch

import symgrad
from symgrad.errors import SpecError
from symgrad.frontend.spec import loads_spec
from symgrad.ir import layers as L
from symgrad.pipeline import derive, generate

F = torch.nn.functional

DEPTHWISE = """
name = "depthwise"
input = [3, 8]
sizes = { C = 3, K = 3, O = 6 }
loss = "mse"
[[layer]]
type = "map"
indices = ["c", "w"]
shape = ["C", "O"]
expr = "tanh(sum(g[c, j] * a[c, w + j], j) + b[c])"
params = { g = ["C", "K"], b = ["C"] }
[[layer]]
type = "flatten"
[[layer]]
units = 2
"""


def depthwise_torch(P, X, Y):
    a1 = torch.tanh(F.conv1d(X, P["g1"][:, None, :], P["b1"], groups=3))
    z3 = a1.reshape(len(X), -1) @ P["W3"].T + P["b3"]
    return F.mse_loss(z3, Y)


POOLING = """
name = "attention_pooling"
input = [6, 4]
sizes = { T = 6, d = 4 }
loss = "cross_entropy"
[[layer]]
type = "map"
indices = ["t"]
shape = ["T"]
expr = "sum(Wa[e] * x[t, e], e)"
params = { Wa = ["d"] }
[[layer]]
type = "map"
expr = "exp(a[i]) / sum(exp(a[j]), j)"
[[layer]]
type = "map"
units = "d"
expr = "sum(a2[t] * x[t, i], t)"
[[layer]]
units = 2
activation = "softmax"
"""


def pooling_torch(P, X, Y):
    s = X @ P["Wa1"]
    w = torch.softmax(s, dim=1)
    pooled = (w[:, :, None] * X).sum(1)
    logits = pooled @ P["W4"].T + P["b4"]
    return F.cross_entropy(logits, Y)


CASES = {
    "depthwise_conv_by_hand": (DEPTHWISE, depthwise_torch),
    "attention_pooling": (POOLING, pooling_torch),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_torch(case):
    check_spec(*CASES[case])


@pytest.mark.parametrize("target", ["torch", "jax"])
@pytest.mark.parametrize("case", list(CASES))
def test_other_targets_match_torch(case, target):
    pytest.importorskip(target)
    check_spec(*CASES[case], target=target, batches=(3,))


@pytest.mark.parametrize("case", list(CASES))
def test_every_target_and_hvp_generate(case):
    net = loads_spec(CASES[case][0])
    for target in ("numpy", "torch", "jax", "cupy"):
        compile(generate(net, target=target, hvp=True), f"<{target}>", "exec")


def test_next_layer_sees_the_shape():
    net = loads_spec(DEPTHWISE)
    assert net.stages[0].shape == (3, 6) and net.stages[0].in_shape == (3, 8)
    assert net.stages[1].in_shape == (3, 6)  # the flatten reads the map's (C, O)


def test_derivation_names_the_maps_own_indices():
    d = derive(loads_spec(DEPTHWISE))
    assert d.step("dg1").indices == (sp.Symbol("p", integer=True), sp.Symbol("q", integer=True))
    text = symgrad.render_document(d, to="text") if hasattr(symgrad, "render_document") else ""
    assert "g1" in text or text == ""


def test_python_api_tensor_map():
    c, w, j = (sp.Symbol(s, integer=True) for s in ("c", "w", "j"))
    a, g = symgrad.a, sp.IndexedBase("g")
    m = L.Map(
        sp.Sum(g[c, j] * a[c, w + j], (j, 0, 2)), indices=(c, w), shape=(3, 6), params={g: (3, 3)}
    )
    net = L.build(
        "dw",
        [3, 8],
        [
            m,
            symgrad.Flatten()
            if hasattr(symgrad, "Flatten")
            else __import__("symgrad.ir.conv", fromlist=["Flatten"]).Flatten(),
            L.Dense(2),
        ],
        "mse",
    )
    assert net.stages[0].shape == (3, 6)


@pytest.mark.parametrize(
    "change, message",
    [
        ('shape = ["C", "O"]', "needs both indices and shape"),
        ('indices = ["c", "w"]\nshape = ["C"]', "must be a list of 2 extents"),
        ('indices = ["c", "zz"]\nshape = ["C", "O"]', "unknown index 'zz'"),
        ('indices = ["c", "w"]\nshape = ["C", 7]', "j + w reads 0..8 but axis 1 of x"),
    ],
)
def test_bad_tensor_maps_are_one_line_errors(change, message):
    text = f"""
name = "bad"
input = [3, 8]
sizes = {{ C = 3, O = 6 }}
loss = "mse"
[[layer]]
type = "map"
{change}
expr = "sum(g[c, j] * a[c, w + j], j)"
params = {{ g = ["C", 3] }}
[[layer]]
type = "flatten"
[[layer]]
units = 2
"""
    with pytest.raises(SpecError) as err:
        loads_spec(text, file="bad.toml")
    assert message in str(err.value) and "bad.toml" in str(err.value), str(err.value)


def _hvp_cases():
    import test_attention
    import test_index_arithmetic_maps as arith
    import test_shared_params

    return {
        "glu": arith.GLU,
        "conv_zero_padding": arith.CONV_PAD,
        "tied_autoencoder": test_shared_params.TIED,
        "self_attention": test_attention.SINGLE,
        "depthwise": DEPTHWISE,
    }


@pytest.mark.parametrize(
    "case", ["glu", "conv_zero_padding", "tied_autoencoder", "self_attention", "depthwise"]
)
def test_hvp_matches_differences_of_gradients(case):
    # the generated hvp (forward-over-reverse) against central differences of the
    # generated gradients along the same direction (relative error <= 1e-6)
    import numpy as np

    from symgrad.backends.codegen import load_module

    text = _hvp_cases()[case]
    net = loads_spec(text)
    mod = load_module(generate(net, hvp=True))
    rng = np.random.default_rng(1)
    P = {k: v + rng.normal(scale=0.3, size=v.shape) for k, v in mod.init_params(0).items()}
    shape = tuple(net.input_shape) or (net.size(net.input_width),)
    C = net.size(net.output_width)
    X, Y = rng.normal(size=(3, *shape)), np.eye(C)[rng.integers(0, C, 3)]
    V = {k: rng.normal(size=v.shape) for k, v in P.items()}
    hv = mod.hvp(P, X, Y, V)
    hv = hv[1] if isinstance(hv, tuple) else hv
    eps = 1e-5
    gp = mod.loss_and_grads({k: P[k] + eps * V[k] for k in P}, X, Y)[1]
    gm = mod.loss_and_grads({k: P[k] - eps * V[k] for k in P}, X, Y)[1]
    for k in P:
        fd = (gp[k] - gm[k]) / (2 * eps)
        assert np.abs(hv[k] - fd).max() <= 1e-6 * max(np.abs(fd).max(), 1e-8), k
