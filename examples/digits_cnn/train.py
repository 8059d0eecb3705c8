"""Train a small conv net on the digits with nothing but a symgrad-generated NumPy module.

The network is ``digits_cnn.toml`` (1x8x8 -> conv 3x3x16, relu -> maxpool 2 -> flatten ->
dense 10, softmax; cross-entropy). This script derives it with symgrad, writes the
generated module (with its Adam step) to ``OUT/digits_cnn.py``, imports that file, and
trains in a plain minibatch loop that calls only the module's ``loss_and_grads`` and
``step``. The data is scikit-learn's bundled 8x8 digits (1797 images, no download) as
(n, 1, 8, 8) arrays. It saves ``OUT/training.png`` (loss and accuracy per epoch).

    python examples/digits_cnn/train.py             # 15 epochs, outputs next to this file
    python examples/digits_cnn/train.py --epochs 3 --out /tmp/cnn --seed 1

Needs numpy, scikit-learn and matplotlib (``pip install -e .[examples]``); tqdm is
used for the progress bar when installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

HERE = Path(__file__).resolve().parent
SPEC = HERE / "digits_cnn.toml"

try:  # a checkout that is not pip-installed: use the symgrad next to this example
    import symgrad  # noqa: F401
except ImportError:  # pragma: no cover - depends on how symgrad was installed
    sys.path.insert(0, str(HERE.parents[1]))


def progress(items: Sequence, desc: str, enabled: bool = True) -> Iterator:
    """A progress bar over ``items`` on stderr: tqdm when installed, else a tiny one."""
    if not enabled:
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield from _tiny_bar(items, desc)
        return
    yield from tqdm(items, desc=desc, leave=False, file=sys.stderr)


def _tiny_bar(items: Sequence, desc: str, width: int = 30) -> Iterable:
    total = len(items)
    for done, item in enumerate(items, start=1):
        yield item
        filled = width * done // total
        bar = "#" * filled + "." * (width - filled)
        sys.stderr.write(f"\r{desc} [{bar}] {done}/{total}")
        sys.stderr.flush()
    sys.stderr.write("\r" + " " * (len(desc) + width + 20) + "\r")


def generate_module(out: Path) -> ModuleType:
    """Derive ``digits_cnn.toml``, write ``out/digits_cnn.py`` (with Adam) and import it."""
    from symgrad.files import atomic_write
    from symgrad.frontend.spec import load_spec
    from symgrad.pipeline import generate

    try:
        spec = os.path.relpath(SPEC)
    except ValueError:  # another drive on Windows
        spec = str(SPEC)
    code = generate(load_spec(spec), optimizer="adam")
    path = out / "digits_cnn.py"
    atomic_write(path, code)  # refuses to clobber a file symgrad did not write
    mod_spec = importlib.util.spec_from_file_location("digits_cnn", path)
    assert mod_spec is not None and mod_spec.loader is not None
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


def load_data(seed: int, test_size: float = 0.25):
    """Standardised digits as (n, 1, 8, 8) images (one mean and scale, from the training
    split: a convolution shares its weights across pixels) and one-hot targets."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=test_size, random_state=seed, stratify=y
    )
    mean, std = X_tr.mean(), X_tr.std()
    X_tr = ((X_tr - mean) / std).reshape(-1, 1, 8, 8)
    X_te = ((X_te - mean) / std).reshape(-1, 1, 8, 8)
    eye = np.eye(10)
    return X_tr, eye[y_tr], y_tr, X_te, eye[y_te], y_te


def accuracy(net: ModuleType, params: dict, X: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(net.forward(params, X).argmax(axis=1) == labels))


def plot(history: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(len(history["train_loss"]))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, history["train_loss"], label="train (mean over the epoch)")
    ax1.plot(epochs, history["test_loss"], label="test")
    ax1.set(xlabel="epoch", ylabel="cross-entropy", title="loss", yscale="log")
    ax1.legend()
    ax2.plot(epochs, history["train_acc"], label="train")
    ax2.plot(epochs, history["test_acc"], label="test")
    ax2.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.01))
    ax2.legend()
    fig.suptitle(
        "digits: conv 3x3x16, relu -> maxpool 2 -> dense 10 softmax, symgrad-generated NumPy"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=15, help="passes over the training set")
    p.add_argument(
        "--out", type=Path, default=HERE, help="folder for digits_cnn.py and training.png"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split, init and shuffling")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        p.error("--epochs and --batch-size must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the example; returns the per-epoch history, the final test accuracy and timings."""
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    net = generate_module(args.out)
    t_generate = time.perf_counter() - start
    X_tr, Y_tr, y_tr, X_te, Y_te, y_te = load_data(args.seed)
    params = net.init_params(seed=args.seed)
    state = net.init_state(params)
    rng = np.random.default_rng(args.seed)

    history: dict[str, list[float]] = {
        k: [] for k in ("train_loss", "test_loss", "train_acc", "test_acc")
    }

    def record(train_loss: float) -> None:
        history["train_loss"].append(train_loss)
        history["test_loss"].append(net.loss(params, X_te, Y_te))
        history["train_acc"].append(accuracy(net, params, X_tr, y_tr))
        history["test_acc"].append(accuracy(net, params, X_te, y_te))

    record(net.loss(params, X_tr, Y_tr))  # epoch 0: before training
    t0 = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(X_tr))
        batches = [order[s : s + args.batch_size] for s in range(0, len(order), args.batch_size)]
        total = 0.0
        for idx in progress(batches, f"epoch {epoch}/{args.epochs}", not args.no_progress):
            value, grads = net.loss_and_grads(params, X_tr[idx], Y_tr[idx])
            net.step(params, grads, state, lr=args.lr)
            total += value * len(idx)
        record(total / len(X_tr))
        print(
            f"epoch {epoch:3d}  train loss {history['train_loss'][-1]:.4f}  "
            f"test loss {history['test_loss'][-1]:.4f}  test acc {history['test_acc'][-1]:.4f}",
            file=sys.stderr,
        )
    t_train = time.perf_counter() - t0
    png = args.out / "training.png"
    plot(history, png)
    result = {
        "history": history,
        "test_acc": history["test_acc"][-1],
        "generate_s": t_generate,
        "train_s": t_train,
        "total_s": time.perf_counter() - start,
        "png": png,
        "module": args.out / "digits_cnn.py",
    }
    print(
        f"test accuracy {result['test_acc']:.4f} after {args.epochs} epochs; "
        f"codegen {t_generate:.2f} s, training {t_train:.2f} s, total {result['total_s']:.2f} s"
    )
    return result


if __name__ == "__main__":
    main()
