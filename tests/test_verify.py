"""``verify_network``: hand-written modules (correct and broken) and freshly generated code."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from catalogue import catalogue

import symgrad.verify.verify as V
from symgrad import Dense, Map, a, build, derive, i, j, n
from symgrad.errors import SpecError
from symgrad.verify.verify import (
    concrete_sizes,
    finite_differences,
    rel_error,
    symbolic_rows,
    torch_reference,
    verify_network,
)

MODULES = Path(__file__).parent / "modules"
NETS = catalogue()
NAMES = sorted(NETS)
SEED = build("seed_net", 3, [Dense(4, "sigmoid"), Dense(2, "sigmoid")], "mse")
SQUARE = build("square", 3, [Dense(3, "sigmoid"), Dense(3, "sigmoid")], "mse")
FD_ONLY = ("fd",)


def module(name: str) -> str:
    return str(MODULES / f"{name}.py")


def failing(report) -> set[str]:
    return {r.name for r in report.rows if not r.ok}


# -- hand-written modules ------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_correct_module_passes(dtype):
    report = verify_network(SEED, module=module("seed_correct"), dtype=dtype)
    assert report.ok, report.format()
    assert {r.name for r in report.rows} >= {"W1", "b1", "W2", "b2"}
    assert re.search(r"^OK: \d+ checks passed$", report.format().splitlines()[-1])


def test_correct_square_module_passes():
    assert verify_network(SQUARE, module=module("square_correct")).ok


def test_sign_flip_names_w1_and_b1():
    report = verify_network(SEED, module=module("seed_sign_flip"), against=FD_ONLY)
    assert not report.ok
    assert failing(report) == {"W1", "b1"}
    last = report.format().splitlines()[-1]
    assert last.startswith("FAIL: W1 (fd): max rel err 2.0e+00")
    assert "sign flipped" in report.format()


def test_transposed_gradient_names_w2():
    report = verify_network(SQUARE, module=module("square_transposed"), against=FD_ONLY)
    assert failing(report) == {"W2"}
    assert report.format().splitlines()[-1].startswith("FAIL: W2 (fd)")
    assert "transposed" in report.row("W2", "fd").note


def test_missing_batch_mean_names_every_parameter():
    report = verify_network(SEED, module=module("seed_missing_mean"), against=FD_ONLY, batch=4)
    assert failing(report) == {"W1", "b1", "W2", "b2"}
    assert report.row("b2", "fd").note == "off by a factor 0.25"
    assert report.row("W1", "fd").max_rel == pytest.approx(3.0)  # n = 4 times too large


def test_broken_modules_fail_against_torch_too():
    pytest.importorskip("torch")
    flip = verify_network(SEED, module=module("seed_sign_flip"), against=("torch",))
    assert failing(flip) == {"W1", "b1"}
    assert flip.format().splitlines()[-1].startswith("FAIL: W1 (torch)")
    transposed = verify_network(SQUARE, module=module("square_transposed"), against=("torch",))
    assert failing(transposed) == {"W2"}
    mean = verify_network(SEED, module=module("seed_missing_mean"), against=("torch",))
    assert failing(mean) == {"W1", "b1", "W2", "b2"}
    assert all(r.ok for r in mean.rows if r.name in ("loss", "yhat"))


def test_param_name_mismatch_is_a_failure_line():
    report = verify_network(SEED, module=module("seed_bad_names"))
    assert not report.ok
    text = report.format()
    assert "Traceback" not in text
    last = text.splitlines()[-1]
    assert last.startswith("FAIL: PARAM_NAMES")
    assert "c2" in last and "missing b2" in last
    assert report.rows == []


def test_shape_mismatch_is_a_failure_line():
    report = verify_network(SQUARE, module=module("seed_correct"))
    assert not report.ok
    assert "PARAM_SHAPES['W1'] is (4, 3), the network has (3, 3)" in report.format()


def test_modified_inputs_are_reported():
    report = verify_network(SEED, module=module("seed_mutates"), against=FD_ONLY)
    assert "the module modified its inputs: X" in report.failures()


def test_float32_upcast_is_reported():
    report = verify_network(SEED, module=module("seed_float64_only"), dtype="float32")
    fails = report.failures()
    assert "W1: gradient has dtype float64, expected float32" in fails
    assert "forward returned dtype float64, expected float32" in fails
    # its numbers are right: only the dtype checks fail
    assert all(r.ok for r in report.rows)


def test_same_module_passes_in_float64_but_not_float32():
    assert verify_network(SEED, module=module("seed_float64_only")).ok


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "mod.py"
    path.write_text(text)
    return str(path)


def test_module_that_cannot_be_imported(tmp_path):
    report = verify_network(SEED, module=_write(tmp_path, "import numpy as np\n1/0\n"))
    assert not report.ok
    assert "cannot import" in report.format() and "ZeroDivisionError" in report.format()
    report = verify_network(SEED, module=_write(tmp_path, "def f(:\n"))
    assert "SyntaxError" in report.format()


def test_module_lacking_the_api(tmp_path):
    report = verify_network(SEED, module=_write(tmp_path, "PARAM_NAMES = ()\n"))
    assert not report.ok
    assert "lacks PARAM_SHAPES, init_params, forward, loss, loss_and_grads" in report.format()


def test_module_that_raises(tmp_path):
    text = Path(module("seed_correct")).read_text()
    text = text.replace("    a1, a2 = _forward(params, X)\n", "    raise ValueError('boom')\n")
    report = verify_network(SEED, module=_write(tmp_path, text))
    assert "loss_and_grads raised ValueError: boom" in report.failures()


def test_init_params_with_missing_parameters(tmp_path):
    text = Path(module("seed_correct")).read_text()
    text = text.replace(
        "for k, s in PARAM_SHAPES.items()}", 'for k, s in PARAM_SHAPES.items() if k != "b2"}'
    )
    report = verify_network(SEED, module=_write(tmp_path, text))
    assert report.format().splitlines()[-1].startswith("FAIL: init_params returned")


def test_wrong_grad_keys(tmp_path):
    text = Path(module("seed_correct")).read_text().replace('"b2": delta2', '"B2": delta2')
    report = verify_network(SEED, module=_write(tmp_path, text))
    assert any("grads keys" in f for f in report.failures())


def test_bad_arguments_raise_spec_error(tmp_path):
    with pytest.raises(SpecError):
        verify_network(SEED, dtype="float16")
    with pytest.raises(SpecError):
        verify_network(SEED, against=("fd", "tensorflow"))
    with pytest.raises(SpecError):
        verify_network(SEED, module=str(tmp_path / "missing.py"))
    with pytest.raises(SpecError):
        verify_network(SEED, batch=0)


# -- freshly generated code ----------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_generated_code_passes_fd(name):
    report = verify_network(NETS[name], against=FD_ONLY)
    assert report.ok, report.format()
    assert {r.name for r in report.rows} == set(NETS[name].param_names)


@pytest.mark.parametrize("name", NAMES)
def test_generated_code_passes_torch(name):
    pytest.importorskip("torch")
    report = verify_network(NETS[name], against=("torch",), seed=3, batch=6)
    assert report.ok, report.format()
    assert {r.name for r in report.rows} == {"loss", "yhat", *NETS[name].param_names}
    assert max(r.max_rel for r in report.rows) <= 1e-7


KNOWN_FLOAT32: dict[str, str] = {}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(nm, marks=pytest.mark.xfail(strict=True, reason=KNOWN_FLOAT32[nm]))
        if nm in KNOWN_FLOAT32
        else nm
        for nm in NAMES
    ],
)
def test_generated_code_float32(name):
    report = verify_network(NETS[name], dtype="float32", against=("fd", "torch"))
    assert report.ok, report.format()
    assert all(r.tol == 1e-3 for r in report.rows)


@pytest.mark.parametrize("name", NAMES)
def test_symbolic_passes(name):
    report = verify_network(NETS[name], symbolic=True, against=FD_ONLY)
    assert report.ok, report.format()
    steps = {r.name for r in report.symbolic if r.reference == "matrix form"}
    assert steps == {s.grad for s in derive(NETS[name]).steps}
    assert "symbolic derivation" in report.format()


def test_symbolic_rows_at_random_sizes():
    h = sp.Symbol("h", integer=True, positive=True)
    d = sp.Symbol("d", integer=True, positive=True)
    net = build(
        "sym",
        d,
        [Dense(h, "tanh"), Map(a[i] / sp.Sum(a[j] ** 2 + 1, (j, 0, n - 1))), Dense(2, "sigmoid")],
        "bce",
    )
    assert not net.is_concrete
    sized = concrete_sizes(net, seed=5)
    assert sized.is_concrete
    assert all(2 <= v <= 5 for v in sized.sizes.values())
    rows = symbolic_rows(net, seed=5)
    assert rows and all(r.ok for r in rows)
    with pytest.raises(SpecError):
        verify_network(net)


def test_torch_missing_is_skipped(monkeypatch):
    import symgrad.verify.reference as AR

    monkeypatch.setattr(AR, "backend", lambda name: None)
    report = verify_network(SEED, against=("fd", "torch", "jax"))
    assert report.ok
    assert report.skipped == ["torch not installed", "jax not installed"]
    assert "skipped: torch not installed" in report.format()
    assert {r.reference for r in report.rows} == {"fd"}
    report = verify_network(SEED, against=("torch",))
    assert not report.ok
    assert "no reference available" in report.format()


def test_jax_used_or_skipped():
    report = verify_network(SEED, against=("jax",))
    if V.backend("jax") is None:
        assert report.skipped == ["jax not installed"]
    else:
        assert report.ok and {r.reference for r in report.rows} == {"jax"}


# -- the references themselves -------------------------------------------------------


def test_rel_error():
    assert rel_error(np.ones(3), np.ones(3)) == (0.0, 0.0)
    assert rel_error(np.zeros(2), np.zeros(2)) == (0.0, 0.0)
    assert rel_error(np.ones(2), np.ones(3)) == (np.inf, np.inf)
    assert rel_error(np.array([np.nan]), np.array([1.0]))[1] == np.inf
    assert rel_error(np.array([1.0, 3.0]), np.array([2.0, 4.0])) == (1.0, 0.25)


def test_finite_differences_of_a_known_function():
    def loss(params, X, Y):
        w = params["w"]
        return float(np.sum(np.sin(w) * X[0, : w.size]) + np.sum(w**3))

    w = np.array([0.3, -1.2, 2.5])
    X = np.array([[1.0, 2.0, -0.5]])
    fd = finite_differences(loss, {"w": w}, X, X)
    exact = np.cos(w) * X[0] + 3 * w**2
    assert rel_error(fd["w"], exact)[1] < 1e-10


def test_finite_differences_step_over_a_kink():
    # |w| sampled 1e-3 away from its kink: the default step straddles it; the retry does not.
    def loss(params, X, Y):
        return float(np.sum(np.abs(params["w"])))

    w = np.array([1e-3, -2e-3])
    X = Y = np.zeros((1, 1))
    plain = finite_differences(loss, {"w": w}, X, Y)
    assert rel_error(plain["w"], np.sign(w))[1] > 1e-3
    retried = finite_differences(loss, {"w": w}, X, Y, hint={"w": np.sign(w)})
    assert rel_error(retried["w"], np.sign(w))[1] < 1e-10
    wrong = finite_differences(loss, {"w": w}, X, Y, hint={"w": -np.sign(w)})
    assert rel_error(wrong["w"], -np.sign(w))[1] > 1


def test_torch_reference_is_independent_of_symgrad_derivatives():
    torch = pytest.importorskip("torch")
    net = NETS["custom"]  # custom activation, map layer, custom loss: all via the evaluator
    rng = np.random.default_rng(0)
    params = {p.name: rng.normal(0, 0.5, net.shape(p)) for p in net.params}
    X = rng.normal(size=(3, 3))
    Y = rng.normal(size=(3, 2))
    yhat, value, grads = torch_reference(net, params, X, Y)
    # the same network written out by hand in torch
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    z1 = torch.tensor(X) @ t["W1"].T + t["b1"]
    a1 = z1 / (1 + z1.abs())
    a2 = a1 / torch.sqrt((a1**2).sum(dim=1, keepdim=True) + 1e-6)
    a3 = torch.tanh(a2 @ t["W3"].T)
    want = torch.log(torch.cosh(a3 - torch.tensor(Y))).mean()
    want.backward()
    assert rel_error(yhat, a3.detach().numpy())[1] < 1e-14
    assert rel_error(value, float(want.detach()))[1] < 1e-14
    for k in params:
        assert rel_error(grads[k], t[k].grad.numpy())[1] < 1e-12


def test_max_min_activations_verify_in_every_reference():
    """max/min are SymPy Applications, not Functions: every evaluator must take them."""
    import sympy as sp

    from symgrad import Dense, build, x

    clip = sp.Min(1, sp.Max(-1, 2 * x))
    net = build("clip_net", 3, [Dense(4, clip), Dense(2, "sigmoid")], "mse")
    report = verify_network(net, symbolic=True)
    assert report.ok, report.format()
