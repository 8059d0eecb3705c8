"""How long the derivation of the new layers takes as networks grow.

    python bench/layers_scaling.py           # writes bench/layers_results.md
    python bench/layers_scaling.py --quick   # fewer sizes and repeats, prints only

Networks of residual blocks (dense -> map ``g * a + a<l-2>``, a DAG), layernorm,
rmsnorm, a pairwise term and a max reduction, at widths 4 to 4096 and depths 1 to 32
blocks. Each time is the median of ``repeats`` fresh derivations (chain rule + matrix-form
pass; SymPy's cache and symgrad's per-stage memo cleared first), so it is what a new
process pays. Widths are symbols in the derivation, so the time must not depend on
them; the per-stage memo makes it grow linearly with depth. The last column is the
time per block, which stays flat when the growth is linear.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import sympy as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from symgrad import Dense, LayerNorm, Map, RMSNorm, a, build, i, j, n  # noqa: E402
from symgrad.calculus import reverse  # noqa: E402
from symgrad.calculus.matrix_form import matrix_pass, to_matrix  # noqa: E402
from symgrad.ir.reductions import ReduceMax  # noqa: E402

GAIN = sp.IndexedBase("g", real=True)
PAIRWISE = a[i] * sp.Sum((a[j] - a[i]) ** 2, (j, 0, n - 1)) / n
MAXSHIFT = a[i] - ReduceMax(a[j], j, n - 1)


def blocks(kind: str, depth: int, width: int):
    """``depth`` blocks of one kind on an input of ``width`` features."""
    layers: list = []
    for b in range(depth):
        layers.append(Dense(width, "tanh"))
        if kind == "residual":  # reads the previous block's output too: a skip connection
            skip = sp.IndexedBase(f"a{2 * b}" if b else "x", real=True)
            layers.append(Map(GAIN[i] * a[i] + skip[i], name="res", params={GAIN: (n,)}))
        elif kind == "layernorm":
            layers.append(LayerNorm())
        elif kind == "rmsnorm":
            layers.append(RMSNorm())
        elif kind == "pairwise":
            layers.append(Map(PAIRWISE, name="pairwise"))
        elif kind == "maxshift":
            layers.append(Map(MAXSHIFT, name="maxshift"))
    layers.append(Dense(2))
    return build(f"{kind}{depth}", width, layers, "mse")


def time_derive(net, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        sp.core.cache.clear_cache()
        reverse._CACHE.clear()
        to_matrix.cache_clear()
        t0 = time.perf_counter()
        matrix_pass(reverse.reverse_accumulate(net))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    repeats = 1 if args.quick else 3
    widths = (4, 4096) if args.quick else (4, 64, 4096)
    depths = (1, 4) if args.quick else (1, 4, 16, 32)
    kinds = ("residual", "layernorm", "rmsnorm", "pairwise", "maxshift")
    lines = [
        "# Derivation time of the new layers (bench/layers_scaling.py)",
        "",
        f"Median seconds of a fresh derivation (chain rule + matrix form), {repeats} repeat(s).",
        "",
        "| network | blocks | width | derive (s) | per block (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind in kinds:
        for depth in depths:
            for width in widths if depth == depths[0] else widths[:1]:
                t = time_derive(blocks(kind, depth, width), repeats)
                row = f"| {kind} | {depth} | {width} | {t:.3f} | {t / depth:.3f} |"
                print(row, flush=True)
                lines.append(row)
    if not args.quick:
        (HERE / "layers_results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
