"""The C target against the NumPy module, hand-written NumPy and torch eager, in one run.

For each case (network, batch size n) it generates the C code (``--target c``, float64),
times ``net_loss_and_grads`` from C (a small timing harness compiled with
``-O3 -march=native``, and again with ``-DNET_USE_CBLAS`` linked to OpenBLAS when a CBLAS
is installed) and through ``symgrad.load_c`` (ctypes), and, in the same process, the
NumPy module, the hand-written NumPy of ``bench/handwritten.py`` and torch eager
(autograd). Every implementation's loss and gradients are checked against the NumPy
module first. Times are medians of per-call times (µs); ratios are time / time of the
hand-written NumPy (< 1: faster).

    PYTHONPATH=. python bench/c_target.py [--quick] [--out bench/c_target-results.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# One thread per library (the C code is single-threaded; the machine has 2 shared cores):
# set before NumPy and torch load their BLAS. --threads default leaves them alone.
if "--threads" not in sys.argv:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from handwritten import make_loss_and_grads  # noqa: E402

from symgrad import Dense, build  # noqa: E402
from symgrad.backends.c_emit import generate_c  # noqa: E402
from symgrad.backends.c_loader import compiler, load_c  # noqa: E402
from symgrad.backends.codegen import load_module  # noqa: E402
from symgrad.backends.emit import generate  # noqa: E402
from symgrad.pipeline import derive  # noqa: E402

#: (key, description, input width, layers as (units, activation), loss)
NETS = {
    "seed": ("seed network 3-4-2 sigmoid, mse", 3, [(4, "sigmoid"), (2, "sigmoid")], "mse"),
    "deep": ("10 x 64 tanh (sigmoid out), bce", 64, [(64, "tanh")] * 9 + [(64, "sigmoid")], "bce"),
    "mlp": (
        "784-256-256-10 sigmoid/softmax, cross-entropy",
        784,
        [(256, "sigmoid"), (256, "sigmoid"), (10, "softmax")],
        "cross_entropy",
    ),
}
SWEEPS = 5
CASES = [("seed", 1), ("seed", 32), ("deep", 32), ("mlp", 32), ("mlp", 256)]

HARNESS = r"""
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "net.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    size_t n = (size_t)atol(argv[1]), reps = (size_t)atol(argv[2]), inner = 1, k, r;
    double times[1000], sink = 0;
    net_real *p = malloc(sizeof(net_real) * NET_PARAM_COUNT);
    net_real *g = malloc(sizeof(net_real) * NET_PARAM_COUNT);
    net_real *X = malloc(sizeof(net_real) * n * NET_INPUT_SIZE);
    net_real *Y = malloc(sizeof(net_real) * n * NET_OUTPUT_SIZE);
    net_real *w = malloc(sizeof(net_real) * NET_WORKSPACE_LEN(n));
    (void)argc;
    net_init_params(p, 1);
    for (k = 0; k < n * NET_INPUT_SIZE; ++k) X[k] = (net_real)((double)(k % 13) / 6.0 - 1.0);
    for (k = 0; k < n * NET_OUTPUT_SIZE; ++k) Y[k] = (net_real)(1.0 / NET_OUTPUT_SIZE);
    /* calls per timed repetition: at least 200 us of work */
    for (;;) {
        double t0 = now();
        for (k = 0; k < inner; ++k) sink += net_loss_and_grads(p, X, Y, n, g, w);
        if (now() - t0 > 2e-4) break;
        inner *= 2;
    }
    if (reps > 1000) reps = 1000;
    for (r = 0; r < reps; ++r) {
        double t0 = now();
        for (k = 0; k < inner; ++k) sink += net_loss_and_grads(p, X, Y, n, g, w);
        times[r] = (now() - t0) / (double)inner;
    }
    qsort(times, reps, sizeof(double), cmp);
    printf("%.6g %g\n", times[reps / 2] * 1e6, sink);
    return 0;
}
"""


def network(key: str):
    _, width, layers, loss = NETS[key]
    return build(key, width, [Dense(u, f) for u, f in layers], loss)


def median_us(fn: Callable[[], object], budget: float) -> float:
    """Median per-call time (µs) of ``fn``, over repetitions of enough calls to last ~1 ms."""
    fn()
    inner = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        if time.perf_counter() - t0 > 1e-3:
            break
        inner *= 2
    times = []
    stop = time.perf_counter() + budget
    while time.perf_counter() < stop or len(times) < 5:
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times) * 1e6


def cblas_flags() -> tuple[list[str], list[str]] | None:
    """Flags to build with OpenBLAS's CBLAS, if it links."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "t.c"
        src.write_text("#include <cblas.h>\nint main(void){return cblas_ddot(0,0,1,0,1)!=0;}\n")
        res = subprocess.run(
            [compiler() or "cc", str(src), "-o", str(Path(tmp) / "t"), "-lopenblas"],
            capture_output=True,
            check=False,
        )
    return (["-DNET_USE_CBLAS"], ["-lopenblas"]) if res.returncode == 0 else None


def build_c(folder: Path, extra: list[str], libs: list[str]) -> Path:
    exe = folder / ("bench_cblas" if extra else "bench")
    (folder / "harness.c").write_text(HARNESS)
    cmd = [compiler() or "cc", "-std=c99", "-O3", "-march=native", *extra, "net.c", "harness.c"]
    subprocess.run([*cmd, "-o", str(exe), *libs, "-lm"], cwd=folder, check=True)
    return exe


def time_in_c(exe: Path, n: int, reps: int) -> float:
    out = subprocess.run([str(exe), str(n), str(reps)], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[0])


def torch_eager(key: str, params: dict, X: np.ndarray, Y: np.ndarray) -> Callable[[], object]:
    import torch
    import torch.nn.functional as F  # noqa: N812

    if os.environ.get("OMP_NUM_THREADS") == "1":
        torch.set_num_threads(1)

    _, _, layers, loss = NETS[key]
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    acts = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}

    def run():
        for t in tp.values():
            t.grad = None
        a = Xt
        for k, (_, f) in enumerate(layers, start=1):
            a = F.linear(a, tp[f"W{k}"], tp[f"b{k}"])
            if k < len(layers) or loss == "mse":
                a = acts[f](a)
        if loss == "mse":
            value = 0.5 * ((a - Yt) ** 2).sum(dim=1).mean()
        elif loss == "bce":
            value = F.binary_cross_entropy_with_logits(a, Yt)
        else:
            value = F.cross_entropy(a, Yt)
        value.backward()
        return value.item()

    return run


def point(net, key: str, n: int):
    rng = np.random.default_rng(1)
    params = {p.name: rng.uniform(-0.5, 0.5, net.shape(p)) for p in net.params}
    X = rng.normal(size=(n, net.size(net.input_width)))
    out = net.size(net.output_width)
    if NETS[key][3] == "cross_entropy":
        Y = np.eye(out)[rng.integers(0, out, n)]
    else:
        Y = rng.uniform(0.0, 1.0, (n, out))
    return params, X, Y


def run_case(key: str, n: int, budget: float, reps: int, cblas) -> dict:
    net = network(key)
    d = derive(net)
    mod = load_module(generate(d))
    _, _, layers, loss = NETS[key]
    hand = make_loss_and_grads([f for _, f in layers], loss)
    params, X, Y = point(net, key, n)
    ref_loss, ref = mod.loss_and_grads(params, X, Y)
    row: dict = {"case": f"{NETS[key][0]}, n = {n}", "key": key, "n": n}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        code, header = generate_c(d, prefix="net")
        (folder / "net.c").write_text(code)
        (folder / "net.h").write_text(header)
        cmod = load_c(folder / "net.c", cflags=("-O3", "-march=native"))
        row["workspace"] = int(cmod._ws_len(n))
        impls: dict[str, Callable[[], object]] = {
            "NumPy module": lambda: mod.loss_and_grads(params, X, Y),
            "hand-written NumPy": lambda: hand(params, X, Y),
            "C via load_c": lambda: cmod.loss_and_grads(params, X, Y),
        }
        for name in ("hand-written NumPy", "C via load_c"):
            value, grads = impls[name]()
            assert abs(value - ref_loss) <= 1e-9 * max(1.0, abs(ref_loss)), name
            for k, g in ref.items():
                assert np.allclose(grads[k], g, rtol=1e-8, atol=1e-12), (name, k)
        try:
            impls["torch eager"] = torch_eager(key, params, X, Y)
            got = impls["torch eager"]()
            assert abs(float(got) - ref_loss) <= 1e-9 * max(1.0, abs(ref_loss))
        except ImportError:
            pass
        exes = {"C": build_c(folder, [], [])}
        if cblas is not None:
            exes["C + CBLAS"] = build_c(folder, *cblas)
        # Sweeps, each timing every implementation once: the machine's load changes
        # between sweeps, and each ratio is taken within one sweep.
        samples: dict[str, list[float]] = {}
        for _ in range(SWEEPS):
            times = {name: median_us(fn, budget / SWEEPS) for name, fn in impls.items()}
            times |= {name: time_in_c(exe, n, reps) for name, exe in exes.items()}
            for name, t in times.items():
                samples.setdefault(name, []).append(t)
                ratio = t / times["hand-written NumPy"]
                samples.setdefault("ratio " + name, []).append(ratio)
        row |= {name: statistics.median(v) for name, v in samples.items()}
    return row


COLUMNS = ("C", "C + CBLAS", "C via load_c", "NumPy module", "hand-written NumPy", "torch eager")


def table(rows: list[dict]) -> list[str]:
    head = "| case | " + " | ".join(COLUMNS) + " | workspace |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for r in rows:
        cells = []
        for c in COLUMNS:
            if c in r:
                cells.append(f"{r[c]:.3g} µs ({r['ratio ' + c]:.3g}x)")
            else:
                cells.append("-")
        kib = r["workspace"] * 8 / 1024
        lines.append(
            f"| {r['case']} | " + " | ".join(cells) + f" | {r['workspace']} ({kib:.1f} KiB) |"
        )
    return lines


def goals(rows: list[dict]) -> list[str]:
    by = {(r["key"], r["n"]): r for r in rows}
    out = []
    if ("seed", 1) in by:
        r = by["seed", 1]
        out.append(
            f"- seed network, n = 1: NumPy module / C = "
            f"{r['ratio NumPy module'] / r['ratio C']:.0f}x "
            "(goal: at least 20x)"
        )
    for key, n, what, goal in (
        ("deep", 32, "10 x 64 tanh", " (goal: at most 0.5)"),
        ("mlp", 32, "784-256-256-10", " (goal: at most 0.9)"),
        ("mlp", 256, "784-256-256-10", ""),
    ):
        if (key, n) in by:
            r = by[key, n]
            parts = [f"{c} {r['ratio ' + c]:.2f}" for c in ("C", "C + CBLAS") if c in r]
            out.append(f"- {what}, n = {n}: time / hand-written NumPy: {', '.join(parts)}{goal}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter timings")
    ap.add_argument("--out", type=Path, default=None, help="also write the table here")
    ap.add_argument("--threads", choices=("default",), help="leave BLAS threads at default")
    args = ap.parse_args(argv)
    if compiler() is None:
        print("no C compiler (cc): nothing to time")
        return 0
    budget, reps = (0.5, 7) if args.quick else (1.5, 15)
    cblas = cblas_flags()
    rows = [run_case(key, n, budget, reps, cblas) for key, n in CASES]
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    lines = [
        "# The C target: timings",
        "",
        f"`PYTHONPATH=. python bench/c_target.py`, {platform.machine()} "
        f"({os.cpu_count()} CPUs, shared), Python {platform.python_version()}, "
        f"NumPy {np.__version__}, float64, BLAS threads: {threads}. Median time per "
        "`loss_and_grads` call (loss and every gradient); in brackets the ratio to the "
        "hand-written NumPy in the same sweep (< 1: faster; the median over "
        f"{SWEEPS} sweeps, each timing every implementation once). C: timed in C "
        "(`-O3 -march=native`); C + CBLAS: the same with `-DNET_USE_CBLAS` and OpenBLAS; "
        "C via load_c: the same C called from Python through ctypes (with its argument "
        "checks). Workspace: "
        "`NET_WORKSPACE_LEN(n)` numbers (8 bytes each).",
        "",
        *table(rows),
        "",
        *goals(rows),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
