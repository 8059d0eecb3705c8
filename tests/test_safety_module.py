"""The generated NumPy module checks its arguments: no silent
broadcasting, no integer labels taken for one-hot rows, no integer weights; and specs that
used to generate broken modules (width-changing or constant maps, constant activations and
losses, no parameters) generate working ones."""

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
