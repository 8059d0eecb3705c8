"""symgrad: derive backpropagation symbolically and turn the derivation into code and documents.

The compiler's stages live in folders named for them and are driven by
:mod:`symgrad.pipeline`, whose docstring lists them (parse, IR, derive, matrix form, lower,
print, render, verify): the output of each stage is the input of the next.

The Python API: :func:`derive`, :func:`generate`, :func:`compile`, and the layer sugar
(:class:`Dense`, :class:`Map`, :func:`build`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# First: in the symgrad command, Ctrl-C during the imports is one line, not a traceback.
from symgrad import interrupts as _interrupts  # noqa: F401
from symgrad._version import __version__

#: Public name -> the module that defines it. ``import symgrad`` stays cheap (the command
#: line's start-up imports only what a command needs); the first public name a program
#: reads loads the API, and with it the documents' notebook display.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("Derivation", "Forward", "Step"), "symgrad.calculus.reverse"),
    **dict.fromkeys(("DerivationError", "SpecError", "SymgradError"), "symgrad.errors"),
    **dict.fromkeys(
        (
            "ACTIVATION_NAMES",
            "LOSS_NAMES",
            "Activation",
            "BatchNorm",
            "Dense",
            "LayerNorm",
            "Map",
            "N",
            "RMSNorm",
            "a",
            "build",
            "i",
            "j",
            "k",
            "m",
            "n",
            "s",
            "t",
            "x",
            "y_s",
            "yhat_s",
        ),
        "symgrad.ir.layers",
    ),  # fmt: skip
    **dict.fromkeys(("Loss", "Network", "Param", "Stage"), "symgrad.ir.network"),
    **dict.fromkeys(("compile", "derive", "generate"), "symgrad.pipeline"),
    "scalar": "symgrad.learn.scalar",
    "load_c": "symgrad.backends.c_loader",
}

if TYPE_CHECKING:
    from symgrad.backends.c_loader import load_c
    from symgrad.calculus.reverse import Derivation, Forward, Step
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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'symgrad' has no attribute '{name}'")
    importlib.import_module("symgrad.documents.render")  # registers the notebook display
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


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
    "load_c",
    "m",
    "n",
    "s",
    "scalar",
    "t",
    "x",
    "y_s",
    "yhat_s",
]
