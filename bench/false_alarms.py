"""False alarms of ``symgrad verify``: how often does it fail a CORRECT module?

Every network of the test catalogue (``tests/catalogue.py``) plus the cases that used to
raise false alarms (exactly-zero gradients: a dead-ish relu net, a width-1 softmax, a
20-layer vanishing sigmoid net; kinks: relu, leaky_relu, a custom max, an L1 loss) is
generated once with symgrad and verified at many random points: seeds x batch sizes x
dtypes (float64 and float32), against finite differences and PyTorch (when installed).
symgrad's generated code is correct (the test suite checks it independently), so every
failing run is a false alarm; the goal is 0.

    python bench/false_alarms.py                 # >= 2000 runs (several minutes)
    python bench/false_alarms.py --runs 200      # a quick look
    python bench/false_alarms.py --against fd    # finite differences only

Prints one line per network and the total (runs, false alarms, time); every false
alarm's report line is printed in full.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import sympy as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from catalogue import catalogue  # noqa: E402

from symgrad import Dense, build, x, y_s, yhat_s  # noqa: E402
from symgrad.backends.codegen import load_module  # noqa: E402
from symgrad.pipeline import generate  # noqa: E402
from symgrad.verify.verify import (  # noqa: E402
    ModuleError,
    VerifyReport,
    _Local,
    _verify_module,
)


def networks() -> dict[str, object]:
    """The catalogue plus the nets that used to raise false alarms."""
    nets = dict(catalogue())
    nets["relu_kinks"] = build(
        "relu_kinks",
        3,
        [Dense(6, "relu"), Dense(5, "leaky_relu"), Dense(4, sp.Max(x, 0.2 * x)), Dense(2)],
        ("l1", sp.Abs(yhat_s - y_s)),
    )
    nets["width1_softmax"] = build(
        "width1_softmax", 3, [Dense(4, "tanh"), Dense(1, "softmax")], "cross_entropy"
    )
    nets["vanishing20"] = build(
        "vanishing20", 2, [Dense(3, "sigmoid") for _ in range(20)] + [Dense(1, "sigmoid")], "bce"
    )
    nets["dead_relu"] = build(
        "dead_relu", 2, [Dense(3, sp.Max(x - 2, 0)), Dense(2, "relu"), Dense(1)], "mse"
    )
    return nets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000, help="at least this many runs in all")
    ap.add_argument("--against", default="fd,torch", help="references (default: fd,torch)")
    args = ap.parse_args(argv)
    against = tuple(a for a in args.against.split(",") if a)
    nets = networks()
    batches = (1, 4, 7)
    dtypes = ("float64", "float32")
    per_seed = len(nets) * len(batches) * len(dtypes)
    seeds = max(1, math.ceil(args.runs / per_seed))
    total = alarms = 0
    start = time.perf_counter()
    print(f"{len(nets)} networks x {seeds} seeds x batches {batches} x {dtypes}, vs {against}")
    for name, net in nets.items():
        mod = _Local(load_module(generate(net), f"false_alarms_{name}"))
        t0 = time.perf_counter()
        runs = bad = 0
        for seed in range(seeds):
            for batch in batches:
                for dtype in dtypes:
                    report = VerifyReport(net.name, "<generated>", dtype, seed, batch)
                    try:
                        _verify_module(mod, net, report, dtype, against, seed, batch, None, 32)
                    except ModuleError as exc:
                        report.check("module", False, str(exc))
                    runs += 1
                    if not report.ok:
                        bad += 1
                        print(f"  FALSE ALARM {name} seed={seed} batch={batch} {dtype}:")
                        for line in report.failures():
                            print(f"    {line}")
        total += runs
        alarms += bad
        print(f"{name:>16}: {runs} runs, {bad} false alarms ({time.perf_counter() - t0:.1f} s)")
    elapsed = time.perf_counter() - start
    print(
        f"TOTAL: {total} runs, {alarms} false alarms ({100 * alarms / total:.2f}%), {elapsed:.0f} s"
    )
    return 1 if alarms else 0


if __name__ == "__main__":
    raise SystemExit(main())
