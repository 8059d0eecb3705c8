"""The NumPy a steps file may call: functions, methods and their meanings.

Elementwise functions come from the op registry (:mod:`symgrad.ir.ops`), so a function
symgrad derives with is one a learner may write; the rest are NumPy's array functions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

#: np.<name>(x): elementwise functions of one array.
NP_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "tanh": np.tanh,
    "cosh": np.cosh,
    "sinh": np.sinh,
    "sin": np.sin,
    "cos": np.cos,
    "sign": np.sign,
    "ones_like": np.ones_like,
    "zeros_like": np.zeros_like,
    "square": np.square,
}
NP_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "maximum": np.maximum,
    "minimum": np.minimum,
    "outer": np.outer,
    "dot": np.dot,
}
NP_REDUCE = ("sum", "mean", "max", "min")
REDUCERS: dict[str, Callable[..., Any]] = {
    "sum": np.sum,
    "mean": np.mean,
    "max": np.max,
    "min": np.min,
}
#: Functions a learner may call bare, as symgrad's documents print them (a helper's
#: definition in the file is not read: these are the meanings).
BARE: dict[str, Callable[[np.ndarray], Any]] = {
    "sigmoid": lambda v: 0.5 + 0.5 * np.tanh(0.5 * v),
    "step": lambda v: (v > 0).astype(float),
    "rowsum": lambda v: np.sum(v, axis=-1, keepdims=True),
    "colsum": lambda v: np.sum(v, axis=0),
    **{k: f for k, f in NP_UNARY.items() if k not in ("ones_like", "zeros_like", "square")},
}


def _share(v: np.ndarray, axis: int, pick: Callable[..., np.ndarray]) -> np.ndarray:
    # the arg-max (arg-min) indicator along an axis, ties sharing it (symgrad's share_max)
    hit = (v == pick(v, axis=axis, keepdims=True)).astype(float)
    return hit / hit.sum(axis=axis, keepdims=True)


def _einsum(spec: str, *ops: np.ndarray) -> np.ndarray:
    if not isinstance(spec, str) or not re.fullmatch(r"[A-Za-z,.]*(->[A-Za-z.]*)?", spec):
        raise ValueError('einsum takes its subscripts first, as in einsum("ij,ij->i", a, b)')
    return np.einsum(spec, *[np.asarray(o, dtype=float) for o in ops])


def _reduce_fn(fn: Callable[..., Any]) -> Callable[..., Any]:
    def reduce(v: Any, axis: Any = None, keepdims: bool = False) -> Any:
        return fn(np.asarray(v, dtype=float), axis=axis, keepdims=keepdims)

    return reduce


def _reshape(v: Any, *shape: Any) -> np.ndarray:
    dims = shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape
    return np.reshape(np.asarray(v, dtype=float), tuple(int(d) for d in dims))


#: The generated module's helpers a line may call (as ``derive --form matrix`` and the
#: generated code spell a conv net's steps).
CONV_HELPER_NAMES = (
    "_windows",
    "_correlate",
    "_correlate_weight_grad",
    "_correlate_input_grad",
    "_sum_pool",
    "_sum_pool_grad",
    "_max_pool",
    "_max_pool_grad",
)

#: Functions of several arguments (and keywords), callable bare as symgrad prints its
#: component fallbacks (``einsum("ab,ab->a", a3, da3)``, ``sum(e, axis=2)``,
#: ``share_max(a1, axis=1)``) or as ``np.<name>``.
CALLS: dict[str, Callable[..., Any]] = {
    "einsum": _einsum,
    "sum": _reduce_fn(np.sum),
    "max": _reduce_fn(np.max),
    "min": _reduce_fn(np.min),
    "share_max": lambda v, axis: _share(np.asarray(v, dtype=float), axis, np.max),
    "share_min": lambda v, axis: _share(np.asarray(v, dtype=float), axis, np.min),
    "broadcast_to": lambda v, shape: np.broadcast_to(v, shape),
    "transpose": lambda v, axes=None: np.transpose(v, axes),
    "reshape": _reshape,
    "moveaxis": lambda v, a, b: np.moveaxis(v, a, b),
    "pad": lambda v, widths: np.pad(np.asarray(v, dtype=float), widths),
    "repeat": lambda v, k, axis=None: np.repeat(v, k, axis=axis),
    "tensordot": lambda a, b, axes=2: np.tensordot(a, b, axes=axes),
    "sliding_window_view": lambda v, shape, axis=None: np.lib.stride_tricks.sliding_window_view(
        v, shape, axis=axis
    ),
}
NP_CALLS = (
    "einsum",
    "broadcast_to",
    "transpose",
    "reshape",
    "moveaxis",
    "pad",
    "repeat",
    "tensordot",
    "max",
    "min",
)
BARE_CALLS: tuple[str, ...] = (
    "einsum",
    "sum",
    "max",
    "min",
    "share_max",
    "share_min",
    "broadcast_to",
    "transpose",
    "sliding_window_view",
    *CONV_HELPER_NAMES,
)
#: Keyword arguments the general calls take.
CALL_KEYWORDS = ("axis", "keepdims", "dilation", "axes")


class _Shape(Exception):
    """A shape or domain problem while evaluating the learner's line (their mistake)."""
