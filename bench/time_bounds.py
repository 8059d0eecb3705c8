"""Bounded time on hostile or extreme input: each command must finish within its bound (10 s
for the compiler cases, 30 s for verifying the 784-256-256-10 MLP against PyTorch) or be
refused up front with one line.

Each case runs the command line in a fresh process (as a user would, imports included),
with a hard timeout of 5x its bound, and prints the wall time, the exit code and the
verdict. Timings depend on the machine: record the machine with the numbers.

    python bench/time_bounds.py            # every case (about a minute)
    python bench/time_bounds.py --only tanh20,max6
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _custom(name: str, expr: str) -> str:
    return f"""name = "{name}"
input = 3
loss = "mse"

[[layer]]
units = 4
activation = {{ name = "{name}_act", expr = "{expr}" }}

[[layer]]
units = 2
activation = "tanh"
"""


def _layers(count: int) -> str:
    head = 'name = "deep"\ninput = 2\nloss = "mse"\n'
    return head + '\n[[layer]]\nunits = 2\nactivation = "tanh"\n' * count


def _nested(depth: int) -> str:
    e = "x"
    for _ in range(depth):
        e = f"tanh({e})"
    return e


def _max(count: int) -> str:
    return _custom("m", "max(" + ", ".join(f"{k + 1}*x - {k}" for k in range(count)) + ")")


MLP = """name = "mlp"
input = 784
loss = "cross_entropy"

[[layer]]
units = 256
activation = "relu"

[[layer]]
units = 256
activation = "relu"

[[layer]]
units = 10
activation = "softmax"
"""

PY_5000 = """from symgrad import Dense, build
net = build("deep", 2, [Dense(2, "tanh") for _ in range(5000)], "mse")
"""


def cases(folder: Path) -> list[tuple[str, list[str], float, tuple[int, ...]]]:
    """(name, argv after 'python -m symgrad', bound in seconds, accepted exit codes)."""

    def spec(name: str, text: str) -> str:
        path = folder / f"{name}.toml"
        path.write_text(text)
        return str(path)

    (folder / "py5000.py").write_text(PY_5000)
    out = str(folder / "out.py")
    return [
        (
            "tanh20",
            ["codegen", spec("tanh20", _custom("t", _nested(20))), "-o", out, "--force"],
            10,
            (0,),
        ),
        ("max6", ["codegen", spec("max6", _max(6)), "-o", out, "--force"], 10, (0,)),
        ("max8-refused", ["codegen", spec("max8", _max(8)), "-o", out, "--force"], 10, (2,)),
        ("layers100-derive", ["derive", spec("l100", _layers(100)), "--form", "matrix"], 10, (0,)),
        (
            "layers100-codegen",
            ["codegen", spec("l100", _layers(100)), "-o", out, "--force"],
            10,
            (0,),
        ),
        (
            "layers1000-refused",
            ["codegen", spec("l1000", _layers(1000)), "-o", out, "--force"],
            10,
            (2,),
        ),
        ("python-api-5000-refused", ["derive", str(folder / "py5000.py") + ":net"], 10, (2,)),
        (
            "check-tanh15",
            [
                "check",
                spec("tanh15", _custom("t", _nested(15))),
                "--grad",
                "W1",
                "--formula",
                "delta1 x^T",
            ],
            10,
            (0, 1),
        ),
        ("verify-mlp-torch", ["verify", spec("mlp", MLP), "--against", "fd,torch"], 30, (0,)),
        ("verify-mlp-fd", ["verify", spec("mlp", MLP), "--against", "fd"], 60, (0,)),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated case names")
    args = ap.parse_args(argv)
    only = {c for c in args.only.split(",") if c}
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, argv_, bound, codes in cases(Path(tmp)):
            if only and name not in only:
                continue
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(
                    [sys.executable, "-m", "symgrad", *argv_],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=5 * bound,
                    check=False,
                )
                code, err = proc.returncode, proc.stderr.strip().splitlines()
            except subprocess.TimeoutExpired:
                code, err = None, ["killed after 5x the bound"]
            wall = time.perf_counter() - t0
            ok = code in codes and wall <= bound and not any("Traceback" in e for e in err)
            failed += not ok
            note = err[-1][:90] if err and code != 0 else ""
            print(
                f"{name:>24}: {wall:6.1f} s (bound {bound:.0f} s), exit {code} "
                f"{'ok' if ok else 'OVER/FAILED'}{'  ' + note if note else ''}",
                flush=True,
            )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
