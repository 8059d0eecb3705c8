"""symgrad: derive backpropagation symbolically and turn the derivation into code and documents.

The compiler's stages live in folders named for them, driven by :mod:`symgrad.pipeline`
(the output of each stage is the input of the next):

1. ``frontend``: TOML specs and ``file.py:NAME`` -> the component-form IR (``ir``)
2. ``ir``: networks as component-form equations; the op registry (``ir/ops.py``); naming
3. ``calculus``: reverse accumulation in index notation, contraction, forward values,
   the matrix form and the batched layout
4. ``backends``: the target-free program printed into templates (NumPy, ...)
5. ``documents``: LaTeX, Markdown, text and the graph
6. ``verify``: generated or hand-written code against numerics; "check my derivation"

The Python API: :func:`derive`, :func:`generate`, :func:`compile`, and the layer sugar
(:class:`Dense`, :class:`Map`, :func:`build`).
"""

from __future__ import annotations

__version__ = "0.1.0"

# First: in the symgrad command, Ctrl-C during the imports below is one line, not a traceback.
from symgrad import interrupts as _interrupts  # noqa: F401
from symgrad.calculus.reverse import Derivation, Forward, Step
from symgrad.documents import render as _render  # noqa: F401 - registers notebook display
from symgrad.errors import DerivationError, SpecError, SymgradError
from symgrad.ir.layers import (
    ACTIVATION_NAMES,
    LOSS_NAMES,
    Activation,
    BatchNorm,
    Dense,
    LayerNorm,
    Map,
    N,
    RMSNorm,
    a,
    build,
    i,
    j,
    k,
    m,
    n,
    s,
    t,
    x,
    y_s,
    yhat_s,
)
from symgrad.ir.network import Loss, Network, Param, Stage
from symgrad.learn.scalar import scalar
from symgrad.pipeline import compile, derive, generate

__all__ = [
    "ACTIVATION_NAMES",
    "LOSS_NAMES",
    "Activation",
    "BatchNorm",
    "Dense",
    "Derivation",
    "DerivationError",
    "Forward",
    "LayerNorm",
    "Loss",
    "Map",
    "N",
    "Network",
    "Param",
    "RMSNorm",
    "SpecError",
    "Stage",
    "Step",
    "SymgradError",
    "__version__",
    "a",
    "build",
    "compile",
    "derive",
    "generate",
    "i",
    "j",
    "k",
    "m",
    "n",
    "s",
    "scalar",
    "t",
    "x",
    "y_s",
    "yhat_s",
]
