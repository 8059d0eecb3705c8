#!/usr/bin/env bash
# symgrad on a CUDA GPU: the generated cupy and torch modules against torch eager on CUDA,
# for the 784-256-256-10 MLP (sigmoid, sigmoid, softmax; cross-entropy) in float32 at
# n = 256, 4096, 65536. Writes a Markdown table to bench/gpu-results.md.
#
#   bash bench/gpu.sh                 # needs torch with CUDA; cupy is used when installed
#   N="256 4096" bash bench/gpu.sh    # other batch sizes
#   DEVICE=cpu N=8 OUT_MD=/tmp/x.md bash bench/gpu.sh   # a dry run of the script on the CPU
#
# Each implementation's loss and gradients are checked against torch eager (float32,
# rtol 2e-3) before it is timed. Times are medians over repeats of blocks of calls, each
# call synchronised (the loss read back to the host, as a training loop does).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT_MD="${OUT_MD:-bench/gpu-results.md}"
N="${N:-256 4096 65536}"
export DEVICE="${DEVICE:-cuda}"

python - "$OUT_MD" $N <<'PY'
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from symgrad import Dense, build
from symgrad.backends.codegen import load_module
from symgrad.pipeline import generate_code

out_md, sizes = Path(sys.argv[1]), [int(s) for s in sys.argv[2:]]
dev = torch.device(os.environ["DEVICE"])
if dev.type == "cuda" and not torch.cuda.is_available():
    sys.exit("bench/gpu.sh: no CUDA device visible to torch; nothing timed")
cp = None
if dev.type == "cuda":
    try:
        import cupy as cp

        cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - absent or unusable: no cupy column
        cp = None
        print(f"bench/gpu.sh: cupy unavailable ({type(exc).__name__}); timing torch only")

net = build(
    "mlp", 784, [Dense(256, "sigmoid"), Dense(256, "sigmoid"), Dense(10, "softmax")],
    "cross_entropy",
)
tmod = load_module(generate_code(net, target="torch"), "gpu_torch")
cmod = load_module(generate_code(net, target="cupy"), "gpu_cupy") if cp else None
names = list(tmod.PARAM_NAMES)


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()
    if cp is not None:
        cp.cuda.Device().synchronize()


def impls(n):
    rng = np.random.default_rng(0)
    params = {k: rng.uniform(-0.05, 0.05, s).astype(np.float32) for k, s in tmod.PARAM_SHAPES.items()}
    X = rng.normal(size=(n, 784)).astype(np.float32)
    Y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)]
    Xt, Yt = torch.from_numpy(X).to(dev), torch.from_numpy(Y).to(dev)
    eager = torch.nn.Sequential(
        torch.nn.Linear(784, 256), torch.nn.Sigmoid(), torch.nn.Linear(256, 256),
        torch.nn.Sigmoid(), torch.nn.Linear(256, 10),
    ).to(dev)
    with torch.no_grad():
        for l, lin in zip((1, 2, 3), (eager[0], eager[2], eager[4])):
            lin.weight.copy_(torch.from_numpy(params[f"W{l}"]))
            lin.bias.copy_(torch.from_numpy(params[f"b{l}"]))
    eparams = [eager[i].weight for i in (0, 2, 4)] + [eager[i].bias for i in (0, 2, 4)]
    enames = ["W1", "W2", "W3", "b1", "b2", "b3"]
    model = tmod.Model(dtype=torch.float32, device=dev)
    with torch.no_grad():
        for k in names:
            getattr(model, k).copy_(torch.from_numpy(params[k]))
    tplain = {k: getattr(model, k).detach() for k in names}

    def torch_eager():
        eager.zero_grad(set_to_none=True)
        value = torch.nn.functional.cross_entropy(eager(Xt), Yt)
        value.backward()
        return value.item(), {k: p.grad for k, p in zip(enames, eparams)}

    def symgrad_torch():
        model.zero_grad(set_to_none=True)
        value = model.loss(Xt, Yt)
        value.backward()
        return value.item(), {k: getattr(model, k).grad for k in names}

    def symgrad_torch_plain():
        value, grads = tmod.loss_and_grads(tplain, Xt, Yt)
        return value.item(), grads

    out = {
        "torch eager": torch_eager,
        "symgrad torch": symgrad_torch,
        "symgrad torch (no autograd)": symgrad_torch_plain,
    }
    if cp is not None:
        cparams = {k: cp.asarray(v) for k, v in params.items()}
        Xc, Yc = cp.asarray(X), cp.asarray(Y)
        out["symgrad cupy"] = lambda: cmod.loss_and_grads(cparams, Xc, Yc)
    return out


def host(g):
    if isinstance(g, torch.Tensor):
        return g.detach().cpu().numpy()
    return cp.asnumpy(g)


rows = []
for n in sizes:
    fns = impls(n)
    base_value, base_grads = fns["torch eager"]()
    for name, fn in fns.items():
        value, grads = fn()
        assert abs(value - base_value) <= 2e-3 * abs(base_value), (name, value, base_value)
        for k in base_grads:
            ok = np.allclose(host(grads[k]), host(base_grads[k]), rtol=2e-3, atol=1e-6)
            assert ok, f"{name}: {k} disagrees with torch eager at n={n}"
    times = {}
    for name, fn in fns.items():
        for _ in range(5):
            fn()
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        one = time.perf_counter() - t0
        inner = max(1, int(0.05 / max(one, 1e-6)))
        samples = []
        for _ in range(11):
            sync()
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            sync()
            samples.append((time.perf_counter() - t0) / inner)
        times[name] = statistics.median(samples)
    rows.append((n, times))
    base = times["torch eager"]
    print(n, {k: f"{v * 1e3:.3f} ms ({base / v:.2f}x)" for k, v in times.items()}, flush=True)

cols = list(rows[0][1])
lines = [
    "# symgrad on a CUDA GPU",
    "",
    f"Produced by `bash bench/gpu.sh` on {dt.datetime.now():%Y-%m-%d %H:%M}: "
    f"{torch.cuda.get_device_name() if dev.type == 'cuda' else 'CPU (dry run)'}, "
    f"torch {torch.__version__}"
    + (f", cupy {cp.__version__}" if cp is not None else ", no cupy")
    + ". 784-256-256-10 MLP (sigmoid, sigmoid, softmax; cross-entropy), float32; loss and "
    "every gradient per call, the loss read back to the host; median of 11 blocks.",
    "",
    "Cell: time per call (time of torch eager / time of this one; above 1 is faster).",
    "",
    "| n | " + " | ".join(cols) + " |",
    "|---|" + "---|" * len(cols),
]
for n, times in rows:
    base = times["torch eager"]
    cells = [f"{times[c] * 1e3:.3f} ms ({base / times[c]:.2f}x)" for c in cols]
    lines.append(f"| {n} | " + " | ".join(cells) + " |")
out_md.write_text("\n".join(lines) + "\n")
print(f"wrote {out_md}")
PY
