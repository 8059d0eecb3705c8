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


# -- the learner's view: shape verdicts, ambiguity, names, hints, layer Jacobians ----------


def test_a_matrix_where_a_vector_is_due_is_rejected_and_said_so():
    res = check_formula(SEED, "db2", "diag(delta2)")
    assert not res.ok and res.verdict == "WRONG"
    assert "matrix where a vector is due" in res.problem
    # a diagonal Jacobian may still be written with diag()
    assert check_formula(SEED, "da1/dz1", "diag(a1 * (1 - a1))").ok


def test_star_versus_juxtaposition_is_ambiguous_not_wrong():
    res = check_formula(SEED, "delta1", "a1 * (1 - a1) * W2^T delta2")
    assert not res.ok and res.ambiguous and res.verdict == "AMBIGUOUS"
    text = res.format()
    assert "((a1 * (1 - a1)) * W2^T) delta2" in text  # the left-to-right reading
    assert "(a1 * (1 - a1)) * (W2^T delta2)" in text  # the right one
    assert text.splitlines()[-1].startswith("AMBIGUOUS:") and "WRONG" not in text
    # wrong under both readings stays WRONG
    res = check_formula(SEED, "delta1", "a1 * a1 * W2^T delta2")
    assert res.verdict == "WRONG"
    # with the parentheses written it is simply right
    assert check_formula(SEED, "delta1", "a1 * (1 - a1) * (W2^T delta2)").ok


@pytest.mark.parametrize(
    ("grad", "formula"),
    [
        ("da2", "2*(yhat - y)/n_2"),
        ("da2", "2*(yhat[i] - y[i])/n_2"),
        ("delta1", "a1(1 - a1) * (W2^T delta2)"),
        ("da1/dz1", "a1(1 - a1)"),
        ("delta2", "da2 * yhat(1 - yhat)"),
        ("da1/dz1", "a1[i](1 - a1[i])"),
        ("da2", "2(yhat[i] - y[i])/n_2"),
        ("dW2", "delta2[p] a1[q]"),
        ("delta1", "da1[i] a1[i](1 - a1[i])"),
    ],
)
def test_names_symgrad_prints_and_implicit_products_are_accepted(grad, formula):
    # (the component form reads juxtaposed factors as products as well)
    res = check_formula(SEED, grad, formula)
    assert res.ok, res.format()


@pytest.mark.parametrize(
    ("grad", "formula", "hint"),
    [
        ("dW2", "8 * delta2 a1^T", "yours is 8x the true dW2"),
        ("dW2", "delta2 a1^T / 8", "yours is 1/8 of the true dW2"),
        ("dW2", "-delta2 a1^T", "the sign is flipped"),
        ("da2", "2*(yhat - y)", "is a 1/n_2 = 1/2 missing?"),
        ("da1/dz1", "z1*(1 - z1)", "you used z1 where a1 = f(z1) belongs"),
        ("da1/dz1", "z1[i]*(1 - z1[i])", "you used z1 where a1 = f(z1) belongs"),
        ("delta1", "W2^T delta2", "a factor is missing: yours times da1/dz1"),
        ("delta1", "da1[i]", "a factor is missing: yours times da1/dz1"),
    ],
)
def test_wrong_formulas_get_the_slip_named(grad, formula, hint):
    res = check_formula(SEED, grad, formula)
    assert res.verdict == "WRONG"
    assert any(hint in h for h in res.hints), res.format()
    assert f"hint: {hint}" in res.format() or hint in res.format()


def test_transpose_hint_on_square_layers():
    res = check_formula(SQUARE, "dW2", "a1 delta2^T")
    assert "yours is the transpose of dW2" in res.hints
    res = check_formula(SQUARE, "dW2", "delta2[q]*a1[p]")
    assert "yours is the transpose of dW2" in res.hints


def test_counterexample_is_shown_in_matrix_notation_too():
    text = check_formula(SEED, "da1/dz1", "z1[i]*(1 - z1[i])").format()
    assert "the same point in matrix notation:" in text
    assert "yours   = [[" in text and "derived = [[" in text


@pytest.mark.parametrize(
    ("grad", "formula"),
    [
        ("da2/da1", "diag(a2 * (1 - a2)) W2"),
        ("da2/da1", "a2[i]*(1 - a2[i])*W2[i, k]"),
        ("da2/dz1", "diag(a2*(1 - a2)) W2 diag(a1*(1 - a1))"),
        ("dz2/dz1", "W2 diag(a1*(1 - a1))"),
    ],
)
def test_whole_layer_jacobians(grad, formula):
    res = check_formula(SEED, grad, formula)
    assert res.ok, res.format()
    assert "Jacobian" in res.meaning


def test_whole_layer_jacobian_slip():
    res = check_formula(SEED, "da2/da1", "W2 diag(a2 * (1 - a2))")
    assert not res.ok and "shapes do not fit" in res.format()
    res = check_formula(SEED, "da2/da1", "W2")
    assert not res.ok and res.counterexample


@pytest.mark.parametrize(
    ("grad", "formula", "ok"),
    [
        ("dz1/dW1", "x[q]", True),
        ("dz1/dW1", "x^T", True),  # the row every i shares
        ("dz2/dW2", "a1[q]", True),
        ("dz2/db2", "1", True),
        ("dz2/dW2", "z1[q]", False),
        ("dz1/dW1", "x", False),  # a column where a row is due
    ],
)
def test_layer_output_by_its_own_parameter(grad, formula, ok):
    res = check_formula(SEED, grad, formula)
    assert res.ok is ok, res.format()
    assert "[i == p]" in res.meaning


def test_jacobian_python_api():
    from symgrad.verify.check import jacobian

    expr, free, meaning = jacobian(SEED, "da2/da1")
    assert free == ("i", "k") and "Jacobian" in meaning
    assert formula_text(expr) == "(1 - a2[i])*W2[i, k]*a2[i]"
    expr, free, _ = jacobian(SEED, "dz1/dW1")
    assert formula_text(expr) == "x[q]" and free == ("i", "q")
    with pytest.raises(SpecError):
        jacobian(SEED, "dz1/dW2")


@pytest.mark.parametrize(
    ("grad", "formula", "right"),
    [
        ("dW2", "delta2^T a1", "delta2 a1^T"),
        ("da1", "W2 delta2", "W2^T delta2"),
        ("da1", "delta2^T W2", "W2^T delta2"),
    ],
)
def test_a_transposed_or_swapped_product_gets_the_right_one_named(grad, formula, right):
    res = check_formula(SEED, grad, formula)
    assert res.verdict == "WRONG"
    assert f"a transpose or the order of a product: {right} is right" in res.hints


@pytest.mark.parametrize(
    "formula",
    [
        "da1[i]*(z1[i] > 0)",
        "da1 * (z1 > 0)",
        "da1[i]*step(z1[i])",
        "sum(W2[k,i]*delta2[k], k)*(relu(z1[i]) > 0)",
        "da1 * [z1 > 0]",
    ],
)
def test_relu_derivatives_as_people_write_them(formula):
    """A comparison in parentheses, relu and step are read (the bce net's layer 1 is relu)."""
    assert check_formula(NETS["bce"], "delta1", formula).ok


def test_a_comparison_that_is_wrong_stays_wrong():
    result = check_formula(SEED, "delta1", "da1[i]*(z1[i] > 0)")
    assert not result.ok and not result.ambiguous


def test_mixing_star_and_matmul_is_ambiguous_not_wrong():
    result = check_formula(SEED, "delta1", "(1 - a1) * a1 * W2.T @ delta2")
    text = result.format()
    assert result.ambiguous and not result.ok, text
    assert "@ and juxtaposition binding tighter than *" in text


@pytest.mark.parametrize("formula", ["da1 * (1 - tanh(z1)^2)", "da1[i] * (1 - a1[i]^2)"])
def test_a_caret_points_to_double_star(formula):
    with pytest.raises(SpecError, match=r"write \*\* for a power"):
        check_formula(NETS["softmax_ce"], "delta1", formula)


@pytest.mark.parametrize(("inner", "grad"), [("delta2[p]*a1[q]", "dW2"), ("delta2[p]", "db2")])
def test_deeply_nested_functions_are_answered_quickly(inner, grad):
    """tanh nested 15 deep used to take minutes (each rebuilt node re-evaluated its whole
    argument); the formula is wrong, and said so within a few seconds."""
    import time

    start = time.perf_counter()
    result = check_formula(SEED, grad, "tanh(" * 15 + inner + ")" * 15)
    assert not result.ok
    assert time.perf_counter() - start < 10
