"""Index arithmetic on its own: deltas solved through affine index expressions.

Each contraction is checked symbolically and against the brute-force sum it replaces,
evaluated at concrete indices (a wrong solution or a lost range condition disagrees).
"""

import itertools

import numpy as np
import pytest
import sympy as sp

from symgrad.calculus.contraction import contract
from symgrad.calculus.index_arithmetic import (
    Divisible,
    InRange,
    affine_coefficient,
    contract_affine,
    one_based,
    solve_for,
)

h, k, q, c, j = (sp.Symbol(s, integer=True) for s in ("h", "k", "q", "c", "j"))
f, g, W, a = (sp.IndexedBase(s, real=True) for s in ("f", "g", "W", "a"))


def test_indicators_evaluate_on_numbers():
    assert InRange(2, 0, 2) == 1
    assert InRange(3, 0, 2) == 0
    assert InRange(-1, 0, 2) == 0
    assert Divisible(6, 3) == 1
    assert Divisible(7, 3) == 0
    assert Divisible(q, 1) == 1
    assert isinstance(InRange(q, 0, 2), InRange)  # unknown: stays symbolic


def test_affine_coefficient():
    assert affine_coefficient(2 * h + k - 1, h) == 2
    assert affine_coefficient(2 * h + k - 1, k) == 1
    assert affine_coefficient(q, h) == 0
    assert affine_coefficient(h**2 + k, h) is None


def test_solve_prefers_the_exact_solution():
    # delta(2h + k - 1, q) solved for k: k = q - 2h + 1, always an integer
    assert solve_for(sp.KroneckerDelta(2 * h + k - 1, q), k) == (q - 2 * h + 1, 1)
    # solved for h: h = (q - k + 1)/2, an integer only when 2 divides q - k + 1
    value, cond = solve_for(sp.KroneckerDelta(2 * h + k - 1, q), h)
    assert sp.simplify(value - (q - k + 1) / 2) == 0
    assert isinstance(cond, Divisible)


def test_kernel_index_contracts_with_its_range_condition():
    term = f[k] * sp.KroneckerDelta(2 * h + k - 1, q)
    out = contract_affine(term, k, 0, 2)
    assert out == f[q - 2 * h + 1] * InRange(q - 2 * h + 1, 0, 2)


def _brute(expr_sum, subs, arrays):
    """Evaluate a (possibly symbolic) expression numerically at concrete indices."""
    e = expr_sum.xreplace(subs).doit()

    def val(t):
        return float(t.xreplace({x: arrays[str(x.base)][x.indices] for x in t.atoms(sp.Indexed)}))

    return val(e)


def _arrays(rng, shapes):
    out = {}
    for name, shape in shapes.items():
        arr = rng.normal(size=shape)

        def look(idx, arr=arr):
            idx = tuple(int(i) for i in idx)
            if any(i < 0 or i >= s for i, s in zip(idx, arr.shape, strict=True)):
                return 0.0  # zero padding: out-of-range reads are zeros
            return arr[idx]

        out[name] = _Lookup(look)
    return out


class _Lookup:
    def __init__(self, fn):
        self.fn = fn

    def __getitem__(self, idx):
        return self.fn(idx)


@pytest.mark.parametrize("stride,pad,K,H", [(1, 0, 3, 6), (2, 1, 3, 4), (3, 2, 2, 3), (2, 0, 1, 3)])
def test_transposed_correlation_matches_the_brute_force_sum(stride, pad, K, H):
    """d/da[q] of Sum_h g[h] Sum_k W[k] a[s h + k - p]: contracted vs summed directly."""
    body = sp.Sum(W[k] * a[stride * h + k - pad], (k, 0, K - 1))
    local = contract(sp.diff(body, a[q]))
    assert not local.has(sp.KroneckerDelta)
    grad = contract(sp.Sum(g[h] * local, (h, 0, H - 1)))
    rng = np.random.default_rng(stride * 10 + pad)
    arrs = _arrays(rng, {"W": (K,), "g": (H,)})
    n_in = stride * (H - 1) + K - 2 * pad
    for qv in range(n_in):
        want = sum(
            arrs["g"][(hv,)] * arrs["W"][(kv,)]
            for hv, kv in itertools.product(range(H), range(K))
            if stride * hv + kv - pad == qv
        )
        got = _brute(grad, {q: qv}, arrs)
        assert got == pytest.approx(want, abs=1e-12)


def test_two_dimensional_window_contracts_both_axes():
    w_ = sp.Symbol("w", integer=True)
    kw, q2 = sp.Symbol("kw", integer=True), sp.Symbol("q2", integer=True)
    body = sp.Sum(W[c, k, kw] * a[2 * h + k - 1, 2 * w_ + kw - 1], (k, 0, 2), (kw, 0, 2))
    local = contract(sp.diff(body, a[q, q2]))
    assert not local.has(sp.KroneckerDelta)
    assert len(local.atoms(InRange)) == 2


def test_stride_without_a_unit_index_keeps_divisibility():
    # Sum_h g[h] delta(2h, q): only h can be solved for, with 2 | q
    e = sp.Sum(g[h] * sp.KroneckerDelta(2 * h, q), (h, 0, 3))
    out = contract(e)
    assert out.has(Divisible)
    for qv in range(8):
        want = float(qv % 2 == 0 and qv // 2 <= 3)
        got = out.xreplace({q: sp.Integer(qv)}).xreplace({g[sp.Integer(qv // 2)]: sp.S.One})
        got = sp.sympify(got).xreplace({x: sp.S.Zero for x in sp.sympify(got).atoms(sp.Indexed)})
        assert float(got) == want


def test_plain_deltas_still_contract_as_before():
    e = sp.Sum(W[c, j] * sp.KroneckerDelta(j, k), (j, 0, 4))
    assert contract(e) == W[c, k]


def test_one_based_display_shifts_index_arithmetic_only():
    assert one_based(h) == h
    assert one_based(sp.Integer(0)) == 0
    assert one_based(2 * h + k - 1) == 2 * h + k - 3  # 2 (h - 1) + (k - 1) - 1 + 1
    n = sp.Symbol("n", integer=True, positive=True)
    assert one_based(n - 1) == n - 1  # widths are not indices
