"""The NumPy a steps file may call: functions, methods and their meanings.

Elementwise functions come from the op registry (:mod:`symgrad.ir.ops`), so a function
symgrad derives with is one a learner may write; the rest are NumPy's array functions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from symgrad.ir.ops import OPS

#: Elementwise functions of one argument, by name, from the op registry (bare
#: ``sigmoid``, ``relu``, ``softplus`` ... as symgrad prints them).
REGISTRY_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    op.name: op.numeric for op in OPS.values() if op.arity == 1
}
#: np.<name>(x): elementwise functions of one array (the registry's NumPy spellings).
NP_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    **{op.np_name: op.numeric for op in OPS.values() if op.arity == 1 and op.np_name},
    "ones_like": np.ones_like,
    "zeros_like": np.zeros_like,
    "square": np.square,
    "copy": np.array,
    "log1p": np.log1p,
    "expm1": np.expm1,
}
#: np.<name>(a, b): the registry's two-argument ops (``np.maximum``) and products.
NP_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    **{op.np_name: op.numeric for op in OPS.values() if op.arity == 2 and op.np_name},
    "outer": np.outer,
    "dot": np.dot,
}
#: np.<name>(a, b) spelled as an operator: read as the operator itself.
NP_OPERATORS = {
    "matmul": "@",
    "multiply": "*",
    "subtract": "-",
    "add": "+",
    "divide": "/",
    "true_divide": "/",
    "power": "**",
}
NP_REDUCE = ("sum", "mean", "max", "min")
REDUCERS: dict[str, Callable[..., Any]] = {
    "sum": np.sum,
    "mean": np.mean,
    "max": np.max,
    "min": np.min,
}
#: Functions a learner may call bare, as symgrad's documents print them (a helper the
#: file defines with ``def`` takes the name's place).
BARE: dict[str, Callable[[np.ndarray], Any]] = {
    **REGISTRY_UNARY,
    "rowsum": lambda v: np.sum(v, axis=-1, keepdims=True),
    "colsum": lambda v: np.sum(v, axis=0),
}
#: Methods of one array that are elementwise functions (torch spellings: ``h.tanh()``): the
#: registry's ops whose torch spelling is ``torch.<name>(x)``, a tensor method too.
METHOD_UNARY = tuple(
    op.name for op in OPS.values() if op.arity == 1 and op.torch == f"torch.{op.name}({{0}})"
)
#: Methods that return their array unchanged as far as values go.
METHOD_SAME = ("copy", "clone", "detach", "float", "double")


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


def _dims(shape: tuple[Any, ...]) -> tuple[int, ...]:
    """``f(2, 3)``, ``f((2, 3))`` and ``f(a.shape)`` alike: the shape as integers."""
    dims = shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape
    return tuple(int(d) for d in dims)


def _reshape(v: Any, *shape: Any) -> np.ndarray:
    return np.reshape(np.asarray(v, dtype=float), _dims(shape))


def _transpose(v: Any, *axes: Any, **kw: Any) -> np.ndarray:
    """``np.transpose(v)``, ``v.transpose(1, 0)``, ``v.transpose((1, 0))``, ``axes=``."""
    order = kw.get("axes", _dims(axes) if axes else None)
    return np.transpose(np.asarray(v, dtype=float), order)


def _tensordot(a: Any, b: Any, axes: Any = 2) -> np.ndarray:
    if isinstance(axes, tuple) and len(axes) == 2:  # ([1], [0]) or [[1], [0]] or (1, 0)
        axes = tuple(tuple(x) if isinstance(x, tuple) else (x,) for x in axes)
    return np.tensordot(np.asarray(a, dtype=float), np.asarray(b, dtype=float), axes=axes)


def _indices(v: Any) -> np.ndarray:
    return np.asarray(v).astype(np.int64)


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
    "transpose": _transpose,
    "reshape": _reshape,
    "view": _reshape,
    "ones": lambda *shape: np.ones(_dims(shape)),
    "zeros": lambda *shape: np.zeros(_dims(shape)),
    "eye": lambda k: np.eye(int(k)),
    "arange": lambda k: np.arange(int(k)),
    "range": lambda k: np.arange(int(k)),
    "argmax": lambda v, axis=None: _indices(np.argmax(np.asarray(v), axis=axis)),
    "argmin": lambda v, axis=None: _indices(np.argmin(np.asarray(v), axis=axis)),
    "dot": lambda a, b: np.dot(np.asarray(a, dtype=float), np.asarray(b, dtype=float)),
    "moveaxis": lambda v, a, b: np.moveaxis(v, a, b),
    "flip": lambda v, axis=None: np.flip(np.asarray(v, dtype=float), axis=axis),
    "pad": lambda v, widths: np.pad(np.asarray(v, dtype=float), widths),
    "repeat": lambda v, k, axis=None: np.repeat(v, k, axis=axis),
    "tensordot": _tensordot,
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
    "flip",
    "pad",
    "repeat",
    "tensordot",
    "max",
    "min",
    "ones",
    "zeros",
    "eye",
    "arange",
    "argmax",
    "argmin",
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
    "range",
    *CONV_HELPER_NAMES,
)
#: Keyword arguments the general calls take.
CALL_KEYWORDS = ("axis", "keepdims", "keepdim", "dilation", "axes", "dim")
#: Array methods that are general calls, the array first (``a.dot(b)``, ``a.repeat(3, 0)``).
METHOD_CALLS = ("reshape", "view", "transpose", "dot", "repeat", "argmax", "argmin")


class _Shape(Exception):
    """A shape or domain problem while evaluating the learner's line (their mistake)."""
