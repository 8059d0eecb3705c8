"""Several ranges in one sum, ``sum(f, j, k)`` and ``sum(f, (j, 0, r - 1), (k, 0, s - 1))``:
parsed as nested sums (the first range outermost), and generated modules against PyTorch
autograd (``tensor_map_check.check_spec``: float64 within 1e-7, float32 within 1e-4)."""

from __future__ import annotations

import pytest
import sympy as sp
from tensor_map_check import check_spec, torch

from symgrad.errors import SpecError
from symgrad.frontend.expr_parser import parse_expression
from symgrad.frontend.spec import loads_spec

F = torch.nn.functional

N = sp.Symbol("n", integer=True, positive=True)
ARRAYS = {"W": sp.IndexedBase("W"), "x": sp.IndexedBase("x")}
INDICES = {nm: (sp.Symbol(nm, integer=True), N) for nm in ("i", "j", "k")}


def parse(text: str) -> sp.Expr:
    return parse_expression(
        text, scalars={"n": N}, arrays=ARRAYS, indices=INDICES, free_indices=("i",)
    )


def test_several_ranges_are_nested_sums():
    i, j, k = (INDICES[nm][0] for nm in "ijk")
    W, x = ARRAYS["W"], ARRAYS["x"]
    want = sp.Sum(sp.Sum(W[i, j, k] * x[j] * x[k], (k, 0, N - 1)), (j, 0, N - 1))
    assert parse("sum(W[i, j, k] * x[j] * x[k], j, k)") == want
    assert parse("sum(W[i, j, k] * x[j] * x[k], (j, 0, n - 1), (k, 0, n - 1))") == want
    assert parse("sum(W[i, j, k] * x[j] * x[k], j, (k, 0, n - 1))") == want
    # an explicit first value shifts that index only
    shifted = parse("sum(W[i, j, k] * x[j] * x[k], (j, 1, 2), k)")
    assert shifted == sp.Sum(sp.Sum(W[i, j + 1, k] * x[j + 1] * x[k], (k, 0, N - 1)), (j, 0, 1))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sum(x[j], j, j)", "already bound"),
        ("sum(x[j] * x[k], j, i)", "cannot sum over free index 'i'"),
        ("sum(x[j] * x[k], j, (k, 2, 1))", "the range is empty"),
        ("sum(x[j] * x[k], j, (k, 0))", "unexpected ')'"),
    ],
)
def test_bad_ranges_are_one_line_errors(text, message):
    with pytest.raises(SpecError) as info:
        parse(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


BILINEAR = """name = "bilinear"
input = 4
loss = "mse"
[[layer]]
type = "map"
units = 3
expr = "sum(W[i, j, k] * x[j] * x[k], {ranges})"
params = {{ W = [3, "n", "n"] }}
"""


def bilinear_torch(P, X, Y):
    return F.mse_loss(torch.einsum("ijk,nj,nk->ni", P["W1"], X, X), Y)


@pytest.mark.parametrize("ranges", ["j, k", "(j, 0, n - 1), (k, 0, 3)"])
@pytest.mark.parametrize("target", ["numpy", "torch", "jax"])
def test_bilinear_map_matches_torch(ranges, target):
    pytest.importorskip(target)
    check_spec(BILINEAR.format(ranges=ranges), bilinear_torch, target=target, batches=(1, 4))


CONV = """name = "conv_by_hand"
input = [2, 6]
sizes = {{ C = 2, O = 4 }}
loss = "mse"
[[layer]]
type = "map"
indices = ["c", "t"]
shape = ["C", "O"]
expr = "sum(G[c, j, k] * x[k, t + j], {ranges})"
params = {{ G = ["C", 3, "C"] }}
[[layer]]
type = "flatten"
[[layer]]
units = 2
"""


def conv_torch(P, X, Y):
    a1 = F.conv1d(X, P["G1"].permute(0, 2, 1))
    return F.mse_loss(a1.reshape(len(X), -1) @ P["W3"].T + P["b3"], Y)


@pytest.mark.parametrize("ranges", ["(j, 0, 2), k", "j, (k, 0, C - 1)"])
@pytest.mark.parametrize("target", ["numpy", "torch", "jax"])
def test_conv_over_channels_and_taps_matches_torch(ranges, target):
    pytest.importorskip(target)
    check_spec(CONV.format(ranges=ranges), conv_torch, target=target, batches=(1, 3))


def test_a_range_past_the_axis_is_refused():
    with pytest.raises(SpecError) as info:
        loads_spec(CONV.format(ranges="(j, 0, 3), k"))
    assert "layer 1" in str(info.value) or "layer[1]" in str(info.value)
