"""Scale a symgrad-generated PyTorch Model out with torch.distributed (DDP, gloo, 2 CPUs).

``mlp_torch.py`` is ``symgrad codegen mlp.toml --target torch``: its ``Model`` is a
``torch.nn.Module`` whose backward pass is symgrad's derived one (``LossFunction``).
Nothing here is symgrad-specific: it is the standard DDP recipe. Two processes on the
loopback address each take half of every batch; DDP all-reduces (averages) their
gradients, which for a mean loss over equal halves is exactly the full-batch gradient.
The script checks that: after every step the gradients and, at the end, the parameters
of rank 0 equal those of a single-process run over the full batches.

    python examples/ddp/train_ddp.py                # 20 steps, 2 processes
    python examples/ddp/train_ddp.py --steps 3 --world 2

Needs torch (``pip install -e '.[examples]'``): without it the script says so and exits
with status 2. It writes no files. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import sys
from pathlib import Path

if importlib.util.find_spec("torch") is None:
    print(
        "this example needs torch: pip install -e '.[examples]' (or pip install torch)",
        file=sys.stderr,
    )
    raise SystemExit(2)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

HERE = Path(__file__).resolve().parent


def load_generated():
    """Import the generated module next to this script (it needs only torch)."""
    spec = importlib.util.spec_from_file_location("mlp_torch", HERE / "mlp_torch.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def data(steps: int, batch: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Synthetic 4-class batches (the same on every rank: each takes its own half)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 20, generator=gen, dtype=torch.float64) * 2
    out = []
    for _ in range(steps):
        labels = torch.randint(0, 4, (batch,), generator=gen)
        X = centres[labels] + torch.randn(batch, 20, generator=gen, dtype=torch.float64)
        out.append((X, torch.nn.functional.one_hot(labels, 4).to(torch.float64)))
    return out


def single_process(steps: int, batch: int, lr: float) -> list[dict[str, torch.Tensor]]:
    """Full-batch SGD in one process: the gradients of every step, then the parameters."""
    mod = load_generated()
    model = mod.Model(seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    history = []
    for X, Y in data(steps, batch):
        opt.zero_grad()
        model.loss(X, Y).backward()
        history.append({k: p.grad.clone() for k, p in model.named_parameters()})
        opt.step()
    history.append({k: p.detach().clone() for k, p in model.named_parameters()})
    return history


class LossModule(torch.nn.Module):
    """DDP wraps a module's forward; this one's forward is the generated Model's loss."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        return self.model.loss(X, Y)


def worker(rank: int, world: int, port: int, steps: int, batch: int, lr: float, queue) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        mod = load_generated()
        ddp = DistributedDataParallel(LossModule(mod.Model(seed=0)))
        opt = torch.optim.SGD(ddp.parameters(), lr=lr)
        history = []
        share = batch // world
        for X, Y in data(steps, batch):
            part = slice(rank * share, (rank + 1) * share)
            opt.zero_grad()
            ddp(X[part], Y[part]).backward()  # DDP averages the gradients across ranks
            history.append({k: p.grad.clone() for k, p in ddp.module.model.named_parameters()})
            opt.step()
        history.append({k: p.detach().clone() for k, p in ddp.module.model.named_parameters()})
        if rank == 0:  # plain arrays: tensors would travel as shared-memory handles
            queue.put([{k: v.numpy() for k, v in h.items()} for h in history])
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64, help="global batch (split over ranks)")
    ap.add_argument("--world", type=int, default=2, help="number of processes")
    ap.add_argument("--lr", type=float, default=0.5)
    args = ap.parse_args(argv)
    if args.batch % args.world:
        ap.error("--batch must be a multiple of --world")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(
            target=worker,
            args=(r, args.world, port, args.steps, args.batch, args.lr, queue),
        )
        for r in range(args.world)
    ]
    for p in procs:
        p.start()
    distributed = [{k: torch.from_numpy(v) for k, v in h.items()} for h in queue.get(timeout=300)]
    for p in procs:
        p.join(timeout=60)
    if any(p.exitcode != 0 for p in procs):
        print("a worker failed", file=sys.stderr)
        return 1
    single = single_process(args.steps, args.batch, args.lr)
    worst_grad = max(
        float((d[k] - s[k]).abs().max())
        for d, s in zip(distributed[:-1], single[:-1], strict=True)
        for k in s
    )
    worst_param = max(float((distributed[-1][k] - single[-1][k]).abs().max()) for k in single[-1])
    print(f"{args.world} processes x {args.steps} steps, global batch {args.batch} (float64)")
    print(f"max |grad DDP - grad single process| over all steps: {worst_grad:.2e}")
    print(f"max |param DDP - param single process| after training: {worst_param:.2e}")
    ok = worst_grad <= 1e-12 and worst_param <= 1e-12
    print("OK: DDP gradients equal the single-process ones" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
