"""``check --grad`` and ``check --steps`` on conv nets (issue #12).

Component formulas may read computed positions (``x[q, h + r, w + s]``, zeros outside the
input, as the layer reads it); conv quantities have axes (c, h, w). Matrix notation works
for elementwise steps; a correlation, pooling or (un)flattening written in matrix notation
is one clear error pointing at the component form.
"""

from __future__ import annotations

import numpy as np
import pytest

from symgrad.errors import SpecError
from symgrad.frontend.spec import load_spec
from symgrad.ir import layers as L
from symgrad.ir.conv import Conv, Flatten, Pool
from symgrad.verify.check import check_formula
from symgrad.verify.evaluation import run_derivation

DIGITS = "examples/digits_cnn/digits_cnn.toml"
SEQ = L.build(
    "seq",
    [2, 9],
    [Conv(3, 3, stride=2, padding=1, activation="tanh", dims=1), Flatten(), L.Dense(2)],
    "mse",
)


@pytest.fixture(scope="module")
def digits():
    return load_spec(DIGITS)


@pytest.mark.parametrize(
    "grad,formula",
    [
        ("dW1", "sum(sum(delta1[p, h, w]*x[q, h + r, w + s], h), w)"),
        ("db1", "sum(sum(delta1[p, h, w], h), w)"),
        ("delta1", "da1*[z1 > 0]"),
        ("dW4", "delta4 a3^T"),
        ("da2", "da3[9*c + 3*h + w]"),
    ],
)
def test_right_conv_formulas_pass(digits, grad, formula):
    res = check_formula(digits, grad, formula)
    assert res.ok, res.format()


@pytest.mark.parametrize(
    "grad,formula",
    [
        ("dW1", "sum(delta1[p, w]*x[q, 2*w + r - 1], w)"),
        ("dx", "sum(sum(W1[j, c, w - 2*k + 1]*delta1[j, k], j), k)"),  # zeros outside
        ("delta1", "da1 * (1 - a1**2)"),
        ("delta1", "da1[c, w]*(1 - a1[c, w]**2)"),
        ("da1", "da2[5*c + w]"),
    ],
)
def test_right_conv1d_formulas_pass(grad, formula):
    res = check_formula(SEQ, grad, formula)
    assert res.ok, res.format()


@pytest.mark.parametrize(
    "grad,formula,hint",
    [
        ("dW1", "sum(sum(delta1[p, h, w]*x[q, h + s, w + r], h), w)", None),  # swapped offsets
        ("dx", "sum(sum(W1[j, c, w + 2*k - 1]*delta1[j, k], j), k)", None),  # not transposed
        ("delta1", "da1 * (1 - z1**2)", "z1 where a1"),
    ],
)
def test_wrong_conv_formulas_are_wrong(grad, formula, hint):
    net = load_spec(DIGITS) if "h" in formula else SEQ
    res = check_formula(net, grad, formula)
    assert not res.ok
    assert res.counterexample is not None
    if hint:
        assert any(hint in h for h in res.hints), res.hints


@pytest.mark.parametrize("grad,formula", [("dW1", "corr(delta1, x)"), ("da2", "unvec(da3)")])
def test_conv_ops_in_matrix_notation_are_one_clear_line(digits, grad, formula):
    with pytest.raises(SpecError) as exc:
        check_formula(digits, grad, formula)
    line = exc.value.line()
    assert "\n" not in line and "component form" in line and f"{grad} is a conv" in line


def test_the_derivations_own_component_forms_pass(digits):
    from symgrad.verify.check import _derivation, formula_text

    net, d = _derivation(digits, 0)
    for st in d.steps:
        if st.grad in ("da1", "dx", "delta1"):  # arg-max, ranges, step: no formula syntax
            continue
        res = check_formula(digits, st.grad, formula_text(st.component))
        assert res.ok, (st.grad, res.format())


def test_component_evaluation_of_conv_nets_matches_generated_code():
    """The derivation evaluated in components (index arithmetic, zero padding, the arg-max
    of max pooling, dilation's divisibility) equals the generated module, per sample."""
    from symgrad.backends.codegen import load_module
    from symgrad.pipeline import derive, generate

    nets = [
        load_spec(DIGITS),
        L.build(
            "n",
            [2, 11],
            [
                Conv(2, 3, stride=2, padding=1, dilation=2, dims=1, activation="tanh"),
                Pool("avg", 1, dims=1),
                Flatten(),
                L.Dense(2),
            ],
            "mse",
        ),
        L.build(
            "n",
            [1, 9, 9],
            [
                Conv(2, 3, padding=1, dilation=(2, 1), activation="relu"),
                Pool("max", 3, stride=1, padding=1),
                Flatten(),
                L.Dense(2),
            ],
            "mse",
        ),
    ]
    for net in nets:
        d = derive(net)
        mod = load_module(generate(net))
        rng = np.random.default_rng(0)
        params = {p.name: rng.uniform(-1, 1, net.shape(p)) for p in net.params}
        x = rng.normal(size=net.input_shape)
        C = net.size(net.output_width)
        y = np.eye(C)[3] if net.loss.name == "cross_entropy" else rng.normal(size=C)
        loss, env = run_derivation(d, params, x.ravel(), y)
        want_loss, grads = mod.loss_and_grads(params, x[None], y[None])
        assert loss == pytest.approx(want_loss, rel=1e-12)
        for k, g in grads.items():
            np.testing.assert_allclose(env["d" + k], g, rtol=1e-10, atol=1e-12)
