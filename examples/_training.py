"""What the digits examples share: a symgrad-generated module trained in a plain loop.

``examples/digits/train.py`` (a dense net) and ``examples/digits_cnn/train.py`` (a conv
net) differ only in their spec, how they shape the images and their defaults; this module
is the rest: the command line, writing and importing the generated module, the digits
split, the minibatch loop that calls only the module's ``loss_and_grads`` and ``step``,
the progress bar and the plot. Each script puts ``examples/`` on ``sys.path`` and imports
it, so both run from a fresh clone (``python examples/digits/train.py``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

try:  # a checkout that is not pip-installed: use the symgrad next to the examples
    import symgrad  # noqa: F401
except ImportError:  # pragma: no cover - depends on how symgrad was installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@dataclass(frozen=True)
class Data:
    """A train/test split: inputs, one-hot targets and integer labels."""

    X_tr: np.ndarray
    Y_tr: np.ndarray
    y_tr: np.ndarray
    X_te: np.ndarray
    Y_te: np.ndarray
    y_te: np.ndarray


@dataclass(frozen=True)
class Example:
    """One training example: its spec, the module it writes and how it reads the digits."""

    spec: Path  # the network (a TOML spec)
    module: str  # the generated module's name: OUT/<module>.py
    title: str  # the plot's title
    epochs: int  # the default number of epochs
    #: (raw images (n, 64) of the training split, of the test split) -> standardised inputs
    prepare: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def progress(items: Sequence[Any], desc: str, enabled: bool = True) -> Iterator[Any]:
    """A progress bar over ``items`` on stderr: tqdm when installed, else a tiny one.

    Drawn only on a terminal: redrawn frames (``\\r``) would fill a log file or a pipe."""
    if not enabled or not sys.stderr.isatty():
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield from _tiny_bar(items, desc)
        return
    yield from tqdm(items, desc=desc, leave=False, file=sys.stderr)


def _tiny_bar(items: Sequence[Any], desc: str, width: int = 30) -> Iterable[Any]:
    total = len(items)
    for done, item in enumerate(items, start=1):
        yield item
        filled = width * done // total
        bar = "#" * filled + "." * (width - filled)
        sys.stderr.write(f"\r{desc} [{bar}] {done}/{total}")
        sys.stderr.flush()
    sys.stderr.write("\r" + " " * (len(desc) + width + 20) + "\r")


def generate_module(spec: Path, out: Path, name: str) -> ModuleType:
    """Derive ``spec``, write ``out/<name>.py`` (with Adam) and import it."""
    from symgrad.files import atomic_write
    from symgrad.frontend.spec import load_spec
    from symgrad.pipeline import generate

    try:
        shown = os.path.relpath(spec)  # the module's header names the spec as given
    except ValueError:  # another drive on Windows
        shown = str(spec)
    code = generate(load_spec(shown), optimizer="adam")
    path = out / f"{name}.py"
    atomic_write(path, code)  # refuses to clobber a file symgrad did not write
    mod_spec = importlib.util.spec_from_file_location(name, path)
    assert mod_spec is not None and mod_spec.loader is not None
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


def load_digits(
    seed: int,
    prepare: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    test_size: float = 0.25,
) -> Data:
    """scikit-learn's bundled 8x8 digits (no download), split stratified by ``seed``; the
    inputs as ``prepare`` standardises them (statistics from the training split)."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    X, y = sklearn_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=test_size, random_state=seed, stratify=y
    )
    X_tr, X_te = prepare(X_tr, X_te)
    eye = np.eye(10)
    return Data(X_tr, eye[y_tr], y_tr, X_te, eye[y_te], y_te)


def accuracy(net: ModuleType, params: dict, X: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(net.forward(params, X).argmax(axis=1) == labels))


def plot(history: dict[str, list[float]], path: Path, title: str) -> None:
    """Loss (log scale) and accuracy per epoch, train and test, saved as a PNG."""
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
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


#: What the digits examples need besides symgrad: (module, what to install)
NEEDS = (("sklearn", "scikit-learn"), ("matplotlib", "matplotlib"))


def require(needs: Sequence[tuple[str, str]], what: str) -> None:
    """Stop with one line and exit status 2, before anything is written, when a package an
    example needs is missing."""
    missing = [pip for module, pip in needs if importlib.util.find_spec(module) is None]
    if missing:
        print(
            f"{what} needs {' and '.join(missing)}: pip install -e '.[examples]' "
            f"(or pip install {' '.join(missing)})",
            file=sys.stderr,
        )
        raise SystemExit(2)


def output_folder(name: str) -> Path:
    """An example's own folder under the current directory (never the source tree)."""
    return Path("symgrad-output") / name


def parse_args(
    ex: Example, description: str, default_out: Path, argv: Sequence[str] | None
) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--epochs", type=int, default=ex.epochs, help="passes over the training set")
    p.add_argument(
        "--out",
        type=Path,
        default=default_out,
        help=f"folder for {ex.module}.py and training.png (default: {default_out})",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split, init and shuffling")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        p.error("--epochs and --batch-size must be positive")
    return args


def run(ex: Example, args: argparse.Namespace) -> dict[str, Any]:
    """Generate the module, train it, plot; returns the per-epoch history, the final test
    accuracy, the timings and the paths written."""
    require(NEEDS, f"this example ({ex.module})")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    net = generate_module(ex.spec, args.out, ex.module)
    t_generate = time.perf_counter() - start
    data = load_digits(args.seed, ex.prepare)
    params = net.init_params(seed=args.seed)
    state = net.init_state(params)
    rng = np.random.default_rng(args.seed)

    history: dict[str, list[float]] = {
        k: [] for k in ("train_loss", "test_loss", "train_acc", "test_acc")
    }

    def record(train_loss: float) -> None:
        history["train_loss"].append(train_loss)
        history["test_loss"].append(net.loss(params, data.X_te, data.Y_te))
        history["train_acc"].append(accuracy(net, params, data.X_tr, data.y_tr))
        history["test_acc"].append(accuracy(net, params, data.X_te, data.y_te))

    record(net.loss(params, data.X_tr, data.Y_tr))  # epoch 0: before training
    t0 = time.perf_counter()
    n = len(data.X_tr)
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(n)
        batches = [order[s : s + args.batch_size] for s in range(0, n, args.batch_size)]
        total = 0.0
        for idx in progress(batches, f"epoch {epoch}/{args.epochs}", not args.no_progress):
            value, grads = net.loss_and_grads(params, data.X_tr[idx], data.Y_tr[idx])
            net.step(params, grads, state, lr=args.lr)
            total += value * len(idx)
        record(total / n)
        print(
            f"epoch {epoch:3d}  train loss {history['train_loss'][-1]:.4f}  "
            f"test loss {history['test_loss'][-1]:.4f}  test acc {history['test_acc'][-1]:.4f}",
            file=sys.stderr,
        )
    t_train = time.perf_counter() - t0
    png = args.out / "training.png"
    plot(history, png, ex.title)
    result = {
        "history": history,
        "test_acc": history["test_acc"][-1],
        "generate_s": t_generate,
        "train_s": t_train,
        "total_s": time.perf_counter() - start,
        "png": png,
        "module": args.out / f"{ex.module}.py",
    }
    print(
        f"test accuracy {result['test_acc']:.4f} after {args.epochs} epochs; "
        f"codegen {t_generate:.2f} s, training {t_train:.2f} s, total {result['total_s']:.2f} s"
    )
    return result
