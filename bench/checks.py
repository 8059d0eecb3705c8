"""The generated NumPy module, argument checks on, against the hand-written NumPy.

    python bench/checks.py                 # every case, writes bench/checks-results.md
    python bench/checks.py --repeats 41    # more blocks per case (steadier on a busy machine)
    python bench/checks.py --only mlp      # one net; --out FOLDER to write elsewhere

Times are CPU seconds of this process (``time.process_time``), not wall-clock seconds:
on a machine shared with other work, waiting for a core is not counted, so the ratio
compares the work each implementation does. BLAS runs on one thread (``OPENBLAS_NUM_THREADS``
and ``OMP_NUM_THREADS`` default to 1 here) so that its CPU time is that of the call; pass
``--wall`` to time wall-clock seconds instead.

The nets and the baseline are those of ``bench/run.py`` (784-256-256-10 sigmoid/softmax
with cross-entropy at n = 1, 32, 256, 4096; 10 x 64 tanh with bce at n = 32), in float32
and float64. The generated module is called as a user calls it: every argument checked
(shapes, dtypes, keys, one-hot targets), finiteness diagnosed when the result is not
finite. Both are timed round-robin in blocks of about ``--block-ms`` on the same arrays,
with the garbage collector off inside a round (one collection before each round); the
cases up to n = 256, whose calls are short, get ``--small-factor`` times as many blocks.
The ratio is the median time of the generated module over the median time of the
hand-written one (below 1: faster).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads its BLAS

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
for p in (str(HERE.parent), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from handwritten import make_loss_and_grads  # noqa: E402
from run import DEEP, MLP, Case, check_agreement, make_data  # noqa: E402

from symgrad.backends.codegen import load_module  # noqa: E402
from symgrad.pipeline import generate  # noqa: E402

PLAN: tuple[tuple[Case, int], ...] = (
    (MLP, 1),
    (MLP, 32),
    (MLP, 256),
    (MLP, 4096),
    (DEEP, 32),
)


CLOCK = time.process_time


def _block(fn: Callable, args: tuple, inner: int) -> float:
    t0 = CLOCK()
    for _ in range(inner):
        fn(*args)
    return (CLOCK() - t0) / inner


def measure(impls: dict[str, Callable], args: tuple, repeats: int, block_s: float):
    """Per implementation, the seconds per call of each block (blocks alternate)."""
    inner = {}
    for name, fn in impls.items():
        for _ in range(3):
            fn(*args)
        one = min(_block(fn, args, 1) for _ in range(3))
        inner[name] = max(1, int(block_s / max(one, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in impls}
    order = list(impls.items())
    try:
        for r in range(repeats):
            # one collection per round (a full collection takes longer than a block here)
            gc.collect()
            gc.disable()
            for name, fn in order if r % 2 == 0 else order[::-1]:
                samples[name].append(_block(fn, args, inner[name]))
            gc.enable()
    finally:
        gc.enable()
    return samples


def fmt(s: float) -> str:
    return f"{s * 1e6:.1f} µs" if s < 1e-3 else f"{s * 1e3:.2f} ms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=31, help="blocks per case (default 31)")
    ap.add_argument("--block-ms", type=float, default=10.0, help="block length (default 10)")
    ap.add_argument(
        "--small-factor",
        type=int,
        default=4,
        help="blocks at n <= 256: this many times --repeats (default 4)",
    )
    ap.add_argument("--only", choices=("mlp", "deep"), default=None)
    ap.add_argument("--out", type=Path, default=HERE, help="folder for checks-results.md")
    ap.add_argument("--wall", action="store_true", help="wall-clock time, not CPU time")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.perf_counter if args.wall else time.process_time
    started = time.perf_counter()
    load = os.getloadavg()
    rows = []
    for case in (MLP, DEEP):
        if args.only and case.key != args.only:
            continue
        module = load_module(generate(case.network()), f"bench_checks_{case.key}")
        hand = make_loss_and_grads(case.activations, case.loss)
        impls = {"symgrad": module.loss_and_grads, "hand": hand}
        for dtype in (np.float32, np.float64):
            params = module.init_params(seed=0, dtype=dtype)
            check_agreement(case, impls | {"numpy (hand)": hand}, params, dtype)
            for c, n in PLAN:
                if c is not case:
                    continue
                X, Y = make_data(case, n, dtype, seed=1)
                # a call at n <= 256 is short: many more blocks for the same minutes
                reps = args.repeats * args.small_factor if n <= 256 else args.repeats
                s = measure(impls, (params, X, Y), reps, args.block_ms / 1e3)
                med = {k: statistics.median(v) for k, v in s.items()}
                lo = {k: min(v) for k, v in s.items()}
                row = (case.key, np.dtype(dtype).name, n, med, lo)
                rows.append(row)
                print(
                    f"[{time.perf_counter() - started:5.1f} s] {case.key} {row[1]} n={n}: "
                    f"symgrad {fmt(med['symgrad'])}, hand {fmt(med['hand'])}, "
                    f"ratio {med['symgrad'] / med['hand']:.3f} "
                    f"(min {lo['symgrad'] / lo['hand']:.3f})",
                    file=sys.stderr,
                    flush=True,
                )
    seconds = time.perf_counter() - started
    md = [
        "# Argument checks: the generated NumPy module against hand-written NumPy",
        "",
        f"Produced by `{' '.join(['python bench/checks.py', *(argv or sys.argv[1:])])}` on "
        f"{time.strftime('%Y-%m-%d %H:%M')} in {seconds:.0f} s; numpy {np.__version__}, "
        f"{'wall-clock' if args.wall else 'CPU'} time, BLAS threads "
        f"{os.environ.get('OPENBLAS_NUM_THREADS', 'default')}, "
        f"{os.cpu_count()} CPUs; load average {load[0]:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end.",
        "",
        "ratio = median time of the generated module (argument checks on) / median time of "
        "the hand-written NumPy; at most 1.00 means no slower. Min ratio: the same from the "
        "fastest block of each.",
        "",
        "| net | dtype | n | symgrad | hand-written | ratio | min ratio |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key, dname, n, med, lo in rows:
        md.append(
            f"| {key} | {dname} | {n} | {fmt(med['symgrad'])} | {fmt(med['hand'])} | "
            f"{med['symgrad'] / med['hand']:.3f} | {lo['symgrad'] / lo['hand']:.3f} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "checks-results.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
