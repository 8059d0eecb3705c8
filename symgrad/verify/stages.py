"""What a stage does, read from its expression (a stage's ``kind`` is for display only)."""

from __future__ import annotations

import sympy as sp

from symgrad.ir.network import Stage


def is_elementwise(stage: Stage) -> bool:
    """Whether the stage's output ``i`` is a function of its input ``i`` alone (an
    activation): no parameters, no other array, every subscript the stage's own index."""
    if stage.params or stage.extra or stage.sample is not None or stage.indices:
        return False
    reads = stage.body.atoms(sp.Indexed)
    if not reads or stage.body.has(sp.Sum):
        return False
    return all(a.base == stage.inp and tuple(a.indices) == (stage.index,) for a in reads)
