"""Train a small conv net on the digits with nothing but a symgrad-generated NumPy module.

The network is ``digits_cnn.toml`` (1x8x8 -> conv 3x3x16, relu -> maxpool 2 -> flatten ->
dense 10, softmax; cross-entropy). This script derives it with symgrad, writes the
generated module (with its Adam step) to ``OUT/digits_cnn.py``, imports that file, and
trains in a plain minibatch loop that calls only the module's ``loss_and_grads`` and
``step``. The data is scikit-learn's bundled 8x8 digits (1797 images, no download) as
(n, 1, 8, 8) arrays. It saves ``OUT/training.png`` (loss and accuracy per epoch).

    python examples/digits_cnn/train.py     # 15 epochs, into symgrad-output/digits_cnn/
    python examples/digits_cnn/train.py --epochs 3 --out /tmp/cnn --seed 1

Needs scikit-learn and matplotlib (``pip install -e '.[examples]'``): without them it
says so and exits with status 2 before writing anything. tqdm draws the progress bar
when installed (on a terminal only).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # examples/_training.py: what both digits examples share
    sys.path.insert(0, str(HERE.parent))

from _training import Example, output_folder, parse_args, run  # noqa: E402


def as_images(X_tr: np.ndarray, X_te: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 1, 8, 8) images standardised with one mean and scale from the training split
    (a convolution shares its weights across pixels)."""
    mean, std = X_tr.mean(), X_tr.std()
    return ((X_tr - mean) / std).reshape(-1, 1, 8, 8), ((X_te - mean) / std).reshape(-1, 1, 8, 8)


EXAMPLE = Example(
    spec=HERE / "digits_cnn.toml",
    module="digits_cnn",
    title="digits: conv 3x3x16, relu -> maxpool 2 -> dense 10 softmax, symgrad-generated NumPy",
    epochs=15,
    prepare=as_images,
)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the example; returns the per-epoch history, the final test accuracy and timings."""
    return run(
        EXAMPLE, parse_args(EXAMPLE, __doc__.split("\n\n")[0], output_folder("digits_cnn"), argv)
    )


if __name__ == "__main__":
    main()
