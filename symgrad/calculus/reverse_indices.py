"""Stage 3 (derive), reverse accumulation: the indices of a stage's output and input elements.

The free indices a stage's output component is stated in (one per axis, the sample index
first for a stage that couples the samples), the indices of one input element, their
display names, and a tensor stage's array form (``W ⋆ a``, ``conv_form.py``).
"""

from __future__ import annotations

import sympy as sp

from symgrad.calculus.conv_form import tensor_form
from symgrad.ir.indices import BATCH, K, P, Q, R, T, idx
from symgrad.ir.network import Stage

_PARAM_IDX = (P, Q, R, idx("s_"))
#: Indices of an input element of a (channels, [height,] width) quantity, and their names.
_TENSOR_IDX = (K, idx("k2_"), idx("k3_"))
_TENSOR_NAMES = {2: ("c", "w"), 3: ("c", "h", "w")}


def _out_index(stage: Stage) -> tuple[sp.Symbol, ...]:
    """The free indices of a stage's output component (one per axis; the sample index
    first for a stage that couples the samples)."""
    if stage.sample is not None:
        return (stage.sample, stage.index)
    return stage.indices or (stage.index,)


def _out_limits(stage: Stage) -> list[tuple[sp.Symbol, int, sp.Expr]]:
    shape = (BATCH, stage.width) if stage.sample is not None else stage.shape or (stage.width,)
    return [(ix, 0, w - 1) for ix, w in zip(_out_index(stage), shape, strict=True)]


def _in_index(stage: Stage) -> tuple[sp.Symbol, ...]:
    """The indices of one input element (``K`` for a vector, ``(T, K)`` for a stage that
    couples the samples: input element ``k`` of sample ``t``)."""
    if stage.sample is not None:
        return (T, K)
    return _TENSOR_IDX[: len(stage.in_shape)] if stage.in_shape else (K,)


def _tensor_names(n: int) -> tuple[str, ...]:
    """Display names of the indices of an input element with ``n`` axes."""
    return _TENSOR_NAMES.get(n, ("c", "h", "w")[-n:] if n <= 3 else ())


def _out_names(stage: Stage) -> tuple[str, ...]:
    """The display names of a stage's output indices."""
    if stage.sample is not None:
        return ("s", "i")
    if dict(stage.attrs).get("form") == "component" and stage.indices:
        return tuple(str(ix) for ix in stage.indices)  # a tensor map's own index names
    return _tensor_names(len(stage.indices)) if stage.indices else ("i",)


def _is_tensor(stage: Stage) -> bool:
    return bool(stage.indices or stage.in_shape)


def _array_form(
    stage: Stage, expr: sp.Expr, free: tuple, shape: tuple, param: bool = False
) -> sp.Expr | None:
    """The conv layers' array form of a tensor stage's expression (``W ⋆ a``); None for a
    user's map, which keeps its component form (lowered as a whole, ``calculus/einsum.py``)."""
    if not _is_tensor(stage) or dict(stage.attrs).get("form") == "component":
        return None
    return tensor_form(expr, free, shape, param=param)
