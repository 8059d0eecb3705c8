"""Contractions with several row, column or summed axes (several heads, a weight gradient
per head) lowered to one reshaped (batched) matrix product instead of ``einsum``: every
plan against ``np.einsum`` on random arrays (float64, within 1e-12 relative), and the
networks whose code changes against PyTorch autograd (``tensor_map_check.check_spec``:
float64 within 1e-7, float32 within 1e-4)."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from tensor_map_check import check_spec, torch
from test_attention import SINGLE, TWO_HEADS, single_torch, two_heads_torch
from test_tensor_maps import DEPTHWISE, depthwise_torch

from symgrad.backends.numpy_printer import SymgradNumPyPrinter
from symgrad.backends.torch_printer import TorchPrinter
from symgrad.frontend.spec import loads_spec
from symgrad.ir.einsum_blas import matmul_plan, reshape_plan
from symgrad.pipeline import generate

SIZES = dict(zip("abcdefg", (3, 4, 5, 6, 2, 7, 3), strict=True))


def _specs() -> list[str]:
    """Every two-operand contraction of up to 3 + 3 axes over the letters a-e that has a
    summed letter, in a few output orders (deterministic)."""
    rng = np.random.default_rng(1)
    out: list[str] = []
    for nx, ny in ((2, 2), (2, 3), (3, 2), (3, 3), (3, 4), (4, 4)):
        for _ in range(25):
            x = "".join(rng.permutation(list("abcde"))[:nx])
            y = "".join(rng.permutation(list("abcde"))[:ny])
            shared = [c for c in x if c in y]
            free = [c for c in x + y if c not in shared]
            keep = [c for c in shared if rng.random() < 0.5]
            o = list(rng.permutation(free + keep))
            out.append(f"{x},{y}->{''.join(o)}")
    return sorted(set(out))


SPECS = _specs()


def _printed(printer, spec: str) -> str:
    return printer._einsum(spec, ["x", "y"], "")


@pytest.mark.parametrize("spec", SPECS)
def test_reshape_plans_equal_einsum(spec):
    rng = np.random.default_rng(0)
    ins, _ = spec.split("->")
    x, y = (rng.normal(size=[SIZES[c] for c in s]) for s in ins.split(","))
    text = _printed(SymgradNumPyPrinter(), spec)
    if "einsum" in text:
        assert reshape_plan(spec) is None and matmul_plan(spec) is None
        return
    got = eval(text, {"np": np, "x": x, "y": y})  # the test's own printed text
    want = np.einsum(spec, x, y)
    assert got.shape == want.shape
    assert np.allclose(got, want, rtol=1e-12, atol=1e-12), text
    tt = _printed(TorchPrinter(), spec).replace("np.", "torch.")
    tgot = eval(tt, {"torch": torch, "x": torch.tensor(x), "y": torch.tensor(y)})
    assert np.allclose(tgot.numpy(), want, rtol=1e-12, atol=1e-12), tt


def test_most_contractions_with_a_summed_letter_get_a_plan():
    """Every contraction above whose letters each sit in the output or in both operands
    is a matrix product: no einsum left for them (a skip would hide a regression)."""
    left = []
    for spec in SPECS:
        ins, out = spec.split("->")
        x, y = ins.split(",")
        one_sided = any(c not in out and c not in (y if c in x else x) for c in x + y)
        rows = any(c in x and c not in y for c in out)
        cols = any(c in y and c not in x for c in out)
        summed = any(c in x and c in y and c not in out for c in x)
        if not one_sided and rows and cols and summed:
            left += [spec] if matmul_plan(spec) is None and reshape_plan(spec) is None else []
    assert not left, left


@pytest.mark.parametrize(
    "spec", ["abd,abd->ab", "ab,ac->abc", "abc,abd->a", "ab,b->a", "aa,ab->b", "abc,abc->"]
)
def test_no_plan_without_a_matrix_product(spec):
    """Row dots, outer products, a side summed alone, a matrix-vector product, a repeated
    letter and a full dot product keep their einsum (or another form)."""
    assert reshape_plan(spec) is None


def test_two_heads_weight_gradients_are_matrix_products():
    """The per-head weight gradients (``aed,abec->bcd``) and the input's gradient through
    every head are one reshaped product each: no einsum is left but the softmax's row
    dot product."""
    code = generate(loads_spec(TWO_HEADS))
    body = code[code.index("def loss_and_grads") :]
    assert re.findall(r'einsum\("([^"]*)"', body) == ["abce,abce->abc"]
    assert "dWq1 = (np.transpose(da1, (1, 3, 0, 2)).reshape(" in body


@pytest.mark.parametrize(
    ("target", "case"),
    list(
        itertools.product(
            ["numpy", "torch", "jax"],
            [(TWO_HEADS, two_heads_torch), (SINGLE, single_torch), (DEPTHWISE, depthwise_torch)],
        )
    ),
)
def test_networks_match_torch(target, case):
    pytest.importorskip(target)
    spec, fn = case
    check_spec(spec, fn, target=target, batches=(1, 3))


def test_torch_softmax_backward_is_one_fused_call():
    """The softmax's vector-Jacobian product is found by structure and printed as one
    call; the module's fallback (a torch without the fused kernel) gives the same
    gradients (float64, within 1e-12 relative)."""
    from symgrad.backends.codegen import load_module

    code = generate(loads_spec(SINGLE), target="torch")
    assert "delta4 = _softmax_vjp(a4, da4, 2)" in code
    assert "einsum" not in code
    mod = load_module(code)
    rng = np.random.default_rng(0)
    P = {k: v.double() for k, v in mod.init_params(0).items()}
    X = torch.tensor(rng.normal(size=(3, 5, 4)))
    Y = torch.eye(2, dtype=torch.float64)[rng.integers(0, 2, 3)]
    _, fused = mod.loss_and_grads(P, X, Y)
    mod._SOFTMAX_VJP = None
    _, plain = mod.loss_and_grads(P, X, Y)
    for k in fused:
        assert torch.allclose(fused[k], plain[k], rtol=1e-12, atol=1e-14), k
