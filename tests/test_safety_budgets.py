"""Budgets: sizes refused before anything is allocated, symbolic work bounded, resource
failures as one line with exit code 2 (never a gradient mismatch), a loss not finite at the
drawn targets named as such, all-or-nothing files, Ctrl-C while importing.

The wall-time figures of the former runaway inputs are in ``bench/runaway.py`` (a
benchmark, not a timed test); here each is checked for its verdict and its message.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sympy as sp

import symgrad as S
from symgrad import budgets
from symgrad.budgets import BudgetError, ResourceError
from symgrad.cli import main
from symgrad.errors import SpecError
from symgrad.frontend.spec import loads_spec
from symgrad.ir.conv import Flatten
from symgrad.verify.verify import verify_network

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from runaway import CONV_PADDING, DENSE_1E6, _custom_activation, _max_terms, _product  # noqa: E402

SEED = """\
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


def run(argv: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_error(err: str, *phrases: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("symgrad: error: "), err
    for p in phrases:
        assert p in lines[0], err


# -- sizes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit", "value"),
    [
        (CONV_PADDING, "MAX_WIDTH", "8,000,048,000,072"),
        (DENSE_1E6, "MAX_PARAMETERS", "1,000,000,000,000"),
    ],
    ids=["conv-padding", "dense-1e6"],
)
def test_oversized_specs_are_refused_naming_limit_and_value(
    text: str, limit: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    start = time.monotonic()
    code, out, err = run(["verify", spec], capsys)
    assert time.monotonic() - start < 10
    assert code == 2 and out == ""
    one_error(err, limit, value)


def test_python_api_sizes_are_refused_before_allocation() -> None:
    with pytest.raises(BudgetError, match=r"MAX_WIDTH.*|1,000,000,000,000,000,000"):
        S.build("huge", [10**6, 10**6, 10**6], [Flatten(), S.Dense(2)], "mse")
    g = sp.IndexedBase("g")
    layer = S.Map(S.a[0] * g[S.i, 0, 0], units=3000, params={g: (3000, 3000, 3000)})
    with pytest.raises(ValueError, match="27,000,000,000 elements.*MAX_PARAMETERS"):
        S.build("big_map", 3, [layer], "mse")


def test_verify_memory_is_estimated_before_allocating() -> None:
    net = loads_spec(SEED.replace("units = 4", "units = 1000000", 1))
    with pytest.raises(BudgetError, match="MAX_VERIFY_BYTES"):
        verify_network(net, batch=64)


def test_a_memory_error_in_the_module_is_a_resource_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "seed.toml"
    spec.write_text(SEED)
    mod = tmp_path / "mod.py"
    mod.write_text(
        (ROOT / "tests/modules/seed_correct.py").read_text()
        + "\n\ndef init_params(seed=0, dtype=None):\n    raise MemoryError('58.2 TiB')\n"
    )
    code, out, err = run(["verify", spec, "--module", mod], capsys)
    assert code == 2 and out == ""
    one_error(err, "MemoryError")


def test_generated_code_honours_the_time_limit() -> None:
    net = loads_spec(SEED)
    with pytest.raises(ResourceError, match="time limit"):
        verify_network(net, timeout=1e-3)


# -- symbolic work ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "limit"),
    [(_product(150), "MAX_DERIVATIVE_NODES"), (_max_terms(20, 6), "MAX_KINK_ARGUMENTS")],
    ids=["product-150", "max-20x6"],
)
def test_runaway_expressions_are_refused_up_front(expr: str, limit: str) -> None:
    start = time.monotonic()
    with pytest.raises(SpecError, match=limit):
        loads_spec(_custom_activation(expr))
    assert time.monotonic() - start < 10


def test_expressions_within_the_budget_are_accepted() -> None:
    net = loads_spec(_custom_activation(_product(20)))
    assert budgets.derivative_nodes(net.stages[1].body) <= budgets.MAX_DERIVATIVE_NODES
    loads_spec(_custom_activation(_max_terms(2, 6)))


def test_symbolic_work_past_its_budget_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import symgrad.cli as cli

    monkeypatch.setattr(cli, "SYMBOLIC_SECONDS", 0.001)
    spec = tmp_path / "seed.toml"
    spec.write_text(SEED)
    code, out, err = run(["codegen", spec, "-o", tmp_path / "m.py"], capsys)
    assert code == 2
    one_error(err, "gave up", "SYMBOLIC_SECONDS")
    assert not (tmp_path / "m.py").exists()


# -- the loss's domain -----------------------------------------------------------------------

LOG_LOSS = """\
name = "dom"
input = 3
loss = { name = "lg", expr = "(yhat - log(1 + y))**2" }

[[layer]]
units = 2
activation = "tanh"
"""


def test_a_loss_not_finite_at_the_drawn_targets_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    spec = tmp_path / "dom.toml"
    spec.write_text(LOG_LOSS)
    code, out, err = run(["verify", spec], capsys)
    assert code == 2 and out == ""
    one_error(err, "'lg'", "Y ~ N(0, 1)", "--targets", "targets =")
    assert "Warning" not in err
    code, out, err = run(["verify", spec, "--against", "fd"], capsys)  # no autograd row asked
    assert code == 2 and out == ""
    one_error(err, "Y ~ N(0, 1)")
    code, out, _ = run(["verify", spec, "--targets", "positive"], capsys)
    assert code == 0, out
    spec.write_text(LOG_LOSS.replace('name = "dom"', 'name = "dom"\ntargets = "unit"'))
    assert run(["verify", spec], capsys)[0] == 0


# -- all or nothing ---------------------------------------------------------------------------


def test_derive_leaves_no_partial_graph_on_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import symgrad.cli as cli

    def full_disk(dot: str, path: str, fmt: str, force: bool) -> bool:
        raise SpecError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(cli, "_render_graph", full_disk)
    spec = tmp_path / "seed.toml"
    spec.write_text(SEED)
    doc, graph = tmp_path / "d.md", tmp_path / "g.svg"
    code, _, err = run(["derive", spec, "--to", "markdown", "-o", doc, "--graph", graph], capsys)
    assert code == 2
    one_error(err, "No space left")
    assert sorted(os.listdir(tmp_path)) == ["seed.toml"]  # no .md, no .dot, no temporary


def test_derive_puts_replaced_files_back_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import symgrad.cli as cli

    spec = tmp_path / "seed.toml"
    spec.write_text(SEED)
    doc, graph = tmp_path / "d.md", tmp_path / "g.svg"
    argv = ["derive", spec, "--to", "markdown", "-o", doc, "--graph", graph]
    monkeypatch.setattr(cli, "_render_graph", lambda *a: False)  # no Graphviz
    assert run(argv, capsys)[0] == 0
    before = {p: p.read_bytes() for p in (doc, tmp_path / "g.dot")}

    def full_disk(dot: str, path: str, fmt: str, force: bool) -> bool:
        raise SpecError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(cli, "_render_graph", full_disk)
    spec.write_text(SEED.replace("units = 4", "units = 5"))
    assert run(argv, capsys)[0] == 2
    assert {p: p.read_bytes() for p in before} == before


# -- Ctrl-C while importing ------------------------------------------------------------------


def _sigint_as_at_a_terminal() -> None:
    """In the child: SIGINT's default action, as a command started at a terminal has it.

    A test run started in the background by a non-interactive shell (``cmd &``) ignores
    SIGINT, and a child inherits that: Python then installs no KeyboardInterrupt handler
    and an interrupt would test nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("delay", [0.05, 0.3, 0.8])
def test_ctrl_c_while_importing_is_one_line(delay: float, tmp_path: Path) -> None:
    """SIGINT once the interpreter has started (a ``sitecustomize`` marks that moment),
    while symgrad's imports run: exit 130, one line, no traceback."""
    site = tmp_path / "site"
    site.mkdir()
    marker = tmp_path / "started"
    (site / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    spec = tmp_path / "seed.toml"
    spec.write_text(SEED)
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "symgrad", "verify", str(spec)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_as_at_a_terminal,  # noqa: PLW1509 - no threads here
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    if proc.returncode == 0:
        pytest.skip("the command finished before the interrupt")
    assert err == "symgrad: interrupted\n", err
    # Known race: an interrupt in the first ~0.1 s on a loaded machine has been seen to end
    # the process by the signal after the one line was printed; later ones always exit 130.
    assert proc.returncode == 130 or (delay < 0.1 and proc.returncode == -signal.SIGINT), err


# -- Ctrl-C while a framework computes a reference ---------------------------------------------

_QUIETLY = """\
import os, signal, sys, time
import symgrad.interrupts as interrupts
interrupts.is_command = lambda: {command}
with interrupts.quietly():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(30)
print("the block went on")
"""


def _run_script(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(text)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_sigint_as_at_a_terminal,  # noqa: PLW1509 - no threads here
    )


def test_ctrl_c_in_a_quiet_block_of_the_command_is_one_line(tmp_path: Path) -> None:
    """Inside ``quietly()`` the command ends at once: one line, exit 130, the block cut."""
    done = _run_script(tmp_path, _QUIETLY.format(command=True))
    assert (done.returncode, done.stderr, done.stdout) == (130, "symgrad: interrupted\n", "")


def test_quiet_block_leaves_a_library_process_alone(tmp_path: Path) -> None:
    """Outside the command the block changes nothing: Python's KeyboardInterrupt."""
    done = _run_script(tmp_path, _QUIETLY.format(command=False))
    assert done.returncode != 130 and "KeyboardInterrupt" in done.stderr, done.stderr
    assert "the block went on" not in done.stdout


_REFERENCE = """\
import signal
import numpy as np
import symgrad.interrupts as interrupts
import symgrad.verify.reference as reference
from symgrad.frontend.spec import loads_spec
interrupts.is_command = lambda: True
seen = []
reference.backend = lambda name: seen.append(signal.getsignal(signal.SIGINT)) or None
net = loads_spec('''{spec}''')
reference.reference_loss_and_grads("torch", net, {{}}, np.zeros((2, 3)), np.zeros((2, 2)))
print(seen == [interrupts._interrupted])
print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
"""


def test_framework_references_run_in_a_quiet_block(tmp_path: Path) -> None:
    """A KeyboardInterrupt inside PyTorch's or JAX's C++ code can abort the process
    (``terminate called ...``): their reference is computed inside ``quietly()``, and the
    handler is Python's again afterwards."""
    done = _run_script(tmp_path, _REFERENCE.format(spec=SEED))
    assert done.stdout.split() == ["True", "True"], done.stderr
