"""The self-attention block (examples/attention's layers at T = 64, d = 32) for a batch of
n = 32 in float32: the generated NumPy and torch modules' ``loss_and_grads`` side by side
with torch eager autograd, in one run; and the derivation time as T and d grow.

The three are timed in interleaved sweeps (each sweep: the median of ``REPEAT`` calls of
each), so that a burst of load from other processes falls on all three alike; the table
gives every sweep's ratios to torch eager, their median and their spread, and the load
average before and after.

    PYTHONPATH=$PWD python bench/attention.py            # prints Markdown tables
    PYTHONPATH=$PWD python bench/attention.py --sweeps 9
"""

from __future__ import annotations

import os

# one thread for every library in the comparison (torch's is set in main): a BLAS that
# spawns threads per call on a loaded machine measures the contention, not the code
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPEC = """name = "attention"
input = [{T}, {d}]
sizes = {{ T = {T}, d = {d} }}
loss = "cross_entropy"
[[layer]]
type = "map"
indices = ["t", "e"]
shape = ["T", "d"]
expr = "sum(Wq[e, i] * x[t, i], i)"
params = {{ Wq = ["d", "d"] }}
[[layer]]
type = "map"
indices = ["t", "e"]
shape = ["T", "d"]
expr = "sum(Wk[e, i] * x[t, i], i)"
params = {{ Wk = ["d", "d"] }}
[[layer]]
type = "map"
indices = ["t", "e"]
shape = ["T", "d"]
expr = "sum(Wv[e, i] * x[t, i], i)"
params = {{ Wv = ["d", "d"] }}
[[layer]]
type = "map"
indices = ["t", "u"]
shape = ["T", "T"]
expr = "softmax(sum(a1[t, e] * a2[u, e], e) / sqrt(d), u)"
[[layer]]
type = "map"
indices = ["t", "e"]
shape = ["T", "d"]
expr = "sum(a4[t, u] * a3[u, e], u) + x[t, e]"
[[layer]]
type = "map"
expr = "sum(a5[t, i], t) / T"
units = "d"
[[layer]]
units = 2
activation = "softmax"
"""


REPEAT = 10


def timed(fn, repeat: int = REPEAT) -> float:
    fn()
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def torch_eager(P, X, Y):
    import torch

    F = torch.nn.functional
    q, k, v = X @ P["Wq1"].T, X @ P["Wk2"].T, X @ P["Wv3"].T
    s = q @ k.transpose(1, 2) / q.shape[-1] ** 0.5
    o = torch.softmax(s, -1) @ v + X
    loss = F.cross_entropy(o.mean(1) @ P["W7"].T + P["b7"], Y.argmax(1))
    return loss, torch.autograd.grad(loss, list(P.values()))


def main() -> None:
    import torch

    from symgrad.backends.codegen import load_module
    from symgrad.frontend.spec import loads_spec
    from symgrad.pipeline import derive, generate

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sweeps", type=int, default=9, help="interleaved timing sweeps")
    sweeps = ap.parse_args().sweeps
    torch.set_num_threads(1)
    print("| T | d | derive (s) |")
    print("|---|---|---|")
    for T, d in ((8, 8), (64, 32), (128, 64)):
        t = time.perf_counter()
        derive(loads_spec(SPEC.format(T=T, d=d)))
        print(f"| {T} | {d} | {time.perf_counter() - t:.2f} |")
    net = loads_spec(SPEC.format(T=64, d=32))
    mod = load_module(generate(net))
    tmod = load_module(generate(net, target="torch"))
    rng = np.random.default_rng(0)
    P = {k: v.astype(np.float32) for k, v in mod.init_params(0).items()}
    X = rng.normal(size=(32, 64, 32)).astype(np.float32)
    Y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, 32)]
    Pt = {k: torch.tensor(v, requires_grad=True) for k, v in P.items()}
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    Pt_plain = {k: torch.tensor(v) for k, v in P.items()}
    fns = {
        "torch eager autograd": lambda: torch_eager(Pt, Xt, Yt),
        "symgrad numpy": lambda: mod.loss_and_grads(P, X, Y),
        "symgrad torch": lambda: tmod.loss_and_grads(Pt_plain, Xt, Yt),
    }
    load = os.getloadavg()[0]
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(sweeps):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    eager = times["torch eager autograd"]
    print("\n| sweep | torch eager (ms) | symgrad numpy | symgrad torch |")
    print("|---|---|---|---|")
    for r in range(sweeps):
        cells = [
            f"{times[k][r] * 1e3:.2f} ms, {times[k][r] / eager[r]:.2f}x" for k in list(fns)[1:]
        ]
        print(f"| {r + 1} | {eager[r] * 1e3:.2f} | {' | '.join(cells)} |")
    print(
        "\n| loss_and_grads, T=64 d=32 n=32 float32, 1 thread | median ms | / torch eager: "
        "median (min-max over sweeps) |"
    )
    print("|---|---|---|")
    for name, ts in times.items():
        ratios = [t / e for t, e in zip(ts, eager, strict=True)]
        spread = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
        print(f"| {name} | {statistics.median(ts) * 1e3:.2f} | {spread} |")
    print(f"\nload average (1 min): {load:.2f} before, {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
