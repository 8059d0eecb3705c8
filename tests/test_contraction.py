"""Delta contraction on its own (the pass SymPy's simplify cannot be trusted with)."""

import sympy as sp

from symgrad.calculus.contraction import contract, has_delta
from symgrad.calculus.forward_values import pull_out

i, j, k, p, q = (sp.Symbol(s, integer=True) for s in "ijkpq")
m, n = sp.symbols("m n", integer=True, positive=True)
W, x, b, g = (sp.IndexedBase(s, real=True) for s in ("W", "x", "b", "g"))


def test_sum_against_delta_substitutes_the_index():
    e = sp.Sum(W[i, j] * sp.KroneckerDelta(j, k), (j, 0, m - 1))
    assert contract(e) == W[i, k]


def test_delta_in_either_argument_order():
    e = sp.Sum(x[j] * sp.KroneckerDelta(k, j), (j, 0, m - 1))
    assert contract(e) == x[k]


def test_term_free_of_the_index_is_multiplied_by_the_range():
    e = sp.Sum(x[k] + 3, (j, 0, m - 1))
    assert sp.expand(contract(e) - m * (x[k] + 3)) == 0


def test_delta_hidden_in_a_sum_factor_is_distributed():
    e = sp.Sum(g[i] * (sp.KroneckerDelta(i, k) * x[i] - x[i] * x[k]), (i, 0, n - 1))
    out = pull_out(contract(e))
    assert out == g[k] * x[k] - x[k] * sp.Sum(g[i] * x[i], (i, 0, n - 1))


def test_weight_gradient_is_an_outer_product():
    body = sp.Sum(W[i, j] * x[j], (j, 0, m - 1)) + b[i]
    e = sp.Sum(g[i] * sp.diff(body, W[p, q]), (i, 0, n - 1))
    assert contract(e) == g[p] * x[q]


def test_input_gradient_keeps_the_sum_over_the_other_index():
    body = sp.Sum(W[i, j] * x[j], (j, 0, m - 1)) + b[i]
    e = sp.Sum(g[i] * sp.diff(body, x[k]), (i, 0, n - 1))
    assert contract(e) == sp.Sum(W[i, k] * g[i], (i, 0, n - 1))


def test_squared_delta_is_the_delta():
    e = sp.Sum(x[i] * sp.KroneckerDelta(i, k) ** 2, (i, 0, n - 1))
    assert contract(e) == x[k]


def test_delta_between_free_indices_stays_as_structure():
    e = sp.tanh(x[i]) * sp.KroneckerDelta(i, k)
    assert contract(e) == e
    assert has_delta(e, i, k)
    assert not has_delta(e + x[i] * x[k], i, k)
