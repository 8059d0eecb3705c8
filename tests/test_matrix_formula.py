"""Check my derivation in matrix notation (``delta2 a1^T``), and its whitelist reader."""

from __future__ import annotations

import time

import numpy as np
import pytest
from catalogue import catalogue
from hypothesis import given, settings
from hypothesis import strategies as st

from symgrad.errors import SpecError
from symgrad.verify.check import check_formula
from symgrad.verify.matrix_formula import FormulaShapeError, evaluate

SEED = catalogue()["seed"]  # 3 -> 4 sigmoid -> 2 sigmoid, mse


@pytest.mark.parametrize(
    "grad, formula",
    [
        ("dW2", "delta2 a1^T"),
        ("dW2", "delta2 @ a1.T"),
        ("dW2", "outer(delta2, a1)"),
        ("db2", "delta2"),
        ("da1", "W2^T delta2"),
        ("delta1", "(W2^T delta2) * a1 * (1 - a1)"),
        ("delta1", "da1 ⊙ a1 ⊙ (1 - a1)"),
        ("delta2", "2 * (a2 - y) * a2 * (1 - a2) / 2"),
        ("da1/dz1", "a1 * (1 - a1)"),
        ("da1/dz1", "diag(a1 * (1 - a1))"),
        ("dW1", "delta1 x^T"),
    ],
)
def test_correct_matrix_formulas_are_accepted(grad, formula):
    res = check_formula(SEED, grad, formula)
    assert res.ok, res.format()


def test_the_classic_sigmoid_slip_gets_a_counterexample():
    res = check_formula(SEED, "da1/dz1", "z1 * (1 - z1)")
    assert not res.ok
    assert res.counterexample and res.counterexample["yours"] != res.counterexample["derived"]
    assert "a1" in res.format()


def test_a_sign_flip_is_wrong_and_a_transposed_product_is_a_shape_error():
    flipped = check_formula(SEED, "dW2", "-delta2 a1^T")
    assert not flipped.ok and flipped.counterexample
    swapped = check_formula(SEED, "dW2", "a1^T delta2")
    assert not swapped.ok and "shapes do not fit" in swapped.format()
    no_transpose = check_formula(SEED, "da1", "W2 delta2")
    assert not no_transpose.ok and "inner sizes differ" in no_transpose.format()
    row = check_formula(SEED, "db2", "delta2^T")
    assert not row.ok and "2 x 1" in row.format()


def test_the_derived_matrix_form_is_shown():
    res = check_formula(SEED, "dW2", "a1 delta2^T")
    assert "outer(delta2, a1)" in res.format()


@pytest.mark.parametrize(
    "text, phrase",
    [
        ("__import__('os')", "unexpected character"),
        ("a1.real", "unexpected character '.'"),
        ("a1; x", "unexpected character ';'"),
        ("eval(a1)", "not allowed"),
        ("exp(a1, a1)", "takes 1 argument"),
        ("a1 ** a1", "must be a number"),
        ("a1 ** 1000", "too large"),
        ("(" * 60 + "a1" + ")" * 60, "nested deeper"),
        ("a1 + " * 600 + "a1", "longer than"),
        ("", "empty formula"),
        ("a1 +", "unexpected the end"),
        ("lambda: 1", "unexpected character ':'"),
        ("os", "unknown name 'os'"),
    ],
)
def test_bad_formula_text_is_one_clear_error(text, phrase):
    with pytest.raises(SpecError) as err:
        check_formula(SEED, "dW2", text)
    msg = str(err.value)
    assert phrase in msg and "\n" not in msg


ENV = {"a": np.arange(3.0), "b": np.ones(3), "W": np.ones((2, 3))}


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from([*"abW()+-*/@^T.,0123456789 e⊙;[]'", "exp", "sum", "outer", "**", "^T"]),
        max_size=40,
    ).map("".join)
    | st.text(max_size=60)
)
def test_the_reader_only_ever_returns_an_array_or_its_own_errors(text):
    t0 = time.perf_counter()
    try:
        out = evaluate(text, ENV)
    except (SpecError, FormulaShapeError):
        pass
    else:
        assert isinstance(out, np.ndarray)
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("name", sorted(catalogue()))
def test_every_step_in_matrix_notation_as_printed_checks(name):
    from symgrad.documents.render import TextPrinter
    from symgrad.pipeline import derive

    net = catalogue()[name]
    from symgrad.calculus.matrix_form import Comp

    for step in derive(net).steps:
        if step.matrix.has(Comp):  # no neat matrix form: printed in components (#12)
            continue
        res = check_formula(net, step.grad, TextPrinter().doprint(step.matrix))
        assert res.ok, res.format()


def test_iverson_brackets_as_symgrad_prints_them():
    bce = catalogue()["bce"]  # relu hidden layer
    assert check_formula(bce, "delta1", "da1 * [z1 > 0]").ok
    assert check_formula(bce, "delta1", "da1 * step(z1)").ok
    assert not check_formula(bce, "delta1", "da1 * [z1 < 0]").ok
    with pytest.raises(SpecError, match="expected a comparison"):
        check_formula(bce, "delta1", "da1 * [z1]")
