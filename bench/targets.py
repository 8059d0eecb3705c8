"""symgrad's targets benchmark: the generated PyTorch module against torch eager autograd,
and the generated Hessian-vector product against autograd's second order.

    python bench/targets.py            # writes bench/targets-results.md
    python bench/targets.py --quick    # fewer sizes and repeats, printed only

(a) loss and every parameter gradient per call, float64, n = 1, 32, 256, 4096:
    - ``torch eager``: autograd through the independent PyTorch reference network
      (``symgrad/verify/reference.py``'s layer choices made once: F.linear, library
      activations and losses, cross-entropy on the logits), ``loss.backward()`` with
      the parameters' ``.grad`` reset each call; the baseline;
    - ``symgrad torch``: ``Model.loss(X, Y).backward()`` of the module generated with
      ``--target torch`` (autograd runs the derived backward, ``LossFunction``);
    - ``symgrad torch (no autograd)``: the same module's ``loss_and_grads``.
(b) Hessian-vector product per call, float64:
    - ``torch double-backward``: ``autograd.grad(grad(loss) . v)`` on the reference (baseline);
    - ``jax jvp(grad)``: ``jax.jit(jax.jvp(jax.grad(loss)))`` on the JAX reference;
    - ``symgrad numpy``, ``symgrad torch``, ``symgrad jax (jit)``: the generated ``hvp``.
Ratios are time(baseline) / time(implementation): above 1 is faster than the baseline.
Every implementation is checked against the baseline before it is timed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

# One thread for every library (before they load): on a shared, busy machine spinning
# thread pools make multi-threaded timings meaningless. --threads 0 keeps the defaults.
if "--threads" not in sys.argv or sys.argv[sys.argv.index("--threads") + 1] != "0":
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault(
        "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    )

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE), str(ROOT / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import torch  # noqa: E402
from catalogue import catalogue  # noqa: E402
from run import fmt_time, measure  # noqa: E402

from symgrad import Dense, build  # noqa: E402
from symgrad.backends.codegen import load_module  # noqa: E402
from symgrad.pipeline import generate_code  # noqa: E402
from symgrad.verify.reference import backend, reference_forward  # noqa: E402
from symgrad.verify.verify import random_targets  # noqa: E402

try:
    import jax

    jax.config.update("jax_enable_x64", True)
except ImportError:  # pragma: no cover - the JAX columns are left out
    jax = None

#: The catalogue's plain MLPs (dense layers, library activations and losses), and the
#: main benchmark's 784-256-256-10 classifier.
NETS = {k: v for k, v in catalogue().items() if k in ("seed", "softmax_ce", "bce", "acts", "deep")}
NETS["mlp784"] = build(
    "mlp784",
    784,
    [Dense(256, "sigmoid"), Dense(256, "sigmoid"), Dense(10, "softmax")],
    "cross_entropy",
)
SIZES = (1, 32, 256, 4096)
HVP_SIZES = (1, 32, 256)


def point(net, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    params = {p.name: rng.uniform(-0.5, 0.5, net.shape(p)) for p in net.params}
    X = rng.normal(size=(n, net.size(net.input_width)))
    V = {k: rng.normal(size=v.shape) for k, v in params.items()}
    return params, X, random_targets(net, n, rng), V


def planned(net, ops):
    """The network as a plain function of (params, X, Y) -> loss for the libraries' eager
    baselines: the reference's per-stage choices (``verify/reference.py``, which inspects
    the SymPy form on every call) made once, so only tensor calls remain per call."""
    import sympy as sp

    from symgrad.verify.reference import (
        _BUILTIN_LOSS,
        _builtin_activation,
        _dense_body,
        _is_softmax,
    )

    plan = []
    for st in net.stages:
        if _dense_body(st) is not None and st.body == _dense_body(st):
            b = st.params[1].name if len(st.params) == 2 else None
            plan.append(("dense", st.params[0].name, b))
        elif (act := _builtin_activation(st)) in ops.acts:
            plan.append(("act", ops.acts[act], None))
        elif _is_softmax(st):
            plan.append(("softmax", None, None))
        else:
            raise SystemExit(f"{net.name}: stage {st.name} is not a library layer")
    lo = net.loss
    k = sp.Symbol("i", integer=True)
    ce = -sp.Sum(lo.target[k] * sp.log(net.output[k]), (k, 0, lo.width - 1))
    fused_ce = plan[-1][0] == "softmax" and lo.body.dummy_eq(ce)
    builtin = [name for name, e in _BUILTIN_LOSS.items() if lo.elementwise == e]
    if not fused_ce and not builtin:
        raise SystemExit(f"{net.name}: the loss is not a library loss")
    body = plan[:-1] if fused_ce else plan

    def fn(p, X, Y):
        a = X
        for kind, f, b in body:
            if kind == "dense":
                a = ops.dense(a, p[f], p[b] if b else None)
            elif kind == "act":
                a = f(a)
            else:
                a = ops.softmax(a)
        if fused_ce:
            return ops.cross_entropy(a, Y)  # on the logits, as eager code writes it
        return getattr(ops, builtin[0])(a, Y)

    return fn


def grad_impls(net, mods, params, X, Y) -> dict[str, Callable]:
    ops = backend("torch")
    fast = planned(net, ops)
    eager = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    model = mods["torch"].Model()
    with torch.no_grad():
        for k, v in params.items():
            getattr(model, k).copy_(torch.tensor(v))
    plain = {k: torch.tensor(v) for k, v in params.items()}

    # The planned function is the reference network, only faster to call.
    _, ref_value = reference_forward(ops, net, eager, Xt, Yt)
    assert abs(float(fast(eager, Xt, Yt)) - float(ref_value)) <= 1e-12 * max(1, abs(ref_value))

    def torch_eager():
        for t in eager.values():
            t.grad = None
        value = fast(eager, Xt, Yt)
        value.backward()
        return value.item(), {k: t.grad for k, t in eager.items()}

    mparams = list(model.parameters())

    def symgrad_torch():
        for t in mparams:  # reset as the baseline does (Module.zero_grad costs more Python)
            t.grad = None
        value = model.loss(Xt, Yt)
        value.backward()
        return value.item(), {k: getattr(model, k).grad for k in params}

    def symgrad_plain():
        value, grads = mods["torch"].loss_and_grads(plain, Xt, Yt)
        return float(value), grads

    return {
        "torch eager": torch_eager,
        "symgrad torch": symgrad_torch,
        "symgrad torch (no autograd)": symgrad_plain,
    }


def hvp_impls(net, mods, params, X, Y, V) -> dict[str, Callable]:
    ops = backend("torch")
    fast = planned(net, ops)
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tv = {k: torch.tensor(v) for k, v in V.items()}
    tp = {k: torch.tensor(v) for k, v in params.items()}

    def double_backward():
        value = fast(leaves, Xt, Yt)
        gs = torch.autograd.grad(value, list(leaves.values()), create_graph=True)
        dot = sum((g * tv[k]).sum() for g, k in zip(gs, leaves, strict=True))
        return dict(zip(leaves, torch.autograd.grad(dot, list(leaves.values())), strict=True))

    out = {
        "torch double-backward": double_backward,
        "symgrad numpy": lambda: mods["numpy"].hvp(params, X, Y, V),
        "symgrad torch": lambda: mods["torch"].hvp(tp, Xt, Yt, tv),
    }
    if jax is not None:
        jops = backend("jax")
        jp = {k: jax.numpy.asarray(v) for k, v in params.items()}
        jv = {k: jax.numpy.asarray(v) for k, v in V.items()}
        Xj, Yj = jax.numpy.asarray(X), jax.numpy.asarray(Y)

        jfast = planned(net, jops)

        def jloss(p):
            return jfast(p, Xj, Yj)

        jvp = jax.jit(lambda p, v: jax.jvp(jax.grad(jloss), (p,), (v,))[1])
        gen = jax.jit(mods["jax"].hvp)
        out["jax jvp(grad)"] = lambda: jax.block_until_ready(jvp(jp, jv))
        out["symgrad jax (jit)"] = lambda: jax.block_until_ready(gen(jp, Xj, Yj, jv))
    return out


def _np(x) -> np.ndarray:
    return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def check(impls: dict[str, Callable], base: str, grads_of: Callable) -> None:
    ref = grads_of(impls[base]())
    for name, fn in impls.items():
        got = grads_of(fn())
        for k in ref:
            if not np.allclose(_np(got[k]), _np(ref[k]), rtol=1e-8, atol=1e-10):
                raise SystemExit(f"{name} disagrees with {base} on {k}")


def table(rows: list[dict], names: list[str], base: str) -> list[str]:
    head = "| net | n | " + " | ".join(names) + " |"
    out = [head, "|" + "---|" * (len(names) + 2)]
    for r in rows:
        cells = []
        for nm in names:
            if nm not in r["med"]:
                cells.append("-")
                continue
            t = r["med"][nm]
            ratio = r["med"][base] / t
            cells.append(fmt_time(t) if nm == base else f"{fmt_time(t)} ({ratio:.2f}x)")
        out.append(f"| {r['net']} | {r['n']} | " + " | ".join(cells) + " |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    ap.add_argument("--out", type=Path, default=HERE / "targets-results.md")
    ap.add_argument("--threads", type=int, default=1, help="threads per library (0: defaults)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats, block = (3, 0.02) if args.quick else (7, 0.03)
    sizes = (1, 256) if args.quick else SIZES
    hsizes = (1, 32) if args.quick else HVP_SIZES
    nets = ["seed", "softmax_ce", "mlp784"] if args.quick else list(NETS)
    start = time.time()
    grows, hrows = [], []
    for key in nets:
        net = NETS[key]
        mods = {
            t: load_module(generate_code(net, target=t, hvp=True), f"b_{t}_{key}")
            for t in ("numpy", "torch", *(("jax",) if jax else ()))
        }
        for n in sizes:
            params, X, Y, V = point(net, n)
            impls = grad_impls(net, mods, params, X, Y)
            check(impls, "torch eager", lambda r: r[1])
            med, mins = measure(impls, (), repeats, block)
            grows.append({"net": key, "n": n, "med": med, "min": mins})
            print(key, n, {k: f"{med['torch eager'] / v:.2f}" for k, v in med.items()}, flush=True)
        for n in hsizes:
            params, X, Y, V = point(net, n, seed=1)
            impls = hvp_impls(net, mods, params, X, Y, V)
            check(impls, "torch double-backward", lambda r: r)
            med, mins = measure(impls, (), repeats, block)
            hrows.append({"net": key, "n": n, "med": med, "min": mins})
            base = med["torch double-backward"]
            print("hvp", key, n, {k: f"{base / v:.2f}" for k, v in med.items()}, flush=True)
    gnames = ["torch eager", "symgrad torch", "symgrad torch (no autograd)"]
    hnames = ["torch double-backward", "jax jvp(grad)", "symgrad numpy", "symgrad torch"]
    hnames += ["symgrad jax (jit)"]
    lines = [
        "# symgrad targets benchmark",
        "",
        f"Produced by `python bench/targets.py` on {dt.datetime.now():%Y-%m-%d %H:%M} "
        f"in {time.time() - start:.0f} s; {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), jax {jax.__version__ if jax else 'absent'}, "
        f"load average {os.getloadavg()[0]:.2f} at the end; "
        f"{'1 thread per library' if args.threads == 1 else 'default threads'}. float64; median of "
        f"{repeats} blocks of about {block * 1000:.0f} ms, implementations round-robin.",
        "",
        "Cell: time per call (time of the first column / time of this one; above 1 is faster).",
        "",
        "## (a) loss and all parameter gradients, vs torch eager autograd",
        "",
        *table(grows, gnames, "torch eager"),
        "",
        "## (b) Hessian-vector product, vs torch double-backward",
        "",
        *table(hrows, hnames, "torch double-backward"),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
