"""The generated NumPy module checks its arguments: no silent
broadcasting, no integer labels taken for one-hot rows, no integer weights; and specs that
used to generate broken modules (width-changing or constant maps, constant activations and
losses, no parameters) generate working ones. The checks cost nothing on a correct call
(no copies, no scan for inf or nan); lists of parameters, a wrong optimiser state, bad
rates and seeds are refused on every target (NumPy standing in for CuPy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from catalogue import catalogue

from symgrad.backends.codegen import load_module
from symgrad.frontend.spec import load_spec
from symgrad.pipeline import generate


@pytest.fixture(scope="module")
def mods():
    nets = catalogue()
    return {
        "seed": load_module(generate(nets["seed"], optimizer="adam"), "safety_seed"),  # C = 2
        "ce": load_module(generate(nets["softmax_ce"], optimizer="sgd"), "safety_ce"),  # C = 3
        "bce": load_module(generate(nets["bce"], optimizer="momentum"), "safety_bce"),
    }


def point(mod, n=3, seed=0):
    rng = np.random.default_rng(seed)
    params = mod.init_params(seed)
    X = rng.normal(size=(n, mod.INPUT_SIZE))
    Y = np.eye(mod.OUTPUT_SIZE)[rng.integers(0, mod.OUTPUT_SIZE, n)]
    return params, X, Y


def entry_points(mod, params, X, Y):
    """Every public function that takes these arguments."""
    calls = [
        ("forward", lambda: mod.forward(params, X)),
        ("loss", lambda: mod.loss(params, X, Y)),
        ("loss_and_grads", lambda: mod.loss_and_grads(params, X, Y)),
    ]
    return calls


def raises_naming(fn, *phrases: str) -> str:
    with pytest.raises(ValueError) as info:
        fn()
    msg = str(info.value)
    for p in phrases:
        assert p in msg, (p, msg)
    return msg


@pytest.mark.parametrize("name", ["seed", "ce", "bce"])
@pytest.mark.parametrize(
    "make_y",
    [
        lambda n, C: np.zeros((n, 1)),
        lambda n, C: np.zeros((1, C)),
        lambda n, C: np.zeros((n,)),
        lambda n, C: np.float64(0.5),
        lambda n, C: np.zeros((n, C + 1)),
        lambda n, C: np.zeros((C, n)) if n != C else np.zeros((n, C, 1)),
        lambda n, C: np.zeros((n + 1, C)),
    ],
    ids=["n1", "1C", "n", "scalar", "wide", "transposed", "more-rows"],
)
def test_wrong_target_shapes_are_refused(mods, name, make_y) -> None:
    mod = mods[name]
    params, X, _ = point(mod, n=4)
    Y = make_y(4, mod.OUTPUT_SIZE)
    msg = raises_naming(lambda: mod.loss_and_grads(params, X, Y), "Y has shape", "expected")
    assert str(np.shape(Y)) in msg and str((4, mod.OUTPUT_SIZE)) in msg
    raises_naming(lambda: mod.loss(params, X, Y), "Y has shape")


def test_integer_labels_for_cross_entropy_are_refused_with_a_hint(mods) -> None:
    mod = mods["ce"]
    params, X, _ = point(mod, n=3)  # n = C: broadcasting would have produced a number
    labels = np.array([0, 2, 1])
    raises_naming(lambda: mod.loss_and_grads(params, X, labels), "Y has shape (3,)", "np.eye(3)")


@pytest.mark.parametrize(
    ("rows", "ok"),
    [
        ([[0.2, 0.3, 0.5]], True),
        ([[1, 0, 0]], True),  # integer one-hot rows are fine
        ([[0.2, 0.3, 0.4]], False),  # sums to 0.9
        ([[1.5, -0.5, 0.0]], False),  # sums to 1 but negative
        ([[0.0, 0.0, 0.0]], False),
    ],
)
def test_cross_entropy_targets_must_be_distributions(mods, rows, ok) -> None:
    mod = mods["ce"]
    params, X, _ = point(mod, n=1)
    Y = np.array(rows)
    if ok:
        value, grads = mod.loss_and_grads(params, X, Y)
        assert np.isfinite(value)
    else:
        raises_naming(lambda: mod.loss_and_grads(params, X, Y), "Y row 0", "probability")


def test_float32_rounding_of_probabilities_is_accepted(mods) -> None:
    mod = mods["ce"]
    params, X, _ = point(mod, n=64)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    Y = np.random.default_rng(1).uniform(0.01, 1, (64, 3))
    Y = (Y / Y.sum(axis=1, keepdims=True)).astype(np.float32)
    value, grads = mod.loss_and_grads(p32, X.astype(np.float32), Y)
    assert all(g.dtype == np.float32 for g in grads.values())


@pytest.mark.parametrize("name", ["seed", "ce", "bce"])
def test_parameter_shapes_keys_and_dtypes_are_checked(mods, name) -> None:
    mod = mods[name]
    params, X, Y = point(mod)
    bias = next(k for k in mod.PARAM_NAMES if k.startswith("b"))
    units = mod.PARAM_SHAPES[bias][0]
    cases = [
        ({**params, bias: params[bias].reshape(units, 1)}, f"params['{bias}'] has shape"),
        ({k: v for k, v in params.items() if k != "W1"}, "expected"),
        ({**params, "W9": params["W1"]}, "expected"),
        ({**params, "W1": params["W1"].astype(np.int64)}, "dtype int64"),
        ({**params, "W1": params["W1"].astype(np.float32)}, "use one dtype"),
        ({**params, "W1": params["W1"].T.copy()}, "params['W1'] has shape"),
    ]
    for bad, phrase in cases:
        for what, fn in entry_points(mod, bad, X, Y):
            raises_naming(fn, phrase)
            del what
    with pytest.raises(TypeError, match="params must be a dict"):
        mod.forward([params[k] for k in mod.PARAM_NAMES], X)


@pytest.mark.parametrize("name", ["seed", "ce"])
def test_inputs_are_checked(mods, name) -> None:
    mod = mods[name]
    params, X, Y = point(mod, n=3)
    d = mod.INPUT_SIZE
    for bad, phrase in [
        (np.zeros((0, d)), "X has shape (0,"),
        (np.zeros((3, d + 1)), f"X has shape (3, {d + 1}), expected (n, {d})"),
        (np.zeros((3,)), "X has shape (3,)"),
        (np.zeros((3, d, 1)), "X has shape"),
        (X.astype(complex), "X has dtype complex128"),
        (np.array([["a"] * d] * 3), "X has dtype <U1"),
    ]:
        Yb = Y[: max(len(bad), 1)] if np.ndim(bad) else Y
        for _, fn in entry_points(mod, params, bad, Yb):
            raises_naming(fn, phrase)


def test_non_finite_inputs_are_refused(mods) -> None:
    """Documented behaviour: inf or nan in X or Y is a ValueError (the loss would be inf/nan,
    or a finite-looking number for saturating activations)."""
    mod = mods["seed"]
    params, X, Y = point(mod)
    for k, v in [(0, np.inf), (1, -np.inf), (2, np.nan)]:
        Xb = X.copy()
        Xb[k, 0] = v
        for _, fn in entry_points(mod, params, Xb, Y):
            raises_naming(fn, "X contains inf or nan")
    Yb = Y.copy()
    Yb[0, 0] = np.nan
    raises_naming(lambda: mod.loss(params, X, Yb), "Y contains inf or nan")


def test_integer_and_list_inputs_are_converted(mods) -> None:
    mod = mods["seed"]
    params, X, Y = point(mod)
    v1 = mod.loss(params, X.round().astype(np.int64).tolist(), Y.astype(np.int64))
    v2 = mod.loss(params, X.round(), Y)
    assert v1 == v2


@pytest.mark.parametrize("name", ["seed", "ce", "bce"])
def test_init_params_refuses_non_float_dtypes(mods, name) -> None:
    mod = mods[name]
    for dtype in (np.int64, np.int32, bool, np.complex128, np.float16):
        raises_naming(lambda dtype=dtype: mod.init_params(0, dtype), "expected float32 or float64")
    for dtype in (np.float32, np.float64):
        assert all(v.dtype == dtype for v in mod.init_params(0, dtype).values())


@pytest.mark.parametrize("name", ["seed", "ce", "bce"])
def test_step_checks_params_and_grads(mods, name) -> None:
    mod = mods[name]
    params, X, Y = point(mod)
    _, grads = mod.loss_and_grads(params, X, Y)
    state = mod.init_state(params)
    bad = {**grads, "W1": grads["W1"][:1]}
    raises_naming(lambda: mod.step(params, bad, state), "grads['W1'] has shape")
    raises_naming(
        lambda: mod.step(params, {k: v.astype(np.float32) for k, v in grads.items()}, state),
        "different dtypes",
    )
    mod.step(params, grads, state)  # a good call still works


# -- specs that used to generate broken modules -----------------------------------------

SPECS = {
    "map_only": """
        name = "map_only"
        input = 3
        loss = "mse"
        [[layer]]
        type = "map"
        expr = "tanh(a[i])"
    """,
    "sum_map": """
        name = "sum_map"
        input = 3
        loss = "mse"
        [[layer]]
        units = 4
        activation = "tanh"
        [[layer]]
        type = "map"
        expr = "sum(a[j], j)"
    """,
    "constant_activation": """
        name = "constant_activation"
        input = 3
        loss = "mse"
        [[layer]]
        units = 2
        activation = { name = "three", expr = "3" }
    """,
    "constant_loss": """
        name = "constant_loss"
        input = 3
        loss = { name = "two", expr = "2" }
        [[layer]]
        units = 2
        activation = "tanh"
    """,
    "constant_then_dense": """
        name = "constant_then_dense"
        input = 2
        loss = "mse"
        [[layer]]
        units = 3
        activation = { name = "one", expr = "1" }
        [[layer]]
        units = 2
        activation = "sigmoid"
    """,
}


def _fd(mod, params, X, Y, h=1e-6):
    out = {}
    for k, v in params.items():
        g = np.zeros_like(v)
        for idx in np.ndindex(v.shape):
            p1 = {**params, k: v.copy()}
            p2 = {**params, k: v.copy()}
            p1[k][idx] += h
            p2[k][idx] -= h
            g[idx] = (mod.loss(p1, X, Y) - mod.loss(p2, X, Y)) / (2 * h)
        out[k] = g
    return out


@pytest.mark.parametrize("name", sorted(SPECS))
def test_formerly_broken_specs_generate_working_modules(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(line.strip() for line in SPECS[name].splitlines()))
    net = load_spec(str(path))
    mod = load_module(generate(net), f"safety_{name}")
    rng = np.random.default_rng(0)
    n = 5
    params = mod.init_params(0)
    params = {k: v + rng.normal(0, 0.1, v.shape) for k, v in params.items()}
    X = rng.normal(size=(n, mod.INPUT_SIZE))
    Y = rng.normal(size=(n, mod.OUTPUT_SIZE))
    yhat = mod.forward(params, X)
    assert yhat.shape == (n, mod.OUTPUT_SIZE)
    value, grads = mod.loss_and_grads(params, X, Y)
    assert isinstance(value, float) and np.isfinite(value)
    assert value == pytest.approx(mod.loss(params, X, Y), rel=1e-12)
    assert set(grads) == set(mod.PARAM_NAMES)
    fd = _fd(mod, params, X, Y)
    for k in mod.PARAM_NAMES:
        assert grads[k].shape == mod.PARAM_SHAPES[k]
        np.testing.assert_allclose(grads[k], fd[k], rtol=1e-6, atol=1e-8)
    # float32 in, float32 out, here too
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    y32 = mod.forward(p32, X.astype(np.float32))
    if mod.PARAM_NAMES:
        assert y32.dtype == np.float32


# -- lists, optimiser state, rates and seeds; every target -------------------------------


def _target_module(target: str, monkeypatch, name: str = "seed"):
    """The catalogue network's module for ``target`` (NumPy standing in for CuPy)."""
    if target == "torch":
        pytest.importorskip("torch")
    if target == "jax":
        pytest.importorskip("jax").config.update("jax_enable_x64", True)
    if target == "cupy":
        import sys

        monkeypatch.setitem(sys.modules, "cupy", np)
    return load_module(generate(catalogue()[name], target=target), f"safety_{target}_{name}")


@pytest.mark.parametrize("target", ["numpy", "cupy", "torch", "jax"])
def test_parameters_given_as_lists_are_refused_naming_them(target, monkeypatch) -> None:
    mod = _target_module(target, monkeypatch)
    params = mod.init_params(0)
    X = np.zeros((2, mod.INPUT_SIZE))
    Y = np.zeros((2, mod.OUTPUT_SIZE))
    as_lists = {k: np.asarray(v).tolist() for k, v in params.items()}
    for fn in (lambda: mod.forward(as_lists, X), lambda: mod.loss_and_grads(as_lists, X, Y)):
        raises_naming(fn, "params['W1'] is a list", "expected")
    one = {**params, "b1": np.asarray(params["b1"]).tolist()}
    raises_naming(lambda: mod.loss_and_grads(one, X, Y), "params['b1'] is a list")


@pytest.mark.parametrize("target", ["numpy", "cupy", "torch", "jax"])
@pytest.mark.parametrize("seed", [1.5, -1, True, "0", None])
def test_init_params_refuses_a_seed_that_is_not_a_natural_number(target, seed, monkeypatch):
    mod = _target_module(target, monkeypatch)
    raises_naming(lambda: mod.init_params(seed), "seed is", "non-negative integer")
    assert set(mod.init_params(np.int64(3))) == set(mod.PARAM_NAMES)


@pytest.mark.parametrize("name", ["seed", "ce", "bce"])
def test_step_refuses_a_wrong_state(mods, name) -> None:
    mod = mods[name]
    params, X, Y = point(mod)
    _, grads = mod.loss_and_grads(params, X, Y)
    state = mod.init_state(params)
    if state:  # momentum and adam keep buffers: an empty or foreign state is refused
        raises_naming(lambda: mod.step(params, grads, {}), "state has keys", "init_state")
        raises_naming(lambda: mod.step(params, grads, None), "state has keys")
        key = next(iter(k for k in state if k != "t"))
        bad = {**state, key: state[key][..., :1]}
        raises_naming(lambda: mod.step(params, grads, bad), f"state[{key!r}]", "shape")
        f32 = {k: v.astype(np.float32) if k != "t" else v for k, v in state.items()}
        raises_naming(lambda: mod.step(params, grads, f32), f"state[{key!r}] has dtype")
    else:
        raises_naming(lambda: mod.step(params, grads, {"v": 1}), "state has keys")
    before = {k: v.copy() for k, v in params.items()}
    mod.step(params, grads, state)  # the right state still works
    assert any(not np.array_equal(before[k], params[k]) for k in params)


@pytest.mark.parametrize("name", ["seed", "ce", "bce"])
@pytest.mark.parametrize("lr", [-1.0, float("nan"), float("inf"), -1e-12])
def test_step_refuses_negative_or_non_finite_rates(mods, name, lr) -> None:
    mod = mods[name]
    params, X, Y = point(mod)
    _, grads = mod.loss_and_grads(params, X, Y)
    state = mod.init_state(params)
    before = {k: v.copy() for k, v in params.items()}
    raises_naming(lambda: mod.step(params, grads, state, lr=lr), "lr is", "expected")
    raises_naming(lambda: mod.step(params, grads, state, weight_decay=lr), "weight_decay is")
    for k in params:  # nothing was changed by a refused step
        np.testing.assert_array_equal(params[k], before[k])
    with pytest.raises(TypeError, match="lr is"):
        mod.step(params, grads, state, lr="0.1")
    mod.step(params, grads, state, lr=0.0)  # zero is a valid (if useless) rate


# -- checks cost nothing on the normal path ---------------------------------------------


@pytest.mark.parametrize("name", ["seed", "ce", "bce"])
def test_a_finite_call_neither_copies_nor_scans_its_inputs(mods, name, monkeypatch) -> None:
    mod = mods[name]
    params, X, Y = point(mod, n=8)
    for dtype in (np.float64, np.float32):
        p = {k: v.astype(dtype) for k, v in params.items()}
        Xd, Yd = X.astype(dtype), Y.astype(dtype)
        Xc, Yc = mod._check(p, Xd, Yd)
        assert Xc is Xd and Yc is Yd  # already arrays of the right dtype: not copied
    Xc, _ = mod._check(params, X.astype(np.float32), Y)
    assert Xc.dtype == np.float64  # converted to the parameters' dtype

    def scanned(**arrays):
        raise AssertionError("a finite call looked for inf or nan")

    monkeypatch.setattr(mod, "_not_finite", scanned)
    monkeypatch.setattr(mod, "_params_error", scanned)
    value, grads = mod.loss_and_grads(params, X, Y)
    assert np.isfinite(value) and all(np.isfinite(g).all() for g in grads.values())


@pytest.mark.parametrize("n", [3, 4000])  # X checked itself / the gradients checked instead
def test_non_finite_inputs_found_lazily_at_any_batch_size(mods, n) -> None:
    """A saturating network can turn inf into a finite loss: the gradient reading X is then
    not finite, and the module names X (whichever of X and the gradients it read)."""
    mod = mods["seed"]
    params, X, Y = point(mod, n=n)
    Xb = X * 1e3
    Xb[n // 2, 1] = np.inf
    raises_naming(lambda: mod.loss_and_grads(params, Xb, Y), "X contains inf or nan")
    Yb = Y.copy()
    Yb[n - 1, 0] = np.nan
    raises_naming(lambda: mod.loss_and_grads(params, X, Yb), "Y contains inf or nan")
    # overflowing squares of finite values are not mistaken for inf
    value, _ = mod.loss_and_grads(params, X * 1e160, Y)
    assert np.isfinite(value)


@pytest.mark.parametrize("target", ["cupy", "torch", "jax"])
def test_other_targets_name_non_finite_inputs(target, monkeypatch) -> None:
    mod = _target_module(target, monkeypatch)
    params = mod.init_params(0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, mod.INPUT_SIZE))
    Y = rng.uniform(size=(4, mod.OUTPUT_SIZE))
    if target == "torch":
        import torch

        X, Y = torch.tensor(X), torch.tensor(Y)
    Xb = X.clone() if target == "torch" else X.copy()
    Xb[1, 0] = np.inf
    for fn in (
        lambda: mod.loss_and_grads(params, Xb, Y),
        lambda: mod.loss(params, Xb, Y),
        lambda: mod.forward(params, Xb),
    ):
        raises_naming(fn, "X contains inf or nan")
