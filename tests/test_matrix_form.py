"""Component -> matrix translation and index canonicalisation on their own."""

import numpy as np
import pytest
import sympy as sp

from symgrad.calculus.layout import BOuter, batch_param_grad
from symgrad.calculus.matrix_form import Mat, MatVec, Outer, SumAll, TMatVec, Vec, to_matrix
from symgrad.errors import DerivationError
from symgrad.ir.indices import canonical
from symgrad.verify.evaluation import eval_component, eval_matrix

i, j, k, m, p, q = (sp.Symbol(s, integer=True) for s in "ijkmpq")
n = sp.Symbol("n", integer=True, positive=True)
W, A, x, g = (sp.IndexedBase(s, real=True) for s in ("W", "A", "x", "g"))


def test_the_textbook_patterns():
    assert to_matrix(sp.Sum(W[i, j] * x[j], (j, 0, n - 1)), (i,)) == MatVec(Mat("W"), Vec("x"))
    assert to_matrix(sp.Sum(W[k, i] * g[k], (k, 0, n - 1)), (i,)) == TMatVec(Mat("W"), Vec("g"))
    assert to_matrix(g[p] * x[q], (p, q)) == Outer(Vec("g"), Vec("x"))
    assert to_matrix(sp.Sum(g[k] * x[k], (k, 0, n - 1)), ()) == SumAll(Vec("g") * Vec("x"))
    assert to_matrix(g[i] * sp.tanh(x[i]), (i,)) == Vec("g") * sp.tanh(Vec("x"))


def test_nested_sums_and_factors_free_of_the_summed_index():
    """x^T A x inside a vector expression: SymPy merges nested Sums into one with two limits."""
    quad = sp.Sum(sp.Sum(x[j] * A[j, k] * x[k], (k, 0, n - 1)), (j, 0, n - 1))
    mat = to_matrix(x[i] * quad, (i,))
    assert mat == Vec("x") * SumAll(Vec("x") * MatVec(Mat("A"), Vec("x")))
    rng = np.random.default_rng(0)
    env = {"x": rng.normal(size=4), "A": rng.normal(size=(4, 4))}
    comp = eval_component(x[i] * quad, env, {n: 4}, (i,), {i: 4})
    np.testing.assert_allclose(eval_matrix(mat, env, {n: 4}), comp)


def test_a_per_sample_weight_on_an_outer_product_is_folded_into_the_batch():
    weighted = SumAll(Vec("x") * Vec("g")) * Outer(Vec("x"), Vec("x"))
    out = batch_param_grad(weighted)
    assert isinstance(out, BOuter)


def test_unsupported_structure_is_a_clear_error():
    with pytest.raises(DerivationError, match="no matrix form"):
        to_matrix(W[p, q] * W[q, p], (p, q))


def test_canonical_renaming_never_captures_an_inner_dummy():
    # the outer dummy j must not be renamed to the inner dummy's name k (A[k, k] would be wrong)
    e = sp.Sum(x[j] * sp.Sum(A[j, k] * x[k], (k, 0, n - 1)), (j, 0, n - 1)) * g[p]
    c = canonical(e, (p,), ("p",))
    for ind in c.atoms(sp.Indexed):
        if ind.base == A:
            assert ind.indices[0] != ind.indices[1]
    rng = np.random.default_rng(1)
    env = {"x": rng.normal(size=3), "A": rng.normal(size=(3, 3)), "g": rng.normal(size=3)}
    a = eval_component(e, env, {n: 3}, (p,), {p: 3})
    b = eval_component(c, env, {n: 3}, (p,), {p: 3})
    np.testing.assert_allclose(a, b)
