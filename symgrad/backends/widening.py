"""Constant quantities broadcast to their array's full shape, in the working dtype.

A step whose batched expression folds to a number (a layer whose derivative is 0
everywhere, a loss with a constant gradient) prints as ``delta1 = 0``; the statements that
read it (``delta1.T @ X``) need an array. Every program a backend prints (the loss
program, the vector-Jacobian product, the Hessian- and Gauss-Newton-vector programs)
appends the target's ``full`` statement after such a value.
"""

from __future__ import annotations

from symgrad.backends.statement import Statement
from symgrad.backends.target import Target


def widen(blocks: list[list[Statement]], shapes: list[str | None], target: Target) -> None:
    """Append, to each printed block with a shape, the statement broadcasting its value to
    that shape in the working dtype (in place)."""
    for block, shape in zip(blocks, shapes, strict=True):
        if shape is not None and block:
            last = block[-1]
            block.append(
                Statement(
                    last.target,
                    target.full.format(shape=shape, value=last.target),
                    uses=frozenset({last.target, "X"}),
                )
            )
