"""Self-attention written as tensor maps with ``softmax(e, u)``: single head against
``torch.nn.functional.scaled_dot_product_attention``, two heads against a hand-written
torch model (``tensor_map_check.check_spec``: float64 within 1e-7, float32 within 1e-4)."""

from __future__ import annotations

import pytest
from tensor_map_check import check_spec, torch

from symgrad.errors import SpecError
from symgrad.frontend.spec import loads_spec
from symgrad.pipeline import derive, generate

F = torch.nn.functional


def projection(n: int, name: str, src: str = "x") -> str:
    return f"""[[layer]]
type = "map"
indices = ["t", "e"]
shape = ["T", "d"]
expr = "sum({name}[e, i] * {src}[t, i], i)"
params = {{ {name} = ["d", "d"] }}
"""


SINGLE = (
    """name = "self_attention"
input = [5, 4]
sizes = { T = 5, d = 4 }
loss = "cross_entropy"
"""
    + projection(1, "Wq")
    + projection(2, "Wk")
    + projection(3, "Wv")
    + """[[layer]]
type = "map"
indices = ["t", "u"]
shape = ["T", "T"]
expr = "softmax(sum(a1[t, e] * a2[u, e], e) / sqrt(d), u)"
[[layer]]
type = "map"
indices = ["t", "e"]
shape = ["T", "d"]
expr = "sum(a4[t, u] * a3[u, e], u) + x[t, e]"
[[layer]]
type = "map"
expr = "sum(a5[t, i], t) / T"
units = "d"
[[layer]]
units = 2
activation = "softmax"
"""
)


def single_torch(P, X, Y):
    q, k, v = X @ P["Wq1"].T, X @ P["Wk2"].T, X @ P["Wv3"].T
    att = F.scaled_dot_product_attention(q, k, v) + X
    logits = att.mean(1) @ P["W7"].T + P["b7"]
    return F.cross_entropy(logits, Y)


TWO_HEADS = """name = "two_heads"
input = [5, 4]
sizes = { T = 5, d = 4, H = 2, D = 2 }
loss = "mse"
[[layer]]
type = "map"
indices = ["h", "t", "e"]
shape = ["H", "T", "D"]
expr = "sum(Wq[h, e, i] * x[t, i], i)"
params = { Wq = ["H", "D", "d"] }
[[layer]]
type = "map"
indices = ["h", "t", "e"]
shape = ["H", "T", "D"]
expr = "sum(Wk[h, e, i] * x[t, i], i)"
params = { Wk = ["H", "D", "d"] }
[[layer]]
type = "map"
indices = ["h", "t", "e"]
shape = ["H", "T", "D"]
expr = "sum(Wv[h, e, i] * x[t, i], i)"
params = { Wv = ["H", "D", "d"] }
[[layer]]
type = "map"
indices = ["h", "t", "u"]
shape = ["H", "T", "T"]
expr = "softmax(sum(a1[h, t, e] * a2[h, u, e], e) / sqrt(D), u)"
[[layer]]
type = "map"
indices = ["t", "c"]
shape = ["T", "d"]
expr = "sum(sum(Wo[c, h, e] * sum(a4[h, t, u] * a3[h, u, e], u), e), h) + x[t, c]"
params = { Wo = ["d", "H", "D"] }
[[layer]]
type = "flatten"
[[layer]]
units = 3
"""


def two_heads_torch(P, X, Y):
    q = torch.einsum("hei,nti->nhte", P["Wq1"], X)
    k = torch.einsum("hei,nti->nhte", P["Wk2"], X)
    v = torch.einsum("hei,nti->nhte", P["Wv3"], X)
    p = torch.softmax(q @ k.transpose(-1, -2) / 2**0.5, dim=-1)
    o = torch.einsum("che,nhte->ntc", P["Wo5"], p @ v) + X
    return F.mse_loss(o.reshape(len(X), -1) @ P["W7"].T + P["b7"], Y)


def test_single_head_matches_scaled_dot_product_attention():
    check_spec(SINGLE, single_torch)


def test_two_heads_match_torch():
    check_spec(TWO_HEADS, two_heads_torch)


@pytest.mark.parametrize("target", ["torch", "jax"])
def test_single_head_on_other_targets(target):
    pytest.importorskip(target)
    check_spec(SINGLE, single_torch, target=target, batches=(3,))


def test_every_target_and_hvp_generate():
    net = loads_spec(SINGLE)
    for target in ("numpy", "torch", "jax", "cupy"):
        compile(generate(net, target=target, hvp=True), f"<{target}>", "exec")


def test_softmax_map_splits_into_scores_and_softmax():
    net = loads_spec(SINGLE)
    names = [s.name for s in net.stages]
    assert names[3:5] == ["z4", "a4"]  # the scores, then their softmax over u
    assert str(net.stages[4].body).startswith("exp(")
    d = derive(net)
    # the scores' adjoint in forward values: P * (dP - rowsum(P * dP))
    assert str(d.step("delta4").component) == (
        "(da4[c, w] - Sum(a4[c, k]*da4[c, k], (k, 0, 4)))*a4[c, w]"
    )
    assert str(d.step("da3").component) == "Sum(a4[k, c]*da5[k, w], (k, 0, 4))"  # P^T dY
    assert str(d.step("da4").component) == "Sum(a3[w, k]*da5[c, k], (k, 0, 3))"  # dY V^T
    assert "delta4[c, k]" in str(d.step("da1").component)  # dS K / sqrt(d)
    assert "delta4[k, c]" in str(d.step("da2").component)  # dS^T Q / sqrt(d)


@pytest.mark.parametrize(
    "expr, message",
    [
        ("softmax(sum(a1[t, e], e), u)", "does not use index 'u'"),
        ("softmax(a1[t, u])", "softmax() takes 2 arguments"),
        ("softmax(a1[t, u], f)", "undeclared index 'f'"),
    ],
)
def test_bad_softmax_is_a_one_line_error(expr, message):
    text = SINGLE.replace("softmax(sum(a1[t, e] * a2[u, e], e) / sqrt(d), u)", expr)
    with pytest.raises(SpecError) as err:
        loads_spec(text, file="att.toml")
    assert message in str(err.value) and "layer[4].expr" in str(err.value), str(err.value)


EXAMPLE = "examples/attention/attention.toml"


@pytest.mark.parametrize(
    "grad, formula, code",
    [
        ("delta4", "a4[c, w] * (da4[c, w] - sum(a4[c, k] * da4[c, k], k))", 0),
        ("delta4", "a4[c, w] * da4[c, w]", 1),  # the row sum left out
        ("dWq1", "sum(da1[k, p] * x[k, q], k)", 0),
    ],
)
def test_check_grades_formulas_with_several_free_indices(grad, formula, code):
    from pathlib import Path

    from symgrad.cli import main

    spec = str(Path(__file__).resolve().parents[1] / EXAMPLE)
    assert main(["check", spec, "--grad", grad, "--formula", formula]) == code
