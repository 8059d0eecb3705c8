"""Former runaway inputs: each must now be done, or refused with one line, within 10 s and
1 GB (wall time and peak resident memory of the whole command, imports included).

Each case runs one ``symgrad`` command line (or a Python API script) in a fresh process,
as a user would, with a hard timeout, and records the wall time, the peak memory
(``ru_maxrss`` of the process and its children), the exit code and the first line of its
error output. A case passes when it finished within both bounds and its exit code is the
expected one (0 done, 2 refused); a traceback is never a pass. On a machine shared with
other jobs the wall time stretches: the time bound is then judged on the CPU time (the
process and its children), and both are recorded.

    python bench/runaway.py                  # every case (about two minutes)
    python bench/runaway.py --only pad,dense
    python bench/runaway.py --markdown       # the table of bench/runaway-results.md
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: The bounds every case must meet.
MAX_SECONDS = 10.0
MAX_BYTES = 1 << 30
#: A case still running after this long is killed (and fails).
HARD_TIMEOUT = 60.0


def _product(count: int) -> str:
    return "*".join(f"(x+{k})" for k in range(count))


def _custom_activation(expr: str) -> str:
    return f"""name = "runaway"
input = 3
loss = "mse"

[[layer]]
units = 4
activation = {{ name = "f", expr = "{expr}" }}

[[layer]]
units = 2
"""


def _max_terms(terms: int, args: int) -> str:
    one = lambda k: "max(" + ", ".join(f"{j + 1}*x - {j + k}" for j in range(args)) + ")"  # noqa: E731
    return " + ".join(one(k) for k in range(terms))


CONV_PADDING = """name = "pad"
input = [1, 8, 8]
loss = "mse"

[[layer]]
type = "conv2d"
channels = 2
kernel = 3
padding = 1000000

[[layer]]
type = "flatten"

[[layer]]
units = 2
"""

HUGE_INPUT = """import symgrad as S
from symgrad.ir.conv import Flatten
net = S.build("huge", [1000000, 1000000, 1000000], [Flatten(), S.Dense(2)], "mse")
"""

DENSE_1E6 = """name = "wide"
input = 1000000
loss = "mse"

[[layer]]
units = 1000000
activation = "tanh"

[[layer]]
units = 2
"""

MAP_PARAM = """import sympy as sp
import symgrad as S
from symgrad import Map, a, i
g = sp.IndexedBase("g")
layer = Map(a[0] * g[i, 0, 0], units=3000, params={g: (3000, 3000, 3000)})
net = S.build("big_map", 3, [layer], "mse")
"""

CONV_512 = """name = "conv512"
input = [512, 64, 64]
loss = "mse"

[[layer]]
type = "conv2d"
channels = 4
kernel = 3
activation = "relu"

[[layer]]
type = "maxpool2d"
kernel = 2

[[layer]]
type = "flatten"

[[layer]]
units = 2
"""


@dataclass(frozen=True)
class Case:
    key: str
    what: str
    files: dict[str, str]
    argv: list[str]
    expect: int  # the exit code: 0 done, 2 refused


def cases() -> list[Case]:
    sym = "symgrad"
    return [
        Case(
            "product30",
            "codegen, activation (x+0)*(x+1)*...*(x+29) (within the budget)",
            {"spec.toml": _custom_activation(_product(30))},
            [sym, "codegen", "spec.toml", "-o", "out.py"],
            0,
        ),
        Case(
            "max2",
            "codegen, activation of 2 max() terms of 6 arguments (within the budget)",
            {"spec.toml": _custom_activation(_max_terms(2, 6))},
            [sym, "codegen", "spec.toml", "-o", "out.py"],
            0,
        ),
        Case(
            "product",
            "codegen, activation (x+0)*(x+1)*...*(x+149) (900 tokens)",
            {"spec.toml": _custom_activation(_product(150))},
            [sym, "codegen", "spec.toml", "-o", "out.py"],
            2,
        ),
        Case(
            "max20",
            "codegen, activation of 20 max() terms of 6 arguments",
            {"spec.toml": _custom_activation(_max_terms(20, 6))},
            [sym, "codegen", "spec.toml", "-o", "out.py"],
            2,
        ),
        Case(
            "pad",
            "codegen, conv padding = 1000000",
            {"spec.toml": CONV_PADDING},
            [sym, "codegen", "spec.toml", "-o", "out.py"],
            2,
        ),
        Case(
            "input",
            "codegen, Python API input [1e6, 1e6, 1e6]",
            {"nets.py": HUGE_INPUT},
            [sym, "codegen", "nets.py:net", "-o", "out.py"],
            2,
        ),
        Case(
            "dense",
            "verify, a 1e6 x 1e6 dense net",
            {"spec.toml": DENSE_1E6},
            [sym, "verify", "spec.toml"],
            2,
        ),
        Case(
            "mapparam",
            "verify, Python API map parameter [3000, 3000, 3000]",
            {"nets.py": MAP_PARAM},
            [sym, "verify", "nets.py:net"],
            2,
        ),
        Case(
            "conv512",
            "verify, a [512, 64, 64] conv net",
            {"spec.toml": CONV_512},
            [sym, "verify", "spec.toml"],
            2,
        ),
        Case(
            "conv512b1",
            "verify, a [512, 64, 64] conv net, --batch 1 --timeout 3 --against fd",
            {"spec.toml": CONV_512},
            [sym, "verify", "spec.toml", "--batch", "1", "--timeout", "3", "--against", "fd"],
            2,
        ),
    ]


@dataclass
class Result:
    case: Case
    seconds: float
    cpu: float
    peak_bytes: int
    code: int | None
    first_line: str

    @property
    def ok(self) -> bool:
        return (
            self.code == self.case.expect
            and min(self.seconds, self.cpu) <= MAX_SECONDS
            and self.peak_bytes <= MAX_BYTES
            and "Traceback" not in self.first_line
        )


def run(case: Case) -> Result:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="symgrad-runaway-") as tmp:
        for name, text in case.files.items():
            (Path(tmp) / name).write_text(text)
        argv = [sys.executable, "-m", "symgrad", *case.argv[1:]]
        start = time.monotonic()
        proc = subprocess.Popen(
            argv, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            _, err = proc.communicate(timeout=HARD_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        seconds = time.monotonic() - start
    import resource

    # ru_maxrss of the largest child so far (KiB on Linux): run cases one per process
    # (--only) for a per-case figure; in one run it is a running maximum.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = usage.ru_maxrss * 1024
    cpu = usage.ru_utime + usage.ru_stime
    first = (err or "").strip().splitlines()
    errors = [x for x in first if x.startswith("symgrad: error")]
    line = errors[0] if errors else (first[0] if first else "")
    if any("Traceback" in x for x in first):
        line = "Traceback: " + (first[-1] if first else "")
    return Result(case, seconds, cpu, peak, proc.returncode, line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated case keys")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    chosen = [c for c in cases() if not args.only or c.key in args.only.split(",")]
    if args.child:  # one case, in its own process: its peak memory is its own
        (case,) = [c for c in cases() if c.key == args.child]
        r = run(case)
        print(f"{r.seconds:.2f}\t{r.cpu:.2f}\t{r.peak_bytes}\t{r.code}\t{r.first_line}")
        return 0
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    rows = []
    for case in chosen:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", case.key],
            capture_output=True,
            text=True,
            timeout=HARD_TIMEOUT + 30,
            check=False,
        )
        parts = (proc.stdout.strip().split("\t", 4) + [""] * 5)[:5]
        secs, cpu, peak, code, line = parts
        r = Result(
            case,
            float(secs or "nan"),
            float(cpu or "nan"),
            int(peak or 0),
            int(code) if code else None,
            line,
        )
        rows.append(r)
        verdict = "ok" if r.ok else "FAIL"
        print(
            f"{case.key:9} {r.seconds:6.2f} s (cpu {r.cpu:5.2f} s) {r.peak_bytes / 2**20:5.0f} MiB "
            f"exit {r.code} "
            f"{verdict}: {line[:110]}",
            flush=True,
        )
    if args.markdown:
        print("\n| case | wall time | CPU time | peak memory | exit | result |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            shown = r.first_line.replace("|", "\\|")[:140] or "done"
            print(
                f"| {r.case.what} | {r.seconds:.1f} s | {r.cpu:.1f} s | "
                f"{r.peak_bytes / 2**20:.0f} MiB | {r.code} | {'ok' if r.ok else 'FAIL'}: {shown} |"
            )
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
