"""Shared ("tied") parameters: a map reads an earlier layer's parameter by name (``W1``),
and the gradient adds the contributions of every use. Checked against hand-written
PyTorch (``tensor_map_check.check_spec``)."""

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

TIED = """
name = "tied_autoencoder"
input = 6
sizes = { H = 3 }
loss = "mse"
[[layer]]
type = "map"
units = "H"
expr = "sigmoid(sum(W[i, j] * a[j], j) + b[i])"
params = { W = ["H", "n"], b = ["H"] }
[[layer]]
type = "map"
units = 6
expr = "sum(W1[j, i] * a[j], j) + bd[i]"
params = { bd = [6] }
"""


def tied_torch(P, X, Y):
    h = torch.sigmoid(X @ P["W1"].T + P["b1"])
    return F.mse_loss(h @ P["W1"] + P["bd2"], Y)


def rnn_spec(T: int = 5) -> str:
    """An RNN unrolled over T steps of D = 2 inputs (x holds the T steps one after the
    other), hidden size H = 3: one shared recurrent matrix W2 and input matrix U1."""
    layers = [
        """[[layer]]
type = "map"
units = "H"
expr = "tanh(sum(U[i, j] * x[j], (j, 0, D - 1)) + b[i])"
params = { U = ["H", "D"], b = ["H"] }
""",
        """[[layer]]
type = "map"
units = "H"
expr = "tanh(sum(W[i, j] * a[j], j) + sum(U1[i, j] * x[j + D], (j, 0, D - 1)) + b1[i])"
params = { W = ["H", "H"] }
""",
    ]
    for t in range(2, T):
        layers.append(
            f"""[[layer]]
type = "map"
units = "H"
expr = "tanh(sum(W2[i, j] * a[j], j) + sum(U1[i, j] * x[j + {t}*D], (j, 0, D - 1)) + b1[i])"
"""
        )
    layers.append("[[layer]]\nunits = 2\n")
    head = f'name = "rnn"\ninput = {2 * T}\nsizes = {{ H = 3, D = 2 }}\nloss = "mse"\n'
    return head + "\n".join(layers)


def rnn_torch(T: int):
    def fn(P, X, Y):
        h = torch.tanh(X[:, 0:2] @ P["U1"].T + P["b1"])
        for t in range(1, T):
            h = torch.tanh(h @ P["W2"].T + X[:, 2 * t : 2 * t + 2] @ P["U1"].T + P["b1"])
        out = h @ P[f"W{T + 1}"].T + P[f"b{T + 1}"]
        return F.mse_loss(out, Y)

    return fn


def test_tied_autoencoder_matches_torch():
    net, _ = check_spec(TIED, tied_torch)
    assert [p.name for p in net.params] == ["W1", "b1", "bd2"]  # owned by layer 1


def test_unrolled_rnn_matches_torch():
    # float32 within 1e-3: torch's own float32 autograd is 7e-4 off float64 on this batch
    # (cancellation through five tanh steps)
    check_spec(rnn_spec(5), rnn_torch(5), tol32=1e-3)


@pytest.mark.parametrize("target", ["torch", "jax"])
def test_rnn_on_other_targets(target):
    pytest.importorskip(target)
    check_spec(rnn_spec(3), rnn_torch(3), target=target, batches=(4,), tol32=1e-3)


def test_derivation_says_where_the_contributions_come_from():
    d = derive(loads_spec(rnn_spec(5)))
    notes = " ".join(d.notes)
    assert "dW2 receives contributions from layers 2, 3, 4 and 5" in notes
    assert "dU1 receives contributions from layers 1, 2, 3, 4 and 5" in notes
    step = d.step("dW2")
    assert {lay for lay, _ in step.contributions} == {2, 3, 4, 5}  # BPTT: a sum over time


def test_every_target_and_hvp_generate():
    net = loads_spec(TIED)
    for target in ("numpy", "torch", "jax", "cupy"):
        code = generate(net, target=target, hvp=True)
        compile(code, f"<{target}>", "exec")


def test_python_api_reads_an_earlier_parameter_by_name():
    a, i, j, n = symgrad.a, symgrad.i, symgrad.j, symgrad.n
    W, b = sp.IndexedBase("W"), sp.IndexedBase("b")
    W1 = sp.IndexedBase("W1")
    enc = L.Map(
        sp.tanh(sp.Sum(W[i, j] * a[j], (j, 0, n - 1)) + b[i]), units=3, params={W: (3, n), b: (3,)}
    )
    dec = L.Map(sp.Sum(W1[j, i] * a[j], (j, 0, 2)), units=4)
    net = L.build("tied", 4, [enc, dec], "mse")
    assert net.stages[1].shared[0].name == "W1"
    assert [p.name for p in net.params] == ["W1", "b1"]


@pytest.mark.parametrize(
    "params, message",
    [
        ('{ t = ["n"] }', "parameter name 't' is reserved"),
        ('{ e = ["n"] }', "parameter name 'e' is reserved"),
        ('{ exp = ["n"] }', "parameter name 'exp' is reserved"),
        ('{ N = ["n"] }', "parameter name 'N' is reserved"),
    ],
)
def test_reserved_parameter_names(params, message):
    head = 'name = "bad"\ninput = 3\nloss = "mse"\n'
    text = head + f'[[layer]]\ntype = "map"\nexpr = "a[i]"\nparams = {params}\n'
    with pytest.raises(SpecError, match=message):
        loads_spec(text)
