"""How users' maps lower to array code: contractions that are (batched) matrix products
print as ``@`` (BLAS), a softmax along an axis as one library softmax, and a vector map
that is a softmax before a cross-entropy loss gets the built-in layer's fused delta.

Plans are checked against ``np.einsum`` on random arrays (float64, within 1e-12
relative); generated modules against PyTorch autograd (``tensor_map_check.check_spec``:
float64 within 1e-7, float32 within 1e-4)."""

from __future__ import annotations

import numpy as np
import pytest
from tensor_map_check import check_spec, torch, torch_loss_and_grads
from test_attention import SINGLE, TWO_HEADS, single_torch, two_heads_torch

from symgrad.backends.numpy_printer import SymgradNumPyPrinter
from symgrad.frontend.spec import loads_spec
from symgrad.ir.einsum_blas import matmul_plan
from symgrad.pipeline import derive, generate

F = torch.nn.functional

SIZES = dict(zip("abcdefg", (3, 4, 5, 6, 2, 7, 3), strict=True))


def _run_plan(spec: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The printed ``@`` expression of ``spec``, evaluated."""
    printer = SymgradNumPyPrinter()
    text = printer._einsum(spec, ["x", "y"], "")
    assert "einsum" not in text, text
    return eval(text, {"np": np, "x": x, "y": y})  # the test's own printed text


@pytest.mark.parametrize(
    "spec",
    [
        "abd,acd->abc",  # scores: q k^T per sample
        "cd,abd->abc",  # a projection: x W^T over a sequence
        "adc,abd->abc",  # weights times values
        "adb,adc->abc",  # P^T dY per sample
        "adb,adc->bc",  # a weight gradient summed over samples and positions
        "bda,cda->bc",  # summed axes leading the other way round
        "ad,ac->dc",  # X^T Y over the batch
        "abed,aecd->abc",  # two summed letters beside a batch axis: einsum stays
        "aebd,aecd->aebc",  # per head and sample
        "ebd,aecd->aebc",  # a per-head matrix broadcast over the samples
        "abd,dc->abc",
        "bd,acd->abc",
    ],
)
def test_matmul_plans_equal_einsum(spec):
    rng = np.random.default_rng(0)
    ins, out = spec.split("->")
    x, y = (rng.normal(size=[SIZES[c] for c in s]) for s in ins.split(","))
    if matmul_plan(spec) is None:
        pytest.skip("no matrix-product plan: einsum stays")
    got = _run_plan(spec, x, y)
    want = np.einsum(spec, x, y)
    assert got.shape == want.shape
    assert np.allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "spec",
    ["abd,abd->ab", "ab,ac->abc", "abc,abd->a", "ab,b->a", "aa,ab->b", "abd,acd->acb"],
)
def test_no_plan_where_there_is_no_matrix_product(spec):
    """Row dots, outer products, a side summed alone, a repeated letter, and an output
    that is no batched product without a transpose keep their einsum."""
    plan = matmul_plan(spec)
    if spec == "abd,acd->acb":  # y x^T: a plan with the operands swapped
        assert plan is not None and plan.left.operand == 1
        return
    assert plan is None


def test_most_plans_found():
    """The plans above are found (a skip there must not hide a regression)."""
    for spec in ("abd,acd->abc", "cd,abd->abc", "adc,abd->abc", "adb,adc->bc", "ebd,aecd->aebc"):
        assert matmul_plan(spec) is not None, spec


@pytest.mark.parametrize("target", ["numpy", "torch", "jax"])
def test_attention_code_has_matrix_products_and_one_softmax(target):
    pytest.importorskip(target)
    code = generate(loads_spec(SINGLE), target=target)
    body = code[code.index("def loss_and_grads") :] if target == "numpy" else code
    assert "einsum(" not in body.replace('einsum("abd,abd->ab"', "")
    assert " @ " in body
    softmax = {"numpy": "_softmax_axis(z4, 2)", "torch": "torch.softmax(z4, 2)"}
    assert "a4 = " + softmax.get(target, "jax.nn.softmax(z4, axis=2)") in code


@pytest.mark.parametrize("target", ["numpy", "torch", "jax"])
def test_attention_with_matrix_products_matches_torch(target):
    pytest.importorskip(target)
    check_spec(SINGLE, single_torch, target=target, batches=(1, 3))


def test_two_heads_with_matrix_products_match_torch():
    check_spec(TWO_HEADS, two_heads_torch, batches=(2,))


def test_large_scores_softmax_stays_finite():
    """Scores of a few hundred: the axis softmax shifts by the maximum (float32 finite)."""
    net, mod = check_spec(SINGLE, single_torch, batches=(2,))
    P = {k: 30 * v.astype(np.float32) for k, v in mod.init_params(1).items()}
    X = np.random.default_rng(1).normal(size=(2, 5, 4)).astype(np.float32)
    loss, grads = mod.loss_and_grads(P, X, np.eye(2, dtype=np.float32)[[0, 1]])
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads.values())


SOFTMAX_MAP = """name = "softmax_map"
input = 4
loss = "cross_entropy"
[[layer]]
units = 3
activation = "tanh"
[[layer]]
type = "map"
{shape}
expr = "{expr}"
{params}
"""

CASES = {
    "vector": ("units = 3", "softmax(a1[i], i)", ""),
    "indexed": ('indices = ["i"]\nshape = [3]', "softmax(a1[i], i)", ""),
    "scores": ("units = 3", "softmax(sum(V[i, j] * a1[j], j), i)", "params = { V = [3, 3] }"),
    "shifted": ("units = 3", "softmax(2 * a1[i] + 1, i)", ""),
}


def _softmax_map_torch(case):
    def fn(P, X, Y):
        a1 = torch.tanh(X @ P["W1"].T + P["b1"])
        z = {"scores": lambda: a1 @ P["V2"].T, "shifted": lambda: 2 * a1 + 1}.get(
            case, lambda: a1
        )()
        return F.cross_entropy(z, Y)

    return fn


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("target", ["numpy", "torch", "jax"])
def test_softmax_map_with_cross_entropy_matches_torch(case, target):
    pytest.importorskip(target)
    shape, expr, params = CASES[case]
    text = SOFTMAX_MAP.format(shape=shape, expr=expr, params=params)
    check_spec(text, _softmax_map_torch(case), target=target, batches=(1, 4))


@pytest.mark.parametrize("case", sorted(CASES))
def test_softmax_map_gets_the_fused_delta_of_the_builtin(case):
    """The map's softmax and cross-entropy fuse to (yhat - y)/N, as the built-in's."""
    shape, expr, params = CASES[case]
    d = derive(loads_spec(SOFTMAX_MAP.format(shape=shape, expr=expr, params=params)))
    fused = [s for s in d.steps if s.fused]
    assert len(fused) == 1
    assert str(fused[0].component).replace(" ", "") in ("a2[i]-y[i]", "-y[i]+a2[i]")
    code = generate(loads_spec(SOFTMAX_MAP.format(shape=shape, expr=expr, params=params)))
    assert "a2 - Y" in code


def test_attention_in_c_matches_torch(tmp_path):
    """The C target runs the axis softmax as its own reductions (float64, within 1e-7)."""
    from symgrad.backends.c_emit import generate_c
    from symgrad.backends.c_loader import compiler, load_c
    from symgrad.backends.codegen import load_module

    if compiler() is None:
        pytest.skip("no C compiler")
    net = loads_spec(SINGLE)
    code, header = generate_c(derive(net), dtype="float64", prefix="net")
    (tmp_path / "net.c").write_text(code)
    (tmp_path / "net.h").write_text(header)
    cmod = load_c(tmp_path / "net.c")
    rng = np.random.default_rng(2)
    init = load_module(generate(net)).init_params(2)
    params = {k: v + rng.normal(scale=0.3, size=v.shape) for k, v in init.items()}
    X = rng.normal(size=(3, 5, 4))
    Y = np.eye(2)[[0, 1, 1]]
    loss, grads = cmod.loss_and_grads(params, X, Y)
    want_loss, want = torch_loss_and_grads(single_torch, params, X, Y)
    assert loss == pytest.approx(want_loss, rel=1e-9)
    for k, g in want.items():
        assert np.abs(grads[k] - g).max() <= 1e-7 * max(np.abs(g).max(), 1e-12), k


def test_attention_document_reads_as_matrix_products():
    """dV = P^T dY, dP = dY V^T, dQ = dS K / sqrt(d), dK = dS^T Q / sqrt(d)."""
    from symgrad.documents.render import render

    text = render(derive(loads_spec(SINGLE)), "text")
    for line in (
        "dL/da3 = a4.mT @ da5",
        "dL/da4 = da5 @ a3.mT",
        "dL/da1 = (delta4 @ a2)/sqrt(d)",
        "dL/da2 = (delta4.mT @ a1)/sqrt(d)",
    ):
        assert line in text, line
