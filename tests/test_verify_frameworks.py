"""``verify --module`` on a generated torch or JAX module: the module is called in its own
library's arrays (float64 and float32), checked like a NumPy module, and a wrong gradient
in it is still found."""

from __future__ import annotations

import pytest

from symgrad import Dense, build
from symgrad.cli import main
from symgrad.pipeline import generate
from symgrad.verify.verify import verify_network

SEED = build("seed_net", 3, [Dense(4, "sigmoid"), Dense(2, "sigmoid")], "mse")


def _module(tmp_path, target: str, edit=None) -> str:
    code = generate(SEED, target=target)
    if edit is not None:
        code = edit(code)
    path = tmp_path / f"seed_{target}.py"
    path.write_text(code)
    return str(path)


@pytest.mark.parametrize("target", ["torch", "jax"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_generated_framework_module_verifies(tmp_path, target, dtype):
    pytest.importorskip(target)
    report = verify_network(SEED, module=_module(tmp_path, target), dtype=dtype, against=("fd",))
    assert report.ok, report.format()
    assert {r.name for r in report.rows} >= {"W1", "b1", "W2", "b2"}


def test_a_wrong_gradient_in_a_torch_module_is_found(tmp_path):
    pytest.importorskip("torch")

    def flip(code: str) -> str:  # the loss's weight gradient of layer 2, sign flipped
        old = "return (dx, None, dW1, db1, dW2, db2)"
        assert code.count(old) == 1
        return code.replace(old, "return (dx, None, dW1, db1, -dW2, db2)")

    report = verify_network(SEED, module=_module(tmp_path, "torch", flip), against=("fd",))
    assert not report.ok
    assert {r.name for r in report.rows if not r.ok} == {"W2"}


def test_the_command_line_verifies_a_torch_module(tmp_path, capsys):
    pytest.importorskip("torch")
    spec = tmp_path / "seed.toml"
    spec.write_text(
        'name = "seed_net"\ninput = 3\nloss = "mse"\n\n[[layer]]\nunits = 4\n'
        'activation = "sigmoid"\n\n[[layer]]\nunits = 2\nactivation = "sigmoid"\n'
    )
    rc = main(["verify", str(spec), "--module", _module(tmp_path, "torch"), "--against", "fd"])
    assert rc == 0, capsys.readouterr()
    assert capsys.readouterr().out.splitlines()[-1].startswith("OK: ")
