"""Index arithmetic in users' maps: affine subscripts (``a[i + H]``, ``a[2*i + 1]``,
``a[i + j]``), zero padding, explicit reduction ranges, out-of-range errors. Each network
is checked against a hand-written PyTorch model (``tensor_map_check.check_spec``)."""

from __future__ import annotations

import pytest
from tensor_map_check import check_spec, torch

from symgrad.errors import SpecError
from symgrad.frontend.spec import loads_spec
from symgrad.pipeline import generate

F = torch.nn.functional if torch is not None else None


def dense(a, W, b):
    return a @ W.T + b


GLU = """
name = "glu"
input = 5
sizes = { H = 4 }
loss = "mse"
[[layer]]
units = 8
[[layer]]
type = "map"
units = "H"
expr = "a[i] * sigmoid(a[i + H])"
[[layer]]
units = 2
"""


def glu_torch(P, X, Y):
    z1 = dense(X, P["W1"], P["b1"])
    a2 = z1[:, :4] * torch.sigmoid(z1[:, 4:])
    return F.mse_loss(dense(a2, P["W3"], P["b3"]), Y)


MAXOUT = GLU.replace('expr = "a[i] * sigmoid(a[i + H])"', 'expr = "max(a[2*i], a[2*i + 1])"')
PAIR = GLU.replace('expr = "a[i] * sigmoid(a[i + H])"', 'expr = "(a[2*i] + a[2*i + 1]) / 2"')


def maxout_torch(P, X, Y):
    z1 = dense(X, P["W1"], P["b1"])
    a2 = torch.maximum(z1[:, 0::2], z1[:, 1::2])
    return F.mse_loss(dense(a2, P["W3"], P["b3"]), Y)


def pair_torch(P, X, Y):
    z1 = dense(X, P["W1"], P["b1"])
    a2 = (z1[:, 0::2] + z1[:, 1::2]) / 2
    return F.mse_loss(dense(a2, P["W3"], P["b3"]), Y)


CONV = """
name = "conv_by_hand"
input = 7
sizes = { K = 3, O = 5 }
loss = "mse"
[[layer]]
type = "map"
units = "O"
expr = "tanh(sum(g[j] * a[i + j], j) + b)"
params = { g = ["K"], b = [] }
[[layer]]
units = 2
"""

CONV_PAD = """
name = "conv_pad"
input = 7
sizes = { K = 3 }
loss = "mse"
[[layer]]
type = "map"
padding = "zeros"
expr = "tanh(sum(g[j] * a[i + j - 1], (j, 0, K - 1)))"
params = { g = ["K"] }
[[layer]]
units = 2
"""


def conv_torch(P, X, Y):
    a1 = torch.tanh(F.conv1d(X[:, None, :], P["g1"][None, None, :])[:, 0] + P["b1"])
    return F.mse_loss(dense(a1, P["W2"], P["b2"]), Y)


def conv_pad_torch(P, X, Y):
    a1 = torch.tanh(F.conv1d(X[:, None, :], P["g1"][None, None, :], padding=1)[:, 0])
    return F.mse_loss(dense(a1, P["W2"], P["b2"]), Y)


FM = """
name = "fm"
input = 5
sizes = { R = 3 }
loss = "mse"
[[layer]]
type = "map"
units = 1
expr = '''b + sum(g[j] * x[j], j)
  + 0.5 * sum(sum(V[j, k] * x[j], j)**2 - sum(V[j, k]**2 * x[j]**2, j), (k, 0, R - 1))'''
params = { b = [], g = ["n"], V = ["n", "R"] }
"""


def fm_torch(P, X, Y):
    V = P["V1"]
    inter = 0.5 * (((X @ V) ** 2) - (X**2) @ (V**2)).sum(1, keepdim=True)
    out = P["b1"] + X @ P["g1"][:, None] + inter
    return F.mse_loss(out, Y)


CASES = {
    "glu": (GLU, glu_torch),
    "maxout": (MAXOUT, maxout_torch),
    "pair_pooling": (PAIR, pair_torch),
    "conv_by_hand": (CONV, conv_torch),
    "conv_by_hand_zero_padding": (CONV_PAD, conv_pad_torch),
    "factorization_machine_r3_n5": (FM, fm_torch),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_torch(case):
    text, fn = CASES[case]
    check_spec(text, fn)


@pytest.mark.parametrize("target", ["torch", "jax"])
@pytest.mark.parametrize("case", ["glu", "conv_by_hand_zero_padding"])
def test_other_targets_match_torch(case, target):
    pytest.importorskip(target)
    text, fn = CASES[case]
    check_spec(text, fn, target=target, batches=(3,))


@pytest.mark.parametrize("case", ["glu", "conv_by_hand_zero_padding", "pair_pooling"])
def test_every_target_and_hvp_generate(case):
    net = loads_spec(CASES[case][0])
    for target in ("numpy", "torch", "jax", "cupy"):
        code = generate(net, target=target, hvp=True)
        assert "def hvp(" in code
        compile(code, f"<{target}>", "exec")


@pytest.mark.parametrize(
    "expr, message",
    [
        ("a[i + 1]", "subscript i + 1 reads 1..7 but axis 0 of a0"),
        ("a[2*i]", "subscript 2*i reads 0..12 but axis 0"),
        ("sum(a[i + j], j)", "cannot infer the range of index j"),
        ("sum(g[j] * a[j], j)", "index j subscripts axes of different sizes"),
        ("a[i*i]", "no product of indices"),
    ],
)
def test_out_of_range_reads_are_one_line_errors(expr, message):
    text = f"""
name = "bad"
input = 7
loss = "mse"
[[layer]]
type = "map"
expr = "{expr}"
params = {{ g = [3] }}
"""
    if "g[" not in expr:
        text = text.replace("params = { g = [3] }\n", "")
    with pytest.raises(SpecError) as err:
        loads_spec(text, file="bad.toml")
    msg = str(err.value)
    assert "bad.toml" in msg and "layer[1]" in msg, msg
    assert message.replace("a0", "") in msg, msg
    assert "\n" not in msg


def test_a_map_after_a_layer_of_symbolic_width_builds_and_derives():
    # the range check of a subscript waits for concrete widths instead of comparing symbols
    import sympy as sp

    import symgrad as sg
    from symgrad import Dense, Map, a, i, j, n

    h = sp.Symbol("h", integer=True, positive=True)
    norm = Map(a[i] / sp.sqrt(sp.Sum(a[j] ** 2, (j, 0, n - 1)) + sp.Float(1e-6)), name="l2")
    net = sg.build("symbolic_width", 3, [Dense(h, "tanh"), norm, Dense(2, "sigmoid")], "mse")
    assert [s.grad for s in sg.derive(net).steps][-1] == "dx"
    assert "def loss_and_grads(" in sg.generate(net.with_sizes(h=5))


FIXED_ENTRY = """
name = "fixed_entry"
input = 5
loss = "mse"
[[layer]]
units = 4
[[layer]]
type = "map"
expr = "a[i] * abs(a[0]) + a[2*i - 2*i + 3]"
[[layer]]
units = 2
"""


def fixed_entry_torch(P, X, Y):
    z1 = dense(X, P["W1"], P["b1"])
    a2 = z1 * z1[:, :1].abs() + z1[:, 3:4]
    return F.mse_loss(dense(a2, P["W3"], P["b3"]), Y)


@pytest.mark.parametrize("target", ["numpy", "torch", "jax"])
def test_a_fixed_entry_is_read_by_every_sample(target):
    """A subscript without an index (``a[0]``, or one that cancels) reads one entry of
    each sample, broadcast over the map's axis: it parses (it is not a constant) and every
    target matches autograd (float64 to 1e-7, float32 to 1e-4)."""
    pytest.importorskip(target)
    check_spec(FIXED_ENTRY, fixed_entry_torch, target=target)


@pytest.mark.parametrize("case", [*CASES, "fixed_entry"])
def test_the_c_target_equals_the_numpy_module(case, tmp_path):
    """Index arithmetic in C: reads at computed positions (zero outside the array) and
    their gradients under index conditions, compiled with -Wall -Wextra -Werror -pedantic,
    equal the NumPy module (float64 to 1e-12, float32 to 2e-4)."""
    import numpy as np
    from test_c_target import assert_same, c_module

    from symgrad.backends.c_loader import compiler

    if compiler() is None:
        pytest.skip("no C compiler (cc) on PATH")
    net = loads_spec(FIXED_ENTRY if case == "fixed_entry" else CASES[case][0])
    assert_same(net, c_module(net, tmp_path), 1e-12)
    f32 = tmp_path / "f32"
    f32.mkdir()
    assert_same(net, c_module(net, f32, "float32"), 2e-4, np.float32)
