"""What a stage does, read from its expression (a stage's ``kind`` is for display only)."""

from __future__ import annotations

import sympy as sp

from symgrad.ir.network import Stage


def is_elementwise(stage: Stage) -> bool:
    """Whether the stage's output at an index is a function of its input at the same index
    alone (an activation): no parameters, no other array, every subscript the stage's own
    index (or indices, for a conv net's (channel, height, width) quantities)."""
    if stage.params or stage.extra or stage.sample is not None:
        return False
    own = tuple(stage.indices) or (stage.index,)  # (c, h, w) for a conv net's activation
    reads = stage.body.atoms(sp.Indexed)
    if not reads or stage.body.has(sp.Sum):
        return False
    return all(a.base == stage.inp and tuple(a.indices) == own for a in reads)
