"""symgrad: derive backpropagation symbolically and turn the derivation into code and documents.

The pipeline, one module per stage (the output of each stage is the input of the next):

1. ``network``/``layers``/``losses``: spec or Python API -> component-form IR
2. ``derivation``: reverse accumulation in index notation (``contraction``, ``forward_values``)
3. ``matrix_form``: contracted component form -> vector algebra (``layout``: batched rows)
4. printers and templates: NumPy code (``codegen``), LaTeX / Markdown (``render_doc``)
5. ``verify``: generated code against finite differences and autograd
"""

from __future__ import annotations

__version__ = "0.1.0"

from symgrad.calculus.reverse import Derivation, Forward, Step
from symgrad.documents import render as _render  # noqa: F401 - registers notebook display
from symgrad.errors import DerivationError, SpecError, SymgradError
from symgrad.ir.layers import (
    ACTIVATION_NAMES,
    LOSS_NAMES,
    Activation,
    Dense,
    LayerNorm,
    Map,
    RMSNorm,
    a,
    build,
    i,
    j,
    k,
    m,
    n,
    x,
    y_s,
    yhat_s,
)
from symgrad.ir.network import Loss, Network, Param, Stage
from symgrad.pipeline import compile, derive, generate

__all__ = [
    "ACTIVATION_NAMES",
    "LOSS_NAMES",
    "Activation",
    "Dense",
    "Derivation",
    "DerivationError",
    "Forward",
    "LayerNorm",
    "Loss",
    "Map",
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
    "x",
    "y_s",
    "yhat_s",
]
