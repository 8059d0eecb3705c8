"""Train a digit classifier with nothing but a symgrad-generated NumPy module.

The network is ``digits.toml`` (64 pixels -> 64 tanh -> 10 softmax, cross-entropy).
This script derives it with symgrad, writes the generated module (with its Adam step)
to ``OUT/digits_net.py``, imports that file, and trains in a plain minibatch loop that
calls only the module's ``loss_and_grads`` and ``step``. The data is scikit-learn's
bundled 8x8 digits (1797 images, no download). It saves ``OUT/training.png`` (loss and
accuracy per epoch).

    python examples/digits/train.py         # 30 epochs, into symgrad-output/digits/
    python examples/digits/train.py --epochs 5 --out /tmp/digits --seed 1

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


def standardise(X_tr: np.ndarray, X_te: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel standardised with the training split's statistics."""
    mean, std = X_tr.mean(axis=0), X_tr.std(axis=0)
    std[std == 0] = 1.0  # constant border pixels
    return (X_tr - mean) / std, (X_te - mean) / std


EXAMPLE = Example(
    spec=HERE / "digits.toml",
    module="digits_net",
    title="digits: 64 -> 64 tanh -> 10 softmax, trained by symgrad-generated NumPy",
    epochs=30,
    prepare=standardise,
)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the example; returns the per-epoch history, the final test accuracy and timings."""
    return run(
        EXAMPLE, parse_args(EXAMPLE, __doc__.split("\n\n")[0], output_folder("digits"), argv)
    )


if __name__ == "__main__":
    main()
