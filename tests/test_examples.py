"""The examples (examples/digits, examples/custom_layer) and the benchmark's baseline.

- every example: the committed outputs are what the code produces now
  (``examples/regenerate.py --check``); the fast examples, run with their defaults in a
  copy of the checkout, leave ``git status`` clean; a missing optional package is one line
  and exit status 2, before anything is written;
- digits: a shortened training run of ``examples/digits/train.py`` (its ``main``),
  which must lower the loss and write the plot and the generated module;
- custom_layer: the committed generated module still implements the contract, agrees
  with a module freshly generated from the spec and with finite differences;
- bench: the hand-written NumPy baseline agrees with the generated code (so the
  benchmark compares equal work).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from symgrad import Dense, build
from symgrad.backends.codegen import load_module
from symgrad.errors import SpecError
from symgrad.files import MARKER
from symgrad.frontend.spec import load_spec
from symgrad.pipeline import generate

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DIGITS = ROOT / "examples" / "digits"
CUSTOM = ROOT / "examples" / "custom_layer"
BENCH = ROOT / "bench"


def _import_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- every example


def test_committed_outputs_are_what_the_code_produces_now():
    regenerate = _import_file(EXAMPLES / "regenerate.py", "examples_regenerate")
    differences = regenerate.differences()
    assert not differences, (
        "committed example outputs are out of date; run python examples/regenerate.py:\n"
        + "\n\n".join(differences)
    )


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    ("command", "needs", "written"),
    [
        (["sh", "examples/scalar/make.sh"], (), "scalar/graph.dot"),
        pytest.param(["sh", "examples/seed_net/make.sh"], (), "seed_net/page.html", marks=SLOW),
        pytest.param(
            ["sh", "examples/custom_layer/make.sh"], (), "custom_layer/derivation.md", marks=SLOW
        ),
        pytest.param(
            ["python", "examples/digits/train.py", "--epochs", "1"],
            ("sklearn", "matplotlib"),
            "digits/training.png",
            marks=SLOW,
        ),
        pytest.param(
            ["python", "examples/digits_cnn/train.py", "--epochs", "1"],
            ("sklearn", "matplotlib"),
            "digits_cnn/training.png",
            marks=SLOW,
        ),
    ],
    ids=["scalar", "seed_net", "custom_layer", "digits", "digits_cnn"],
)
def test_examples_leave_the_checkout_clean(tmp_path, command, needs, written):
    """Run with its defaults from the root of a fresh copy of the checkout, an example writes
    into symgrad-output/ (which git ignores) and nothing else."""
    from docs_checkout import checkout_copy, environment, porcelain

    for module in needs:
        pytest.importorskip(module)
    repo = checkout_copy(tmp_path / "checkout")
    env = environment(repo, tmp_path / "bin")
    proc = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, (command, proc.stderr[-2000:])
    assert "\r" not in proc.stderr  # no progress-bar frames when stderr is not a terminal
    assert porcelain(repo) == ""
    assert (repo / "symgrad-output" / written).is_file()


@pytest.mark.parametrize(
    ("script", "blocked", "install"),
    [
        ("digits/train.py", "sklearn", "scikit-learn"),
        ("digits_cnn/train.py", "matplotlib", "matplotlib"),
        ("ddp/train_ddp.py", "torch", "torch"),
    ],
)
def test_a_missing_optional_package_is_one_line_and_exit_2(tmp_path, script, blocked, install):
    run = (
        f"import sys, runpy; sys.modules[{blocked!r}] = None; sys.argv = ['x', '--out', 'o'];"
        f"runpy.run_path({str(EXAMPLES / script)!r}, run_name='__main__')"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", run], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and install in lines[0] and "pip install" in lines[0], lines
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_the_progress_bar_stays_off_a_pipe(capsys):
    sys.path.insert(0, str(EXAMPLES))
    try:
        from _training import progress
    finally:
        sys.path.remove(str(EXAMPLES))
    assert list(progress([1, 2, 3], "epoch 1")) == [1, 2, 3]
    assert capsys.readouterr().err == ""  # pytest's stderr is not a terminal


# --------------------------------------------------------------------------- digits


def test_digits_spec_loads():
    net = load_spec(str(DIGITS / "digits.toml"))
    assert net.loss.name == "cross_entropy"
    assert [p.name for p in net.params] == ["W1", "b1", "W2", "b2"]


def test_digits_training_shortened(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    train = _import_file(DIGITS / "train.py", "digits_train")
    result = train.main(["--epochs", "2", "--out", str(tmp_path), "--seed", "0", "--no-progress"])
    history = result["history"]
    assert len(history["train_loss"]) == 3  # before training, then one per epoch
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history["test_loss"][-1] < history["test_loss"][0]
    assert all(np.isfinite(history["train_loss"]))
    assert result["test_acc"] > 0.8  # about 0.95 after two epochs
    png = tmp_path / "training.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    module = tmp_path / "digits_net.py"
    assert MARKER in module.read_text(encoding="utf-8")
    assert "def step(" in module.read_text(encoding="utf-8")  # trained with its own Adam step


def test_digits_refuses_to_clobber_a_foreign_file(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    train = _import_file(DIGITS / "train.py", "digits_train")
    mine = tmp_path / "digits_net.py"
    mine.write_text("# my own file\n", encoding="utf-8")
    with pytest.raises(SpecError):
        train.main(["--epochs", "1", "--out", str(tmp_path), "--no-progress"])
    assert mine.read_text(encoding="utf-8") == "# my own file\n"


# --------------------------------------------------------------------------- custom_layer


@pytest.fixture(scope="module")
def custom_modules():
    committed = _import_file(CUSTOM / "custom_layer_net.py", "custom_layer_net_committed")
    fresh = load_module(generate(load_spec(str(CUSTOM / "custom_layer.toml"))), "fresh")
    return committed, fresh


def _data(rng, n=9):
    X = rng.normal(size=(n, 4))
    Y = np.eye(3)[rng.integers(0, 3, size=n)]
    return X, Y


def test_custom_layer_committed_module_is_generated_and_complete(custom_modules):
    committed, fresh = custom_modules
    head = (CUSTOM / "custom_layer_net.py").read_text(encoding="utf-8").splitlines()[:5]
    assert any(MARKER in line for line in head)
    assert committed.PARAM_NAMES == fresh.PARAM_NAMES == ("W1", "b1", "W3", "b3")
    assert committed.PARAM_SHAPES == fresh.PARAM_SHAPES
    for name in ("init_params", "forward", "loss", "loss_and_grads"):
        assert callable(getattr(committed, name))


def test_custom_layer_committed_module_matches_fresh_generation(custom_modules):
    committed, fresh = custom_modules
    rng = np.random.default_rng(0)
    params = committed.init_params(seed=1)
    X, Y = _data(rng)
    v1, g1 = committed.loss_and_grads(params, X, Y)
    v2, g2 = fresh.loss_and_grads(params, X, Y)
    assert v1 == pytest.approx(v2, rel=1e-12)
    for k in committed.PARAM_NAMES:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-10, atol=1e-14)


def test_custom_layer_gradients_match_finite_differences(custom_modules):
    committed, _ = custom_modules
    rng = np.random.default_rng(2)
    params = committed.init_params(seed=3)
    X, Y = _data(rng)
    _, grads = committed.loss_and_grads(params, X, Y)
    h = 1e-6
    for k in committed.PARAM_NAMES:
        fd = np.zeros_like(params[k])
        for idx in np.ndindex(params[k].shape):
            orig = params[k][idx]
            params[k][idx] = orig + h
            up = committed.loss(params, X, Y)
            params[k][idx] = orig - h
            down = committed.loss(params, X, Y)
            params[k][idx] = orig
            fd[idx] = (up - down) / (2 * h)
        np.testing.assert_allclose(grads[k], fd, rtol=1e-6, atol=1e-8, err_msg=k)


def test_custom_layer_float32_and_large_inputs(custom_modules):
    committed, _ = custom_modules
    rng = np.random.default_rng(4)
    X, Y = _data(rng)
    p32 = committed.init_params(seed=0, dtype=np.float32)
    value, grads = committed.loss_and_grads(p32, X.astype(np.float32) * 1e3, Y)
    assert np.isfinite(value)
    for k, g in grads.items():
        assert g.dtype == np.float32 and np.all(np.isfinite(g)), k


# --------------------------------------------------------------------------- bench baseline


@pytest.mark.parametrize(
    ("acts", "loss"),
    [
        (("sigmoid", "sigmoid", "softmax"), "cross_entropy"),
        (("tanh", "tanh", "sigmoid"), "bce"),
        (("tanh", "sigmoid"), "mse"),
    ],
)
@pytest.mark.parametrize("n", [1, 5])
def test_bench_handwritten_baseline_agrees_with_generated(acts, loss, n, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("handwritten", None)
    from handwritten import make_loss_and_grads

    widths = (6, 5, 4)[-len(acts) :]
    net = build("bench_check", 7, [Dense(w, f) for w, f in zip(widths, acts, strict=True)], loss)
    mod = load_module(generate(net))
    hand = make_loss_and_grads(acts, loss)
    rng = np.random.default_rng(n)
    for dtype, rtol in ((np.float64, 1e-10), (np.float32, 1e-4)):
        params = mod.init_params(seed=5, dtype=dtype)
        X = rng.normal(size=(n, 7)).astype(dtype)
        if loss == "cross_entropy":
            Y = np.eye(widths[-1], dtype=dtype)[rng.integers(0, widths[-1], size=n)]
        else:
            Y = rng.uniform(size=(n, widths[-1])).astype(dtype)
        v_gen, g_gen = mod.loss_and_grads(params, X, Y)
        v_hand, g_hand = hand(params, X, Y)
        assert v_hand == pytest.approx(v_gen, rel=rtol)
        assert set(g_hand) == set(mod.PARAM_NAMES)
        for k in mod.PARAM_NAMES:
            assert g_hand[k].dtype == dtype
            np.testing.assert_allclose(g_hand[k], g_gen[k], rtol=rtol, atol=rtol * 1e-3, err_msg=k)
