"""verify is not fooled by state or batch size, and leaves no process behind.

Each wicked module below is right at one batch of one size, or on its first call(s), and
wrong elsewhere: verify must fail it. The process modules start ``sleep`` programs (plain,
in a new session, on every call) or fork at import: whatever verify's verdict, every
process they started must be gone when it returns.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from symgrad.cli import main
from symgrad.frontend.spec import load_spec
from symgrad.verify.calls import choose_batches, widths
from symgrad.verify.verify import verify_network

SPEC = """\
name = "four_in"
input = 4
loss = "mse"

[[layer]]
units = 3
activation = "tanh"

[[layer]]
units = 2
"""

# A correct hand-written module for SPEC; ``N`` is the batch size.
CORRECT = """\
import numpy as np

PARAM_NAMES = ("W1", "b1", "W2", "b2")
PARAM_SHAPES = {"W1": (3, 4), "b1": (3,), "W2": (2, 3), "b2": (2,)}
CALLS = [0]


def init_params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0.0, 0.5, s).astype(dtype) for k, s in PARAM_SHAPES.items()}


def batch_size(X):
    return X.shape[0]


def _forward(params, X):
    a1 = np.tanh(X @ params["W1"].T + params["b1"])
    return a1, a1 @ params["W2"].T + params["b2"]


def forward(params, X):
    return _forward(params, X)[1]


def loss(params, X, Y):
    return float(np.sum((forward(params, X) - Y) ** 2) / (batch_size(X) * Y.shape[1]))


def _loss_and_grads(params, X, Y):
    a1, a2 = _forward(params, X)
    N = batch_size(X)
    value = float(np.sum((a2 - Y) ** 2) / (N * Y.shape[1]))
    delta2 = 2 * (a2 - Y) / (N * Y.shape[1])
    delta1 = (delta2 @ params["W2"]) * (1 - a1**2)
    grads = {
        "W1": delta1.T @ X,
        "b1": delta1.sum(axis=0),
        "W2": delta2.T @ a1,
        "b2": delta2.sum(axis=0),
    }
    return value, grads


def loss_and_grads(params, X, Y):
    CALLS[0] += 1
    return _loss_and_grads(params, X, Y)
"""


def _wrong_after(calls: int) -> str:
    return CORRECT + (
        "\n\n_right = loss_and_grads\n\n\n"
        "def loss_and_grads(params, X, Y):\n"
        "    value, grads = _right(params, X, Y)\n"
        f"    if CALLS[0] > {calls}:\n"
        "        grads = {k: 1.5 * v for k, v in grads.items()}\n"
        "    return value, grads\n"
    )


WICKED = {
    # the classic slip: the batch size read from the feature axis (4 inputs)
    "batch-from-the-feature-axis": CORRECT.replace("return X.shape[0]", "return X.shape[1]"),
    "divides-by-4": CORRECT.replace("return X.shape[0]", "return 4"),
    "caches-its-first-result": CORRECT
    + (
        "\n\n_CACHE = []\n\n\ndef loss_and_grads(params, X, Y):\n"
        "    if not _CACHE:\n        _CACHE.append(_loss_and_grads(params, X, Y))\n"
        "    return _CACHE[0]\n"
    ),
    "wrong-after-1-call": _wrong_after(1),
    "wrong-after-3-calls": _wrong_after(3),
}


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "four_in.toml"
    path.write_text(SPEC)
    return path


def _module(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mod.py"
    path.write_text(text)
    return path


def test_the_correct_module_passes(spec: Path, tmp_path: Path) -> None:
    report = verify_network(load_spec(str(spec)), module=str(_module(tmp_path, CORRECT)))
    assert report.ok, report.format()
    # at least three calls of loss_and_grads on batches of different sizes, and a repeat
    assert len(report.calls) == 3, report.calls
    sizes = {report.batch, *(int(c.split()[1]) for c in report.calls)}
    assert len(sizes) == 3
    assert not sizes & {4, 3, 2}  # no width of the network
    assert "again (repeat)" in report.calls[-1]


@pytest.mark.parametrize("case", sorted(WICKED))
def test_wicked_modules_fail(
    case: str, spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mod = _module(tmp_path, WICKED[case])
    code = main(["verify", str(spec), "--module", str(mod)])
    out = capsys.readouterr().out
    assert code == 1, out
    assert out.splitlines()[-1].startswith("FAIL: "), out


def test_the_batch_from_the_feature_axis_fails_even_at_batch_4(spec: Path, tmp_path: Path) -> None:
    """A batch equal to the input width hides the slip at the first call; the other
    batches do not."""
    mod = _module(tmp_path, WICKED["batch-from-the-feature-axis"])
    report = verify_network(load_spec(str(spec)), module=str(mod), batch=4)
    assert not report.ok
    assert "batch of" in report.failures()[0]


def test_batches_avoid_every_width() -> None:
    net = load_spec_text(SPEC)
    assert widths(net) == {4, 3, 2}
    first, extra = choose_batches(net, None, coupled=False)
    assert first == 5 and len(extra) == 2 and not {first, *extra} & {2, 3, 4}
    assert len({first, *extra}) == 3
    first, extra = choose_batches(net, 4, coupled=False)
    assert first == 4 and 4 not in extra


def load_spec_text(text: str):
    from symgrad.frontend.spec import loads_spec

    return loads_spec(text)


# -- processes ----------------------------------------------------------------------------

_SPAWN = """
import os, subprocess
def _spawn(new_session=False):
    p = subprocess.Popen(["sleep", "300"], start_new_session=new_session,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open({pids!r}, "a") as fh:
        fh.write(f"{{p.pid}}\\n")
"""

_FORK = """
import os, time
_pid = os.fork()
if _pid == 0:
    os.setsid()
    time.sleep(300)
    os._exit(0)
with open({pids!r}, "a") as fh:
    fh.write(f"{{_pid}}\\n")
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent's reaping does not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _process_module(case: str, pids: Path) -> str:
    if case == "fork-at-import":
        return _FORK.format(pids=str(pids)) + CORRECT
    head = _SPAWN.format(pids=str(pids))
    if case == "sleep-per-call":
        return (
            head + CORRECT + "\n_right = loss_and_grads\n\ndef loss_and_grads(params, X, Y):\n"
            "    _spawn()\n    return _right(params, X, Y)\n"
        )
    return head + f"_spawn(new_session={case == 'sleep-new-session'})\n" + CORRECT


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(
    "case", ["sleep-plain", "sleep-new-session", "sleep-per-call", "fork-at-import"]
)
def test_no_process_survives_verify(case: str, spec: Path, tmp_path: Path) -> None:
    pids = tmp_path / "pids.txt"
    mod = _module(tmp_path, _process_module(case, pids))
    report = verify_network(load_spec(str(spec)), module=str(mod), against=("fd", "torch"))
    started = [int(p) for p in pids.read_text().split()]
    assert started, "the module started no process"
    if case == "sleep-per-call":
        assert len(started) >= 3
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [p for p in started if _alive(p)]
    for p in survivors:  # never leave them to the next test
        os.kill(p, 9)
    assert not survivors, f"{case}: {len(survivors)} of {len(started)} processes survived"
    assert report.ok or report.failures(), report.format()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_no_process_survives_a_failed_verify(spec: Path, tmp_path: Path) -> None:
    pids = tmp_path / "pids.txt"
    text = _process_module("sleep-new-session", pids).replace(
        "return X.shape[0]", "return X.shape[1]"
    )
    report = verify_network(load_spec(str(spec)), module=str(_module(tmp_path, text)))
    assert not report.ok
    started = [int(p) for p in pids.read_text().split()]
    time.sleep(0.2)
    assert not [p for p in started if _alive(p)]
