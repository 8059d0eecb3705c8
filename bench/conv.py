"""symgrad's conv benchmark: a generated conv net against PyTorch eager and hand-written NumPy.

    python bench/conv.py            # writes bench/conv-results.md
    python bench/conv.py --quick    # fewer repeats, into a temporary folder

The network: 8x8x1 -> conv 3x3, 16 channels,
relu -> maxpool 2 -> flatten -> dense 10, softmax + cross-entropy. One call of
``loss_and_grads`` = forward, loss, backward and every gradient out, at n = 1, 32 and 256,
all implementations timed round-robin in one process on the same arrays (``run.measure``):

- ``symgrad``: the module generated from the spec below;
- ``numpy (hand)``: a careful hand-written NumPy version (channels-last im2col as one
  matrix product, pooling by reshape, the baseline of every ratio);
- ``torch eager``: ``torch.nn.functional`` with autograd (same dtype, default threads).

Before timing, every implementation's loss and gradients are checked against the
hand-written NumPy (the benchmark stops if they disagree).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from run import environment, fmt_time, measure  # noqa: E402

from symgrad.backends.codegen import load_module  # noqa: E402
from symgrad.frontend.spec import loads_spec  # noqa: E402
from symgrad.pipeline import generate  # noqa: E402

SPEC = """
name = "bench_cnn"
input = [1, 8, 8]
loss = "cross_entropy"

[[layer]]
type = "conv2d"
channels = 16
kernel = 3
activation = "relu"

[[layer]]
type = "maxpool2d"
kernel = 2

[[layer]]
type = "flatten"

[[layer]]
units = 10
activation = "softmax"
"""
BASELINE = "numpy (hand)"
SIZES = (1, 32, 256)
TOL = {np.float64: {"rtol": 1e-9}, np.float32: {"rtol": 2e-3}}


def handwritten() -> Callable:
    """Careful hand-written NumPy for exactly this network (no generality)."""
    from numpy.lib.stride_tricks import sliding_window_view

    def loss_and_grads(params, X, Y):
        W1, b1, W4, b4 = params["W1"], params["b1"], params["W4"], params["b4"]
        n = X.shape[0]
        # im2col: (n, 6, 6, 9) windows of the single input channel, one matrix product
        cols = sliding_window_view(X[:, 0], (3, 3), axis=(1, 2)).reshape(n * 36, 9)
        z1 = cols @ W1.reshape(16, 9).T  # (n*36, 16), channels last
        z1 += b1
        a1 = np.maximum(z1, 0)
        # 2x2 max pooling by reshape (non-overlapping windows)
        win = a1.reshape(n, 3, 2, 3, 2, 16)
        a2 = win.max(axis=(2, 4))  # (n, 3, 3, 16)
        flat = a2.transpose(0, 3, 1, 2).reshape(n, 144)  # torch's (c, h, w) order
        z4 = flat @ W4.T
        z4 += b4
        z4 -= z4.max(axis=1, keepdims=True)
        e = np.exp(z4)
        s = e.sum(axis=1, keepdims=True)
        value = float(-np.sum(Y * (z4 - np.log(s)))) / n
        delta4 = (e / s - Y) / n
        dW4 = delta4.T @ flat
        db4 = delta4.sum(axis=0)
        da2 = (delta4 @ W4).reshape(n, 16, 3, 3).transpose(0, 2, 3, 1)  # (n, 3, 3, 16)
        # the gradient goes to the first maximum of each window (as torch)
        flatwin = win.transpose(0, 1, 3, 5, 2, 4).reshape(n, 3, 3, 16, 4)
        hit = flatwin.argmax(axis=-1)[..., None] == np.arange(4)
        da1 = (da2[..., None] * hit).reshape(n, 3, 3, 16, 2, 2).transpose(0, 1, 4, 2, 5, 3)
        delta1 = da1.reshape(n * 36, 16) * (z1 > 0)
        dW1 = (delta1.T @ cols).reshape(16, 1, 3, 3)
        db1 = delta1.sum(axis=0)
        return value, {"W1": dW1, "b1": db1, "W4": dW4, "b4": db4}

    return loss_and_grads


def torch_impl(params: dict[str, np.ndarray]) -> Callable | None:
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    ts = {k: torch.from_numpy(v.copy()).requires_grad_(True) for k, v in params.items()}

    def loss_and_grads(_params, X, Y):
        Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
        a = F.max_pool2d(torch.relu(F.conv2d(Xt, ts["W1"], ts["b1"])), 2)
        value = F.cross_entropy(F.linear(a.flatten(1), ts["W4"], ts["b4"]), Yt)
        for t in ts.values():
            t.grad = None
        value.backward()
        return value.item(), {k: t.grad.numpy() for k, t in ts.items()}

    return loss_and_grads


def make_data(n: int, dtype, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 1, 8, 8)).astype(dtype)
    Y = np.eye(10, dtype=dtype)[rng.integers(0, 10, size=n)]
    return X, Y


def check(impls: dict[str, Callable], params, dtype) -> None:
    for n in (1, 7, 64):
        X, Y = make_data(n, dtype, seed=n)
        ref_value, ref = impls[BASELINE](params, X, Y)
        for name, fn in impls.items():
            value, grads = fn(params, X, Y)
            np.testing.assert_allclose(value, ref_value, **TOL[dtype], err_msg=name)
            for k in ref:
                scale = float(np.max(np.abs(ref[k]))) or 1.0
                np.testing.assert_allclose(
                    grads[k],
                    ref[k],
                    rtol=TOL[dtype]["rtol"],
                    atol=TOL[dtype]["rtol"] * scale,
                    err_msg=f"{name} d{k} n={n}",
                )
                if name == "symgrad":
                    assert grads[k].dtype == dtype, (name, k)


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, temporary output")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="BLAS and torch threads for every implementation (default: the libraries' own)",
    )
    args = ap.parse_args(argv)
    if args.threads is not None:
        # An overloaded 2-core machine makes multi-threaded BLAS and torch spin and stall
        # (a 9x16 matrix product took 25 ms instead of 1.5 ms): the same limit for all.
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
        try:
            import torch

            torch.set_num_threads(args.threads)
        except ImportError:
            pass
    out = args.out or (Path(tempfile.mkdtemp()) if args.quick else HERE)
    repeats, block = (5, 0.01) if args.quick else (21, 0.02)
    t_start = time.perf_counter()
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    code = generate(loads_spec(SPEC, file="bench/conv.py"))
    t_gen = time.perf_counter() - t0
    module = load_module(code)
    rows = []
    for dtype in (np.float32, np.float64):
        params = {k: v.astype(dtype) for k, v in module.init_params(0).items()}
        impls = {"symgrad": module.loss_and_grads, BASELINE: handwritten()}
        t = torch_impl(params)
        if t is not None:
            impls["torch eager"] = t
        check(impls, params, dtype)
        for n in SIZES:
            X, Y = make_data(n, dtype)
            med, low = measure(impls, (params, X, Y), repeats, block)
            rows.append({"dtype": np.dtype(dtype).name, "n": n, "med": med, "min": low})
            print(
                f"{np.dtype(dtype).name:8s} n={n:4d}  "
                + "  ".join(f"{k} {fmt_time(v)}" for k, v in med.items()),
                file=sys.stderr,
            )
    names = list(rows[0]["med"])
    lines = [
        "# symgrad conv benchmark",
        "",
        "Produced by `python bench/conv.py"
        + (" --quick" if args.quick else "")
        + (f" --threads {args.threads}" if args.threads else "")
        + "` on "
        + f"{time.strftime('%Y-%m-%d %H:%M')} in {time.perf_counter() - t_start:.0f} s "
        f"({platform.node() or 'this machine'}). Load average (1 min, 5 min): "
        f"{load0[0]:.2f}, {load0[1]:.2f} at the start, {os.getloadavg()[0]:.2f}, "
        f"{os.getloadavg()[1]:.2f} at the end (above the core count, other processes "
        "competed for the CPUs).",
        "",
        "Network: 8x8x1 -> conv 3x3, 16 channels, relu -> maxpool 2 -> flatten -> "
        "dense 10, softmax + cross-entropy. "
        f"Generating the module (derive + codegen) took {t_gen:.2f} s.",
        "",
        "## Environment",
        "",
        *environment(),
        "",
        "## `loss_and_grads` per call",
        "",
        f"Median over {repeats} blocks of calls, implementations timed round-robin on the same "
        "arrays; all checked against the hand-written NumPy first (float64 rtol 1e-9, float32 "
        "rtol 2e-3). **ratio = time(other) / time(symgrad)**: above 1 means symgrad is faster.",
        "",
        "| dtype | n | " + " | ".join(names) + " | torch / symgrad | hand / symgrad "
        "| torch / symgrad (min) |",
        "|---|---:|" + "---:|" * len(names) + "---:|---:|---:|",
    ]
    for r in rows:
        med, low = r["med"], r["min"]
        sg = med["symgrad"]
        t_ratio = f"{med['torch eager'] / sg:.2f}" if "torch eager" in med else "-"
        t_min = f"{low['torch eager'] / low['symgrad']:.2f}" if "torch eager" in low else "-"
        lines.append(
            f"| {r['dtype']} | {r['n']} | "
            + " | ".join(fmt_time(med[k]) for k in names)
            + f" | {t_ratio} | {med[BASELINE] / sg:.2f} | {t_min} |"
        )
    lines += [
        "",
        "Goal: torch / symgrad >= 1 at n <= 32 and >= 1/1.5 = 0.67 at n = 256.",
        "",
    ]
    out.mkdir(parents=True, exist_ok=True)
    path = out / "conv-results.md"
    path.write_text("\n".join(lines))
    print(f"wrote {path}", file=sys.stderr)
    return path


if __name__ == "__main__":
    main()
