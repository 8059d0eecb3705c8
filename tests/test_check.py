"""``check_formula``: "check my derivation" against the derived steps."""

from __future__ import annotations

import re

import pytest
from catalogue import catalogue

from symgrad import Dense, build, derive
from symgrad.errors import SpecError
from symgrad.verify.check import check_formula, formula_text

NETS = catalogue()
SEED = NETS["seed"]
SQUARE = build("square", 3, [Dense(3, "sigmoid"), Dense(3, "sigmoid")], "mse")


@pytest.mark.parametrize(
    ("grad", "formula"),
    [
        ("dW2", "delta2[p]*a1[q]"),
        ("dW1", "delta1[p]*x[q]"),
        ("db2", "delta2[p]"),
        ("db2", "delta2[i]"),  # i accepted for a one-index parameter gradient
        ("delta1", "da1[i]*a1[i]*(1 - a1[i])"),
        ("delta1", "sum(W2[k,i]*delta2[k], k)*a1[i]*(1-a1[i])"),
        ("da1", "sum(W2[j, i]*delta2[j], j)"),
        ("da2", "2*(a2[i] - y[i])/n_2"),
        ("delta2", "da2[i]*a2[i]*(1 - a2[i])"),
        ("delta2", "(a2[i] - y[i])*a2[i]*(1 - a2[i])"),  # 2/n_2 = 1 here
        ("dx", "sum(W1[k, i]*delta1[k], k)"),
        ("da1/dz1", "a1[i]*(1 - a1[i])"),
        ("dz2/da1", "W2[i, k]"),
        ("W2", "a1[q]*delta2[p]"),  # grad given as the quantity
        ("dL/dW2", "a1[q]*delta2[p]"),
        ("dz1", "da1[i]*a1[i]*(1 - a1[i])"),
    ],
)
def test_correct_formulas(grad, formula):
    result = check_formula(SEED, grad=grad, formula=formula)
    assert result.ok, result.format()
    assert result.format().splitlines()[-1].startswith("OK:")


def test_classic_slip_in_the_sigmoid_derivative():
    result = check_formula(SEED, grad="da1/dz1", formula="z1[i]*(1 - z1[i])")
    assert not result.ok
    text = result.format()
    assert "your formula:    z1[i]*(1 - z1[i])" in text
    assert "derived formula: (1 - a1[i])*a1[i]" in text
    ce = result.counterexample
    assert set(ce["index"]) == {"i"}
    assert ce["yours"] != pytest.approx(ce["derived"])
    assert f"i={ce['index']['i']}" in text and "counterexample" in text
    assert text.splitlines()[-1].startswith("WRONG:")


def test_wrong_delta_is_caught_numerically():
    result = check_formula(SEED, grad="delta1", formula="da1[i]*a1[i]")
    assert not result.ok
    assert result.counterexample["yours"] != pytest.approx(result.counterexample["derived"])


def test_transposed_weight_gradient():
    # 3 -> 4 -> 2: the transpose does not even have the right shape
    result = check_formula(SEED, grad="dW2", formula="delta2[q]*a1[p]")
    assert not result.ok and "shapes do not match" in result.problem
    # square layers: the shapes agree, the numbers do not
    result = check_formula(SQUARE, grad="dW2", formula="delta2[q]*a1[p]")
    assert not result.ok and result.problem is None
    assert set(result.counterexample["index"]) == {"p", "q"}


def test_wrong_sum_index_order():
    result = check_formula(SEED, grad="da1", formula="sum(W2[i, k]*delta2[k], k)")
    assert not result.ok
    assert "shapes do not match" in result.format()
    result = check_formula(SQUARE, grad="da1", formula="sum(W2[i, k]*delta2[k], k)")
    assert not result.ok and result.counterexample


def test_softmax_cross_entropy_uses_sum_y_is_1():
    net = NETS["softmax_ce"]
    assert check_formula(net, grad="delta2", formula="a2[i] - y[i]").ok
    assert not check_formula(net, grad="delta2", formula="y[i] - a2[i]").ok


def test_map_and_custom_networks():
    net = NETS["gain"]
    assert check_formula(net, grad="dg2", formula="da2[p]*tanh(z1[p])").ok
    assert not check_formula(net, grad="dg2", formula="da2[p]*z1[p]").ok
    net = NETS["custom"]
    assert check_formula(net, grad="da1/dz1", formula="1/(1 + abs(z1[i]))**2").ok


@pytest.mark.parametrize("name", sorted(NETS))
def test_every_derived_step_checks_against_itself(name):
    d = derive(NETS[name])
    for st in d.steps:
        text = formula_text(st.component)
        if "==" in text:  # a Kronecker delta cannot be written in a formula
            continue
        try:
            result = check_formula(NETS[name], grad=st.grad, formula=text)
        except SpecError as exc:  # step() and sign() (relu', abs') are not formula functions
            assert re.search(r"function '(step|sign)' is not allowed", str(exc)), exc
            continue
        assert result.ok, result.format()


@pytest.mark.parametrize(
    "formula",
    [
        "delta2[p]*a1[q",
        "delta2[p] a1[q]",
        "__import__('os')",
        "delta2[p].T",
        "foo(delta2[p])",
        "delta2[p]*a1[z]",
        "delta2*a1[q]",
        "sum(delta2[p], k)",
        "",
    ],
)
def test_bad_formula_text_raises_one_line_spec_error(formula):
    with pytest.raises(SpecError) as info:
        check_formula(SEED, grad="dW2", formula=formula)
    line = info.value.line()
    assert "\n" not in line and line.startswith("--formula: ")


@pytest.mark.parametrize("grad", ["dW9", "delta7", "da1/dz2", "d/d", "foo"])
def test_unknown_gradient_raises_spec_error(grad):
    with pytest.raises(SpecError) as info:
        check_formula(SEED, grad=grad, formula="1")
    assert "\n" not in info.value.line() and info.value.field == "--grad"


def test_formula_text_prints_the_input_syntax():
    step = derive(SEED).step("da1")
    assert formula_text(step.component) == "sum(W2[k, i]*delta2[k], k)"
