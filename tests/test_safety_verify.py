"""verify is honest: a module that exits, hangs or returns
garbage is a failure with one line, never exit 0 and never a traceback; correct modules
with zero gradients or sample points near kinks are not false alarms."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from symgrad import Dense, build, x, y_s, yhat_s
from symgrad.budgets import ResourceError
from symgrad.cli import main
from symgrad.frontend.spec import load_spec
from symgrad.verify.verify import (
    _diagnose,
    compare,
    fd_coordinates,
    has_kinks,
    sampled_differences,
    verify_network,
)

ROOT = Path(__file__).resolve().parent.parent
MODULES = Path(__file__).parent / "modules"
SEED_TOML = """\
name = "seed_net"
input = 3
loss = "mse"

[[layer]]
units = 4
activation = "sigmoid"

[[layer]]
units = 2
activation = "sigmoid"
"""
CORRECT = (MODULES / "seed_correct.py").read_text()


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "seed_net.toml"
    path.write_text(SEED_TOML)
    return path


def run(argv: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def module_with(tmp_path: Path, text: str, name: str = "mod.py") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def patched(old: str, new: str) -> str:
    assert old in CORRECT
    return CORRECT.replace(old, new)


LOSS_AND_GRADS = "def loss_and_grads(params, X, Y):\n"

# Each module is wrong in a way that used to pass or crash verify.
FALSE_PASSES = {
    "system-exit-0-in-call": (
        patched(LOSS_AND_GRADS, LOSS_AND_GRADS + "    raise SystemExit(0)\n"),
        "loss_and_grads raised SystemExit(0)",
    ),
    "sys-exit-at-import": ("import sys\nsys.exit(0)\n" + CORRECT, "SystemExit(0)"),
    "os-exit-at-import": ("import os\nos._exit(0)\n" + CORRECT, "ended the module's process"),
    "os-exit-in-call": (
        patched(LOSS_AND_GRADS, LOSS_AND_GRADS + "    import os\n    os._exit(0)\n"),
        "loss_and_grads ended the module's process (exit code 0)",
    ),
    "keyboard-interrupt": (
        patched(LOSS_AND_GRADS, LOSS_AND_GRADS + "    raise KeyboardInterrupt\n"),
        "loss_and_grads raised KeyboardInterrupt",
    ),
    "param-shapes-not-a-dict": (CORRECT + "\nPARAM_SHAPES = 5\n", "PARAM_SHAPES is int 5"),
    "param-names-not-strings": (CORRECT + "\nPARAM_NAMES = (1, 2)\n", "not a tuple of str"),
    "loss-a-string": (
        CORRECT + "\n_lg = loss_and_grads\n"
        "def loss_and_grads(params, X, Y):\n    v, g = _lg(params, X, Y)\n    return 'x', g\n",
        "not a real number",
    ),
    "loss-an-array": (
        CORRECT + "\n_lg = loss_and_grads\n"
        "def loss_and_grads(params, X, Y):\n    v, g = _lg(params, X, Y)\n"
        "    return np.ones(3), g\n",
        "an array of shape (3,)",
    ),
    "loss-complex": (
        CORRECT + "\n_lg = loss_and_grads\n"
        "def loss_and_grads(params, X, Y):\n    v, g = _lg(params, X, Y)\n    return v + 1j, g\n",
        "complex",
    ),
    "returns-a-number": (
        CORRECT + "\ndef loss_and_grads(params, X, Y):\n    return 5\n",
        "expected (loss, grads)",
    ),
    "grads-of-strings": (
        CORRECT + "\n_lg = loss_and_grads\n"
        "def loss_and_grads(params, X, Y):\n    v, g = _lg(params, X, Y)\n"
        "    return v, {k: 'x' for k in g}\n",
        "expected a real array",
    ),
    "loss-fn-returns-garbage": (
        CORRECT + "\ndef loss(params, X, Y):\n    return [1, 2]\n",
        "loss() returned list",
    ),
}


@pytest.mark.parametrize("case", sorted(FALSE_PASSES))
def test_misbehaving_modules_fail_with_one_line(
    case: str, spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, phrase = FALSE_PASSES[case]
    mod = module_with(tmp_path, text)
    code, out, err = run(["verify", spec, "--module", mod, "--against", "fd"], capsys)
    assert code == 1, out + err
    assert err == ""
    last = out.splitlines()[-1]
    assert last.startswith("FAIL: "), out
    assert phrase in out, out


@pytest.mark.parametrize(
    ("where", "text"),
    [
        ("import", "import time\ntime.sleep(1000)\n" + CORRECT),
        (
            "call",
            patched(LOSS_AND_GRADS, LOSS_AND_GRADS + "    import time\n    time.sleep(1000)\n"),
        ),
        ("loop", patched(LOSS_AND_GRADS, LOSS_AND_GRADS + "    while True:\n        pass\n")),
    ],
    ids=["import", "call", "loop"],
)
def test_a_hanging_module_is_a_failure_within_the_time_limit(
    where: str, text: str, spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mod = module_with(tmp_path, text)
    start = time.monotonic()
    code, out, err = run(["verify", spec, "--module", mod, "--timeout", "3"], capsys)
    assert time.monotonic() - start < 30
    # running out of time is a resource failure: one line, exit 2, never a mismatch
    assert code == 2, out + err
    assert out == "" and len(err.splitlines()) == 1
    assert "did not finish within the time limit (3 s)" in err


def test_the_module_process_is_gone_after_a_timeout(spec: Path, tmp_path: Path) -> None:
    mod = module_with(tmp_path, "import time\ntime.sleep(1000)\n" + CORRECT)
    net = load_spec(str(spec))
    with pytest.raises(ResourceError, match="time limit"):
        verify_network(net, module=str(mod), timeout=2)
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False)
    assert str(mod) not in out.stdout


def test_a_correct_module_still_passes_in_its_process(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    noisy = "print('hello from the module')\nimport sys\nprint('to stderr', file=sys.stderr)\n"
    mod = module_with(tmp_path, noisy + CORRECT)
    code, out, err = run(["verify", spec, "--module", mod, "--against", "fd"], capsys)
    assert code == 0, out
    assert "hello" not in out and err == ""


def test_verify_as_a_subprocess_never_tracebacks(spec: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for text, _ in FALSE_PASSES.values():
        mod = module_with(tmp_path, text)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "symgrad",
                "verify",
                str(spec),
                "--module",
                str(mod),
                "--against",
                "fd",
                "--timeout",
                "20",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
        break  # one is enough here: the in-process test covers every case


@pytest.mark.parametrize(
    ("argv", "phrase"),
    [
        (["--timeout", "0"], "--timeout"),
        (["--targets", "complex"], "--targets"),
    ],
)
def test_bad_verify_arguments_are_bad_input(
    argv: list[str], phrase: str, spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["verify", spec, *argv], capsys)
    assert code == 2
    assert err.startswith("symgrad: error: ") and phrase in err and len(err.splitlines()) == 1


# -- no false alarms ------------------------------------------------------------------


ZERO_GRADIENT_NETS = {
    "constant-activation": lambda: build("c", 3, [Dense(2, sp.Integer(3) + 0 * x)], "mse"),
    "width-1-softmax": lambda: build(
        "w1", 3, [Dense(4, "tanh"), Dense(1, "softmax")], "cross_entropy"
    ),
    "vanishing": lambda: build(
        "deep", 2, [Dense(3, "sigmoid") for _ in range(20)] + [Dense(1, "sigmoid")], "bce"
    ),
}


@pytest.mark.parametrize(
    "name",
    [
        "constant-activation",
        "width-1-softmax",
        pytest.param("vanishing", marks=pytest.mark.slow),
    ],
)
def test_exactly_zero_gradients_are_not_alarms(name: str) -> None:
    net = ZERO_GRADIENT_NETS[name]()
    for seed in range(2):
        for dtype in ("float64", "float32"):
            report = verify_network(net, seed=seed, dtype=dtype, against=("fd", "torch"))
            assert report.ok, (name, seed, dtype, report.format())
            assert "sign flipped" not in report.format()


def test_diagnosis_never_hints_for_zero_or_varying_errors() -> None:
    zero = np.zeros((3, 3))
    noise = np.full((3, 3), 1e-14)
    assert _diagnose(noise, zero, 1e-6, floor=1e-12) == ""
    assert _diagnose(-noise, noise, 1e-6, floor=1e-12) == ""  # "sign flipped" noise
    ref = np.arange(1.0, 10.0).reshape(3, 3)
    assert _diagnose(-ref, ref, 1e-6) == "sign flipped"
    assert _diagnose(ref.T, ref, 1e-6) == "transposed"
    assert _diagnose(2 * ref, ref, 1e-6) == "off by a factor 0.5"
    varying = ref * np.linspace(0.5, 2, 9).reshape(3, 3)
    assert _diagnose(varying, ref, 1e-6) == ""


def test_compare_uses_an_absolute_floor() -> None:
    a, rel, ok = compare(np.zeros(3), np.full(3, 1e-14), 1e-6, 1e-11)
    assert ok and a == 1e-14
    assert not compare(np.zeros(3), np.full(3, 1e-9), 1e-6, 1e-11)[2]
    assert compare(np.ones(3), np.ones(3) * (1 + 1e-8), 1e-6, 0.0)[2]


def test_kinks_are_found_in_expressions_not_names() -> None:
    smooth = build("s", 2, [Dense(2, sp.tanh(x))], "mse")
    relu_named = build("r", 2, [Dense(2, sp.tanh(x))], ("relu_loss", (yhat_s - y_s) ** 2))
    custom_max = build("m", 2, [Dense(2, sp.Max(x, 0.1 * x))], "mse")
    abs_loss = build("a", 2, [Dense(2, "tanh")], ("l1", sp.Abs(yhat_s - y_s)))
    builtin = build("b", 2, [Dense(2, "leaky_relu")], "mse")
    assert not has_kinks(smooth) and not has_kinks(relu_named)
    assert has_kinks(custom_max) and has_kinks(abs_loss) and has_kinks(builtin)


@pytest.mark.parametrize("w0", [1e-4, -3e-6, 2e-8, -1e-9])
def test_points_next_to_a_kink_are_not_alarms(w0: float) -> None:
    """|w| sampled right next to its kink: every central step straddles it; a one-sided
    step on the far side does not, and a wrong gradient still disagrees."""
    w = np.array([w0, 0.7])

    def losses(moves):
        out = []
        for _, flat, d in moves:
            v = w.copy()
            v[flat] += d
            out.append(float(np.sum(np.abs(v)) + 1.0))
        return out

    coords = {"w": np.arange(2)}
    right = {"w": np.sign(w)}
    got = sampled_differences(losses, {"w": w}, coords, hint=right, kinks=True)
    g, noise = got["w"]
    assert np.max(np.abs(g - np.sign(w))) <= max(1e-6, float(np.max(noise)))
    wrong = {"w": -np.sign(w)}
    g, noise = sampled_differences(losses, {"w": w}, coords, hint=wrong, kinks=True)["w"]
    assert np.max(np.abs(g + np.sign(w))) > 0.5


def test_relu_nets_verify_over_many_seeds() -> None:
    net = build(
        "r",
        3,
        [Dense(5, "relu"), Dense(5, "leaky_relu"), Dense(4, sp.Max(x, 0.2 * x)), Dense(2)],
        ("l1", sp.Abs(yhat_s - y_s)),
    )
    for seed in range(12):
        report = verify_network(net, seed=seed, batch=5, against=("fd",))
        assert report.ok, report.format()


# -- target domains and bounded work ---------------------------------------------------


def test_custom_log_loss_gets_valid_targets(tmp_path: Path, capsys) -> None:
    text = """\
name = "logloss"
input = 2
loss = { name = "logsq", expr = "(log(yhat) - log(y))**2" }
{targets}
[[layer]]
units = 2
activation = "softplus"
"""
    plain = tmp_path / "plain.toml"
    plain.write_text(text.replace("{targets}", ""))
    code, out, err = run(["verify", plain, "--against", "fd"], capsys)
    # log of a negative target: the loss's domain, bad input (never a mismatch)
    assert code == 2 and out == "" and "not finite" in err and "--targets" in err
    code, out, _ = run(["verify", plain, "--against", "fd", "--targets", "positive"], capsys)
    assert code == 0, out
    marked = tmp_path / "marked.toml"
    marked.write_text(text.replace("{targets}", 'targets = "positive"'))
    assert load_spec(str(marked)).targets == "positive"
    code, out, _ = run(["verify", marked, "--against", "fd,torch"], capsys)
    assert code == 0, out
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("{targets}", 'targets = "imaginary"'))
    code, _, err = run(["verify", bad], capsys)
    assert code == 2 and "targets: unknown target domain" in err


def test_finite_differences_check_a_bounded_sample_of_coordinates() -> None:
    net = build("big", 300, [Dense(200, "tanh"), Dense(3)], "mse")
    coords = fd_coordinates(net, seed=0, limit=32)
    assert {k: len(v) for k, v in coords.items()} == {"W1": 32, "b1": 32, "W2": 32, "b2": 3}
    assert all(len(set(v.tolist())) == len(v) for v in coords.values())
    assert coords["W1"][0] == 0 and coords["W1"][-1] == 200 * 300 - 1
