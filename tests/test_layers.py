"""The layers people invent (#12, non-convolution half), end to end against PyTorch.

Each network here is written twice: once as a symgrad spec (TOML or the Python API), once
by hand in PyTorch below (``torch.nn.functional`` where torch has the layer, plain tensor
code otherwise). The generated NumPy module must match torch autograd in float64 to
1e-7 relative, and stay float32 (and close) in float32, at batch 1 and 16, with odd sizes.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import sympy as sp

from symgrad import Dense, LayerNorm, Map, RMSNorm, a, build, i, j, n
from symgrad.backends.codegen import load_module
from symgrad.frontend.spec import loads_spec
from symgrad.ir.reductions import ReduceMax, ReduceMin
from symgrad.pipeline import derive, generate

torch = pytest.importorskip("torch")
TF = torch.nn.functional

TOL64 = 1e-7
TOL32 = 2e-4

RESIDUAL_TOML = """
name = "resblock"
input = 5
loss = "mse"
sizes = { h = 5 }
penalty = "1e-2 * W1[p, q]**2 + 1e-3 * g3[p]**2"

[[layer]]
units = "h"
activation = "tanh"

[[layer]]
units = "h"
activation = "relu"

[[layer]]                       # a residual block with a learnable temperature
type = "map"
name = "res"
expr = "g[i] * a[i] / T + a1[i] + 0.5 * x[i]"
params = { g = ["n"], T = [] }

[[layer]]                       # a map that changes width
type = "map"
units = 2
expr = "sum(V[i, j] * a[j], j) - max(a[j], j) / n"
params = { V = [2, "h"] }
"""


def torch_resblock(p, X, Y):
    a1 = torch.tanh(X @ p["W1"].T + p["b1"])
    a2 = torch.relu(a1 @ p["W2"].T + p["b2"])
    a3 = p["g3"] * a2 / p["T3"] + a1 + 0.5 * X
    a4 = a3 @ p["V4"].T - torch.amax(a3, dim=1, keepdim=True) / 5
    pen = 1e-2 * (p["W1"] ** 2).sum() + 1e-3 * (p["g3"] ** 2).sum()
    return TF.mse_loss(a4, Y) + pen


NORM_TOML = """
name = "norms"
input = 4
loss = "cross_entropy"

[[layer]]
units = 7
activation = "silu"

[[layer]]
type = "layernorm"

[[layer]]
units = 3

[[layer]]
type = "rmsnorm"

[[layer]]
units = 3
activation = "softmax"
"""


def torch_norms(p, X, Y):
    a1 = TF.silu(X @ p["W1"].T + p["b1"])
    a2 = TF.layer_norm(a1, (7,), p["gamma2"], p["beta2"], eps=1e-5)
    z3 = a2 @ p["W3"].T + p["b3"]
    a4 = TF.rms_norm(z3, (3,), p["gamma4"], eps=1e-5)
    return TF.cross_entropy(a4 @ p["W5"].T + p["b5"], Y)


PAIRWISE_TOML = """
name = "pairwise"
input = 3
loss = "bce"

[[layer]]
units = 4
activation = "tanh"

[[layer]]
type = "map"
expr = "a[i] * sum((a[j] - a[i])**2, j) / n - min(a[k], k)"

[[layer]]
units = 1
activation = "sigmoid"
"""


def torch_pairwise(p, X, Y):
    a1 = torch.tanh(X @ p["W1"].T + p["b1"])
    diff = a1[:, None, :] - a1[:, :, None]  # [s, i, j] = a[j] - a[i]
    a2 = a1 * (diff**2).sum(dim=2) / 4 - torch.amin(a1, dim=1, keepdim=True)
    return TF.binary_cross_entropy(torch.sigmoid(a2 @ p["W3"].T + p["b3"]), Y)


WIDTH1_TOML = """
name = "width1"
input = 1
loss = "mse"

[[layer]]
type = "map"
expr = "g[i] * a[i] + x[i]"
params = { g = [1] }

[[layer]]
units = 1
activation = "tanh"

[[layer]]
type = "map"
expr = "a[i] - max(a[j], j) + a1[i] * sum(a[k]**2, k)"
"""


def torch_width1(p, X, Y):
    a1 = p["g1"] * X + X
    a2 = torch.tanh(a1 @ p["W2"].T + p["b2"])
    a3 = a2 - torch.amax(a2, dim=1, keepdim=True) + a1 * (a2**2).sum(dim=1, keepdim=True)
    return TF.mse_loss(a3, Y)


CASES = {
    "resblock": (RESIDUAL_TOML, torch_resblock),
    "norms": (NORM_TOML, torch_norms),
    "pairwise": (PAIRWISE_TOML, torch_pairwise),
    "width1": (WIDTH1_TOML, torch_width1),
}


@functools.cache
def module(name: str):
    net = loads_spec(CASES[name][0], file=f"{name}.toml")
    return net, load_module(generate(net), f"layers_{name}")


def sample(name: str, batch: int, seed: int = 0):
    net, mod = module(name)
    rng = np.random.default_rng(seed)
    params = {k: v + rng.normal(0.0, 0.3, v.shape) for k, v in mod.init_params(seed).items()}
    X = rng.normal(0.0, 1.0, (batch, net.size(net.input_width)))
    C = net.size(net.output_width)
    if net.loss.name == "cross_entropy":
        Y = np.eye(C)[rng.integers(0, C, batch)]
    elif net.loss.name == "bce":
        Y = rng.uniform(0.0, 1.0, (batch, C))
    else:
        Y = rng.normal(0.0, 1.0, (batch, C))
    return params, X, Y


def torch_loss_and_grads(name: str, params, X, Y):
    leaves = {
        k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()
    }
    value = CASES[name][1](leaves, torch.tensor(X), torch.tensor(Y))
    grads = torch.autograd.grad(value, list(leaves.values()))
    return float(value.detach()), {k: g.numpy() for k, g in zip(leaves, grads, strict=True)}


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("name", sorted(CASES))
def test_float64_matches_torch(name, batch):
    _, mod = module(name)
    params, X, Y = sample(name, batch)
    value, grads = mod.loss_and_grads(params, X, Y)
    ref_value, ref = torch_loss_and_grads(name, params, X, Y)
    assert rel(value, ref_value) < TOL64
    assert set(grads) == set(ref)
    for k in ref:
        assert grads[k].shape == params[k].shape, k
        assert rel(grads[k], ref[k]) < TOL64, (k, rel(grads[k], ref[k]))


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("name", sorted(CASES))
def test_float32_in_float32_out(name, batch):
    _, mod = module(name)
    params, X, Y = sample(name, batch, seed=1)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    value, grads = mod.loss_and_grads(p32, X.astype(np.float32), Y.astype(np.float32))
    _, ref = torch_loss_and_grads(name, params, X, Y)
    for k in ref:
        assert grads[k].dtype == np.float32, (k, grads[k].dtype)
        assert rel(grads[k], ref[k]) < TOL32, (k, rel(grads[k], ref[k]))
    assert mod.forward(p32, X.astype(np.float32)).dtype == np.float32


def test_residual_gradients_add_up_and_the_derivation_says_so():
    net, _ = module("resblock")
    d = derive(net)
    da1 = d.step("da1")
    assert {lay for lay, _ in da1.contributions} == {2, 3}
    assert any("da1 receives contributions from layers 2 and 3" in s for s in d.notes)
    # the input feeds layer 1 and the residual map (layer 3): dx sums both
    assert {lay for lay, _ in d.step("dx").contributions} == {1, 3}


@pytest.mark.parametrize("batch", [1, 16])
def test_penalty_is_added_once_per_batch(batch):
    """Weight decay does not scale with the batch: loss and gradient differ from the same
    network without the penalty by exactly the penalty and its gradient."""
    _, mod = module("resblock")
    plain_net = loads_spec(RESIDUAL_TOML.replace("penalty =", "# penalty ="), file="plain.toml")
    assert plain_net.penalty is None
    plain = load_module(generate(plain_net), "layers_plain")
    params, X, Y = sample("resblock", batch)
    value, grads = mod.loss_and_grads(params, X, Y)
    value0, grads0 = plain.loss_and_grads(params, X, Y)
    pen = 1e-2 * np.sum(params["W1"] ** 2) + 1e-3 * np.sum(params["g3"] ** 2)
    assert abs(value - value0 - pen) < 1e-12 * max(1.0, pen)
    np.testing.assert_allclose(grads["W1"] - grads0["W1"], 2e-2 * params["W1"], atol=1e-14)
    np.testing.assert_allclose(grads["g3"] - grads0["g3"], 2e-3 * params["g3"], atol=1e-14)
    np.testing.assert_allclose(grads["b1"], grads0["b1"], atol=1e-15)


def test_max_reduction_ties_share_the_gradient_like_torch_amax():
    g = sp.IndexedBase("g", real=True)
    net = build(
        "ties",
        4,
        [
            Map(g[i] * a[i], name="gain", params={g: (n,)}),
            Map(a[i] - ReduceMax(a[j], j, n - 1) + ReduceMin(a[j], j, n - 1), name="shift"),
            Dense(1),
        ],
        "mse",
    )
    mod = load_module(generate(net), "ties")
    params = {k: v + 0.1 for k, v in mod.init_params(0).items()}
    params["g1"] = np.ones(4)
    X = np.array([[1.0, 3.0, 3.0, -2.0], [0.5, 0.5, -1.0, -1.0]])  # ties at the max and min
    Y = np.array([[0.3], [-0.2]])
    _, grads = mod.loss_and_grads(params, X, Y)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    Xt = torch.tensor(X)
    a1 = t["g1"] * Xt
    a2 = a1 - torch.amax(a1, dim=1, keepdim=True) + torch.amin(a1, dim=1, keepdim=True)
    loss = TF.mse_loss(a2 @ t["W3"].T + t["b3"], torch.tensor(Y))
    ref = torch.autograd.grad(loss, [t["g1"]])[0].numpy()
    assert rel(grads["g1"], ref) < TOL64


def test_python_api_norm_layers_match_the_toml_ones():
    net = build(
        "norms",
        4,
        [Dense(7, "silu"), LayerNorm(), Dense(3), RMSNorm(), Dense(3, "softmax")],
        "cross_entropy",
    )
    toml_net, _ = module("norms")
    assert [s.body for s in net.stages] == [s.body for s in toml_net.stages]
    assert net.param_names == toml_net.param_names
    assert [p.init for p in net.params if p.name.startswith(("gamma", "beta"))] == [
        "ones",
        "zeros",
        "ones",
    ]


def test_nested_sums_and_pairwise_terms_print_in_components():
    """No neat matrix form: the documents show the component form, the code runs."""
    net, _ = module("pairwise")
    d = derive(net)
    from symgrad.calculus.matrix_form import Comp

    assert isinstance(next(f for f in d.forward if f.stage.name == "a2").matrix, Comp)
    code = generate(net)
    assert "for " not in code.split("def loss_and_grads")[1]  # no Python loops


def test_graph_draws_skip_connections():
    from symgrad.pipeline import render_graph

    net, _ = module("resblock")
    dot = render_graph(derive(net))
    assert '"a1" -> "a3"' in dot and '"x" -> "a3"' in dot  # forward skip edges
    assert '"a3" -> "a1"' in dot  # the skip connection's share of da1 flows back


def test_documents_show_components_per_sample_and_einsum_batched():
    from symgrad.pipeline import render_document

    net, _ = module("resblock")
    text = render_document(derive(net), to="text")
    assert "max_j(a3[j])" in text  # component form of the max reduction
    # the batched fallback as its entries, the sample index first (never an array program)
    assert "dL/da3 = [sum_k (da4[s, k]*(V4[k, i] - [i == argmax(a3[s, i])]/h))]_(s, i)" in text
    assert 'einsum("' not in text and "dL/dT3 = sum_s (" in text  # a number: no entries
    latex = render_document(derive(net), to="latex")
    math = [line for line in latex.splitlines() if "&=" in line]
    assert not [line for line in math if r"\texttt" in line]
    assert any(r"\right]_{s i}" in line for line in math)
    assert r"\right]_{}" not in latex


CONV_MIX_TOML = """
name = "convmix"
input = [1, 7, 7]
loss = "cross_entropy"
penalty = "1e-3 * W1[p, q, r, s]**2"

[[layer]]
type = "conv2d"
channels = 3
kernel = 3
padding = 1
stride = 2
activation = "relu"

[[layer]]
type = "maxpool2d"
kernel = 2

[[layer]]
type = "flatten"

[[layer]]
units = 5
activation = "tanh"

[[layer]]
type = "layernorm"

[[layer]]
type = "map"
expr = "a[i] + a4[i] * g[i]"
params = { g = ["n"] }

[[layer]]
units = 3
activation = "softmax"
"""


def test_conv_net_with_weight_decay_norm_and_skip_verifies():
    """The new constructs compose with the conv layers."""
    from symgrad.verify.verify import verify_network

    net = loads_spec(CONV_MIX_TOML, file="convmix.toml")
    assert net.penalty is not None and net.penalty.has(net.params[0].base)
    report = verify_network(net, against=("fd", "torch"))
    assert report.ok, report


def test_python_api_errors_name_the_layer():
    from symgrad.errors import SpecError

    later = sp.IndexedBase("a3", real=True)
    with pytest.raises(SpecError, match="layer 2: map expression uses undeclared arrays: a3"):
        build("bad", 3, [Dense(4), Map(a[i] + later[i]), Dense(2)], "mse")
    with pytest.raises(SpecError, match="penalty: unknown parameter V9"):
        build("bad", 3, [Dense(2)], "mse", penalty=sp.IndexedBase("V9")[i] ** 2)
    x_ = sp.IndexedBase("x", real=True)
    with pytest.raises(SpecError, match="index i runs 0..3 but axis 0 of x has positions 0..2"):
        build("bad", 3, [Dense(4), Map(a[i] + x_[i])], "mse")
