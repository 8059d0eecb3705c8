"""examples/digits_cnn: a shortened training run of its train.py, and its spec."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from symgrad.frontend.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "digits_cnn"


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_digits_cnn_spec_is_the_documented_network():
    net = load_spec(str(EXAMPLE / "digits_cnn.toml"))
    assert net.input_shape == (1, 8, 8)
    assert net.param_names == ("W1", "b1", "W4", "b4")
    assert {p.name: net.shape(p) for p in net.params}["W1"] == (16, 1, 3, 3)


def test_digits_cnn_training_shortened(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    train = _import(EXAMPLE / "train.py", "digits_cnn_train")
    result = train.main(["--epochs", "2", "--out", str(tmp_path), "--no-progress"])
    # two epochs already learn most of it (the full run reaches >= 97%)
    assert result["test_acc"] >= 0.85
    assert result["history"]["train_loss"][-1] < result["history"]["train_loss"][0]
    assert (tmp_path / "training.png").stat().st_size > 0
    assert "def step(" in (tmp_path / "digits_cnn.py").read_text()  # its own Adam step
