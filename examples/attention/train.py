"""Train a self-attention block written in TOML with nothing but its generated NumPy module.

The network is ``attention.toml``: query, key and value maps over a sequence, the
attention weights ``softmax(q . k / sqrt(d), u)``, the weighted values with a residual, the
first position's output, layernorm and a small MLP head. The task is synthetic: a sequence
of 6 tokens from a vocabulary of 4 (one-hot, with a one-hot position); is the token at
position 0 repeated later? (half the sequences are). symgrad derives the network, writes the
module (with Adam) and its derivation to ``OUT``, and a plain minibatch loop calls only the
module's ``loss_and_grads`` and ``step``.

    python examples/attention/train.py                 # outputs in ./attention-out-<time>
    python examples/attention/train.py --epochs 5 --out /tmp/att --seed 1

Writes only under ``--out`` (a fresh folder under the current directory by default):
``attention.py`` (the generated module), ``derivation.md`` and ``history.txt``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
try:  # a checkout that is not pip-installed: use the symgrad next to the examples
    import symgrad  # noqa: F401
except ImportError:  # pragma: no cover - depends on how symgrad was installed
    sys.path.insert(0, str(HERE.parents[1]))

T, VOCAB = 6, 4


def make_data(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences (n, T, VOCAB + T) and one-hot labels (n, 2): 1 = repeated."""
    X = np.zeros((n, T, VOCAB + T))
    labels = rng.integers(0, 2, n)
    for s in range(n):
        first = rng.integers(0, VOCAB)
        others = [v for v in range(VOCAB) if v != first]
        rest = rng.choice(others, T - 1)
        if labels[s]:
            rest[rng.integers(0, T - 1)] = first
        for t, tok in enumerate([first, *rest]):
            X[s, t, tok] = 1.0
            X[s, t, VOCAB + t] = 1.0
    return X, np.eye(2)[labels]


def build(out: Path) -> Any:
    """Derive the spec, write ``out/attention.py`` (with Adam) and ``out/derivation.md``,
    and import the module."""
    from symgrad.files import atomic_write
    from symgrad.frontend.spec import load_spec
    from symgrad.pipeline import derive, generate, render_document

    net = load_spec(str(HERE / "attention.toml"))
    d = derive(net)
    atomic_write(out / "attention.py", generate(d, optimizer="adam"))
    atomic_write(out / "derivation.md", render_document(d, to="markdown"))
    spec = importlib.util.spec_from_file_location("attention_generated", out / "attention.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="output folder (created)")
    args = p.parse_args(argv)
    out = args.out or Path.cwd() / f"attention-out-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    mod = build(out)
    rng = np.random.default_rng(args.seed)
    X_tr, Y_tr = make_data(2000, rng)
    X_te, Y_te = make_data(500, rng)
    params = mod.init_params(args.seed)
    state = mod.init_state(params)
    history = []
    for epoch in range(args.epochs):
        order = rng.permutation(len(X_tr))
        losses = []
        for k in range(0, len(order), args.batch):
            idx = order[k : k + args.batch]
            loss, grads = mod.loss_and_grads(params, X_tr[idx], Y_tr[idx])
            mod.step(params, grads, state, lr=args.lr)
            losses.append(float(loss))
        acc = float((mod.forward(params, X_te).argmax(1) == Y_te.argmax(1)).mean())
        history.append((epoch + 1, float(np.mean(losses)), acc))
        print(f"epoch {epoch + 1:3d}  loss {np.mean(losses):.4f}  test accuracy {acc:.3f}")
    lines = [f"{e}\t{lo:.6f}\t{a:.4f}" for e, lo, a in history]
    (out / "history.txt").write_text("epoch\tloss\ttest_accuracy\n" + "\n".join(lines) + "\n")
    return {"history": history, "accuracy": history[-1][2] if history else None, "out": out}


if __name__ == "__main__":
    main()
