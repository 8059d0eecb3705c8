"""The derivation engine: textbook results symbolically, every catalogue gradient numerically."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from catalogue import catalogue

from symgrad import Dense, build, derive
from symgrad.calculus.matrix_form import Mat, MatVec, Outer, SumAll, TMatVec, Vec
from symgrad.ir.ops import step as step_fn
from symgrad.verify.evaluation import eval_component, run_derivation

NETS = catalogue()


def _vec(name):
    return Vec(name)


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_sigmoid_mlp_is_nielsen_bp1_to_bp4(depth):
    """BP1-BP4 of Nielsen's chapter 2, in matrix form, for a sigmoid MLP of any depth."""
    layers = [Dense(3, "sigmoid") for _ in range(depth)]
    d = derive(build("mlp", 2, layers, "mse"))
    L = depth
    a = {l: _vec(f"a{l}") for l in range(1, L + 1)}
    a[0] = _vec("x")
    sigma_prime = {l: a[l] * (1 - a[l]) for l in a}
    # BP1: delta^L = grad_a C (.) sigma'(z^L), with C = mean (a - y)^2 per sample.
    grad_a = 2 * (a[L] - _vec("y")) / sp.Symbol(f"n_{L}", integer=True, positive=True)
    assert sp.simplify(d.step(f"delta{L}").matrix - grad_a * sigma_prime[L]) == 0
    for l in range(1, L + 1):
        # BP3 and BP4
        assert d.step(f"db{l}").matrix == _vec(f"delta{l}")
        assert d.step(f"dW{l}").matrix == Outer(_vec(f"delta{l}"), a[l - 1])
        if l < L:
            # BP2: delta^l = ((W^{l+1})^T delta^{l+1}) (.) sigma'(z^l)
            da = d.step(f"da{l}").matrix
            assert da == TMatVec(Mat(f"W{l + 1}"), _vec(f"delta{l + 1}"))
            delta = d.step(f"delta{l}").matrix.xreplace({_vec(f"da{l}"): da})
            assert sp.expand(delta - da * sigma_prime[l]) == 0


def test_steps_come_in_derive_as_you_go_order():
    d = derive(NETS["seed"])
    assert [s.grad for s in d.steps] == [
        "da2",
        "delta2",
        "dW2",
        "db2",
        "da1",
        "delta1",
        "dW1",
        "db1",
        "dx",
    ]
    assert [s.needed for s in d.steps][-1] is False  # dL/dx: derived, not computed by code


def test_component_forms_read_like_a_textbook():
    d = derive(NETS["seed"])
    i, k, p, q = (sp.Symbol(s, integer=True) for s in "ikpq")
    W2, delta2, a1, da1 = (sp.IndexedBase(s, real=True) for s in ("W2", "delta2", "a1", "da1"))
    assert d.step("dW2").component == delta2[p] * a1[q]
    assert d.step("da1").component == sp.Sum(
        W2[k, i] * delta2[k], (k, 0, sp.Symbol("n_2", integer=True, positive=True) - 1)
    )
    assert sp.expand(d.step("delta1").component - da1[i] * a1[i] * (1 - a1[i])) == 0


@pytest.mark.parametrize(
    "act, expected",
    [
        ("sigmoid", lambda a, z: a * (1 - a)),
        ("tanh", lambda a, z: 1 - a**2),
        ("relu", lambda a, z: step_fn(z)),
    ],
)
def test_derivatives_are_written_in_forward_values(act, expected):
    d = derive(build("n", 2, [Dense(3, act), Dense(1)], "mse"))
    s = d.step("delta1")
    assert s.jacobian == "diagonal"
    i = sp.Symbol("i", integer=True)
    a1, z1, da1 = (sp.IndexedBase(s_, real=True) for s_ in ("a1", "z1", "da1"))
    assert sp.expand(s.component - da1[i] * expected(a1[i], z1[i])) == 0


def test_softmax_jacobian_is_full_and_contracts_to_s_times_g_minus_s_dot_g():
    d = derive(NETS["softmax_mse"])
    s = d.step("delta1")
    assert s.jacobian == "full"
    assert not s.fused  # the loss gradient is used twice: kept as a named quantity
    a1, g = Vec("a1"), Vec("da1")
    assert sp.expand(s.matrix - a1 * (g - SumAll(a1 * g))) == 0


def test_softmax_with_cross_entropy_fuses_to_yhat_minus_y():
    d = derive(NETS["softmax_ce"])
    s = d.step("delta2")
    assert s.fused and s.seed
    assert s.matrix == Vec("a2") - Vec("y")
    assert d.step("da2").needed is False
    assert any("sum_k y_k = 1" in note for note in d.notes)


def test_sigmoid_with_bce_fuses_to_a_stable_difference():
    d = derive(build("b", 2, [Dense(3, "sigmoid")], "bce"))
    s = d.step("delta1")
    assert s.fused
    n1 = sp.Symbol("n_1", integer=True, positive=True)
    assert sp.simplify(s.matrix - (Vec("a1") - Vec("y")) / n1) == 0


def test_dense_jacobian_is_linear_and_map_jacobians_are_full():
    d = derive(NETS["custom"])
    kinds = {s.grad: s.jacobian for s in d.steps}
    assert kinds["delta1"] == "diagonal"  # through the softsign activation
    assert kinds["da1"] == "full"  # through the l2norm map
    assert kinds["da2"] == "linear"  # through dense layer 3
    assert kinds["dx"] == "linear"
    assert MatVec not in {type(a) for a in sp.preorder_traversal(d.step("dx").matrix)}


def test_widths_stay_symbolic():
    d = derive(NETS["seed"])
    for s in d.steps:
        for ind in s.component.atoms(sp.Indexed):
            assert all(isinstance(t, sp.Symbol) for t in ind.indices)
    assert d.step("da1").component.has(sp.Symbol("n_2", integer=True, positive=True))


def _fd(fun, arr, h=1e-3):
    """4th-order central differences of a scalar function of ``arr``."""
    g = np.zeros_like(arr)
    for ix in np.ndindex(arr.shape):
        vals = []
        for c in (-2, -1, 1, 2):
            b = arr.copy()
            b[ix] += c * h
            vals.append(fun(b))
        g[ix] = (vals[0] - 8 * vals[1] + 8 * vals[2] - vals[3]) / (12 * h)
    return g


def _sample(net, seed):
    rng = np.random.default_rng(seed)
    params = {p.name: rng.normal(scale=0.7, size=net.shape(p)) for p in net.params}
    x = rng.normal(size=net.size(net.input_width))
    C = net.size(net.output_width)
    y = rng.uniform(0.05, 0.95, size=C)
    if net.loss.name == "cross_entropy":
        y = y / y.sum()
    return params, x, y


@pytest.mark.parametrize("name", sorted(NETS))
def test_every_gradient_matches_finite_differences(name):
    """Every dL/dW, dL/db and dL/dx evaluated from the derived component forms vs 5-point FD
    in float64: relative error < 1e-7."""
    net = NETS[name]
    d = derive(net)
    params, x, y = _sample(net, 0)
    _, env = run_derivation(d, params, x, y)
    for p in net.params:

        def f(v, p=p):
            return run_derivation(d, {**params, p.name: v}, x, y)[0]

        ref = _fd(f, params[p.name])
        err = np.max(np.abs(env["d" + p.name] - ref)) / max(np.max(np.abs(ref)), 1e-8)
        assert err < 1e-7, (p.name, err)
    ref = _fd(lambda v: run_derivation(d, params, v, y)[0], x)
    err = np.max(np.abs(env["dx"] - ref)) / max(np.max(np.abs(ref)), 1e-8)
    assert err < 1e-7, ("dx", err)


@pytest.mark.parametrize("name", sorted(NETS))
def test_matrix_form_equals_component_form(name):
    net = NETS[name]
    d = derive(net)
    for seed in range(3):
        params, x, y = _sample(net, seed)
        _, comp = run_derivation(d, params, x, y)
        _, mat = run_derivation(d, params, x, y, form="matrix")
        for s in d.steps:
            np.testing.assert_allclose(mat[s.grad], comp[s.grad], rtol=1e-12, atol=1e-14)


def test_symbolic_widths_evaluate_at_any_concrete_size():
    n1 = sp.Symbol("h", integer=True, positive=True)
    net = build("sym", 2, [Dense(n1, "tanh"), Dense(2, "sigmoid")], "bce")
    d = derive(net)
    assert not net.is_concrete
    for h in (1, 4):
        concrete = net.with_sizes(h=h)
        params, x, y = _sample(concrete, h)
        env = run_derivation(d.__class__(concrete, d.forward, d.loss, d.steps), params, x, y)[1]
        assert env["dW1"].shape == (h, 2)


def test_local_jacobian_evaluates_to_the_elementwise_derivative():
    d = derive(NETS["seed"])
    s = d.step("delta1")
    i, k = s.local_indices
    a1 = np.array([0.2, 0.4, 0.6, 0.8])
    J = eval_component(s.local, {"a1": a1}, {}, (i, k), {i: 4, k: 4})
    np.testing.assert_allclose(J, np.diag(a1 * (1 - a1)))


def test_a_user_written_dense_layer_is_derived_like_the_built_in_one():
    """A Map with its own weight matrix and a different output width: the same gradients as
    Dense, in forward values (1 - a^2), since the engine never asks which layer it is."""
    from symgrad import Map, a, i, j, m, n

    A = sp.IndexedBase("A", real=True)
    c = sp.IndexedBase("c", real=True)
    body = sp.tanh(sp.Sum(A[i, j] * a[j], (j, 0, n - 1)) + c[i])
    net = build("md", 3, [Map(body, units=5, params={A: (m, n), c: (m,)}), Dense(2)], "mse")
    d = derive(net)
    a1, da1 = Vec("a1"), Vec("da1")
    assert sp.expand(d.step("dA1").matrix - Outer(da1 * (1 - a1**2), Vec("x"))) == 0
    assert sp.expand(d.step("dc1").matrix - da1 * (1 - a1**2)) == 0
    params, x, y = _sample(net, 0)
    _, env = run_derivation(d, params, x, y)

    def f(v):
        return run_derivation(d, {**params, "A1": v}, x, y)[0]

    ref = _fd(f, params["A1"])
    assert np.max(np.abs(env["dA1"] - ref)) / np.max(np.abs(ref)) < 1e-7


def _local_matrix_value(m: sp.Expr, env: dict, sizes: dict, rows: int, cols: int) -> np.ndarray:
    """A local Jacobian's matrix form at concrete values: ``diag(v)`` as ``v I``."""
    from symgrad.calculus.local_matrix import Diag
    from symgrad.verify.evaluation import eval_matrix

    m = m.replace(lambda e: isinstance(e, Diag), lambda e: e.args[0] * Mat("I"))
    value = eval_matrix(m, {**env, "I": np.eye(rows, cols)}, sizes)
    return np.broadcast_to(value, (rows, cols))


@pytest.mark.parametrize("name", sorted(NETS))
def test_every_local_jacobian_matrix_equals_its_component_form(name):
    """The documents' local Jacobian matrices (``I/r - a a^T/r``, ``diag(g/sigma) - g 1^T /
    (n sigma) - ...``) entry by entry against the component form ``d out_i / d in_k`` at
    one sample's forward values (rel. 1e-12): a bracket inside a sum is not a diagonal."""
    net = NETS[name]
    d = derive(net)
    params, x, y = _sample(net, 0)
    _, env = run_derivation(d, params, x, y)
    env = {**env, **params, "x": x}
    sizes = dict(net.sizes)
    checked = 0
    for s in d.steps:
        if s.kind != "input" or s.local is None or s.local_matrix is None:
            continue
        i, k = s.local_indices
        rows, cols = net.size(s.stage.width), net.size(s.stage.in_width)
        comp = eval_component(s.local, env, sizes, (i, k), {i: rows, k: cols})
        mat = _local_matrix_value(s.local_matrix, env, sizes, rows, cols)
        np.testing.assert_allclose(mat, comp, rtol=1e-12, atol=1e-14, err_msg=s.grad)
        checked += 1
    assert checked or not any(s.kind == "input" for s in d.steps)
