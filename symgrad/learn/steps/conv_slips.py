"""A conv net's classic slips: the kernel's flip, a bias summed over the wrong axes, and
a flatten undone in the wrong order.

The first two are edits of the learner's own line (each edit undoes one slip, tried like
the dense slips in :mod:`~symgrad.learn.steps.variants`); the flatten order is read off
the values (the right values, permuted as a channel-last flatten would have them).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from itertools import combinations
from typing import Any

import numpy as np

from symgrad.ir.network import Network
from symgrad.learn.steps.parse import LearnerLine
from symgrad.learn.steps.printer import unparse

_REVERSED = ("slice", None, None, ("neg", ("num", 1.0)))
_WHOLE = ("slice", None, None, None)


def kernels(net: Network) -> dict[str, int]:
    """The parameters with spatial axes (a conv kernel ``(out, in, kh, kw)``): name -> the
    number of axes."""
    return {p.name: len(net.shape(p)) for p in net.params if len(net.shape(p)) >= 3}


def _flipped(name: str, ndim: int) -> tuple:
    """``W1[:, :, ::-1, ::-1]``: the kernel turned by 180 degrees (every spatial axis)."""
    return ("index", ("name", name), (_WHOLE, _WHOLE, *[_REVERSED] * (ndim - 2)))


def _unflipped(e: tuple) -> tuple | None:
    """The array a flip reads (``W1[:, :, ::-1, ::-1]``, ``np.flip(W1, (2, 3))``), or None
    where ``e`` is no flip."""
    if e[0] == "index" and all(i in (_WHOLE, _REVERSED) for i in e[2]):
        return e[1] if _REVERSED in e[2] else None
    if e[0] == "call" and e[1] == "flip" and len(e[2]) >= 1:
        return e[2][0]
    return None


def _flip_variants(e: Any, conv: Mapping[str, int]) -> Iterator[tuple[tuple, str]]:
    """Single edits of the tree that add or remove a kernel's flip."""
    if not isinstance(e, tuple) or not e or not isinstance(e[0], str):
        return
    base = _unflipped(e)
    if base is not None:
        yield (
            base,
            (
                f"a flipped kernel (a convolution where the correlation belongs): "
                f"{unparse(e)} should be {unparse(base)}; the layer correlates, so this "
                "gradient turns nothing by 180 degrees"
            ),
        )
        return
    if e[0] == "name" and e[1] in conv:
        flipped = _flipped(e[1], conv[e[1]])
        yield (
            flipped,
            (
                f"the kernel not flipped (a correlation where the convolution belongs): the "
                f"error goes back to the input through {e[1]} turned by 180 degrees, "
                f"{unparse(flipped)}; yours uses {e[1]} as it is"
            ),
        )
        return
    for k, child in enumerate(e):
        if isinstance(child, tuple) and child and isinstance(child[0], str):
            for v, why in _flip_variants(child, conv):
                yield (*e[:k], v, *e[k + 1 :]), why
        elif isinstance(child, tuple) and child and isinstance(child[0], tuple):
            for j, arg in enumerate(child):
                for v, why in _flip_variants(arg, conv):
                    yield (*e[:k], (*child[:j], v, *child[j + 1 :]), *e[k + 1 :]), why


def _axes(axis: Any) -> tuple[int, ...] | None:
    if isinstance(axis, int):
        return (axis,)
    if isinstance(axis, tuple) and all(isinstance(a, int) for a in axis):
        return axis
    return None


def _axis_words(new: tuple[int, ...], old: tuple[int, ...]) -> str:
    shown_old = old[0] if len(old) == 1 else old
    if len(new) >= 3 and new == (0, *range(2, len(new) + 1)):  # (0, 2, 3): all but channels
        return (
            f"the bias gradient summed over the wrong axes: a conv bias is added at every "
            f"position of every sample, so sum over the samples and every position, "
            f"axis={new}, keeping only the channel axis 1; yours sums over axis={shown_old}"
        )
    shown = new[0] if len(new) == 1 else new
    return f"summed over the wrong axes: sum over axis={shown}, not axis={shown_old}"


def _axis_variants(e: Any) -> Iterator[tuple[tuple, str]]:
    """Single edits of the tree that sum a reduction over other axes (of at most 5)."""
    if not isinstance(e, tuple) or not e or not isinstance(e[0], str):
        return
    if e[0] == "reduce":
        old = _axes(e[3].get("axis"))
        if old is not None:
            for size in sorted(range(1, 5), key=lambda n: abs(n - len(old))):
                for new in combinations(range(5), size):
                    if new != tuple(sorted(old)):
                        kw = {**e[3], "axis": new if size > 1 else new[0]}
                        yield ("reduce", e[1], e[2], kw), _axis_words(new, old)
    for k, child in enumerate(e):
        if isinstance(child, tuple) and child and isinstance(child[0], str):
            for v, why in _axis_variants(child):
                yield (*e[:k], v, *e[k + 1 :]), why


def flip_edits(group: list[LearnerLine], net: Network) -> Iterator[tuple[list[LearnerLine], str]]:
    """The step's lines with a kernel's flip added or removed (tried before the dense
    slips: a conv step's shapes let a transpose of the kernel fit by chance)."""
    conv = kernels(net)
    if not conv:
        return
    for k, s in enumerate(group):
        for variant, why in _flip_variants(s.expr, conv):
            yield [*group[:k], replace(s, expr=variant), *group[k + 1 :]], why


def axis_edits(group: list[LearnerLine]) -> Iterator[tuple[list[LearnerLine], str]]:
    """The step's lines with one reduction summed over other axes (tried after the dense
    slips, which name a single wrong axis in their own words)."""
    for k, s in enumerate(group):
        for variant, why in _axis_variants(s.expr):
            yield [*group[:k], replace(s, expr=variant), *group[k + 1 :]], why


def flatten_order(gots: list[Any], wants: list[np.ndarray]) -> str | None:
    """A flatten undone channel-last where the network flattens channel-first (or the
    reverse): the learner's values are the right ones in the other order."""
    w0 = wants[0]
    if w0.ndim < 3 or w0.shape[1] == 1 or int(np.prod(w0.shape[2:])) == 1:
        return None
    n, c, spatial = w0.shape[0], w0.shape[1], w0.shape[2:]
    last = (n, *spatial, c)
    shape = f"({', '.join(['N', *map(str, spatial), str(c)])})"
    right = f"({', '.join(['N', str(c), *map(str, spatial)])})"
    tail = (
        f"the network flattens channel-first (the channel slowest, then each position), so "
        f"reshape the flat gradient to {right} directly, with no transpose"
    )
    gs = [np.asarray(g, dtype=float) for g in gots]
    if len(gs) != len(wants):
        return None
    pairs = list(zip(gs, wants, strict=True))
    if last != w0.shape and all(g.shape == last and _close(g, w.reshape(last)) for g, w in pairs):
        return f"the flatten order: yours unflattens to {shape}, channel-last; {tail}"
    if not all(g.shape == w.shape for g, w in pairs) or all(_close(g, w) for g, w in pairs):
        return None
    for undo in (True, False):
        if all(_close(g, _channel_last(w, undo)) for g, w in pairs):
            return (
                f"the flatten order: yours unflattens channel-last, to {shape}, and moves "
                f"the channels to axis 1; {tail}"
            )
    return None


def _close(got: np.ndarray, want: np.ndarray) -> bool:
    return bool(np.allclose(got, want, rtol=1e-7, atol=1e-12))


def _channel_last(w: np.ndarray, undo: bool) -> np.ndarray:
    """``w``'s values as a channel-last flatten unflattened channel-first would place them
    (``undo``: the learner reshaped to (N, H, W, C) and moved the channels to axis 1), or
    the inverse permutation."""
    n, c, spatial = w.shape[0], w.shape[1], w.shape[2:]
    if undo:
        return np.moveaxis(w.reshape(n, -1).reshape(n, *spatial, c), -1, 1)
    return np.moveaxis(w, 1, -1).reshape(n, -1).reshape(w.shape)
