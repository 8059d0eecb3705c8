"""Constant quantities broadcast to their array's full shape, in the working dtype.

A step whose batched expression folds to a number (a layer whose derivative is 0
everywhere, a loss with a constant gradient) prints as ``delta1 = 0``; the statements that
read it (``delta1.T @ X``) need an array. Every program a backend prints (the loss
program, the vector-Jacobian product, the Hessian- and Gauss-Newton-vector programs)
appends the target's ``full`` statement after such a value.
"""

from __future__ import annotations

import sympy as sp

from symgrad.backends.statement import Statement
from symgrad.backends.target import Target
from symgrad.calculus.layout import N
from symgrad.calculus.reverse import Step
from symgrad.ir.network import Network


def rows_of_shape(net: Network, shape: tuple) -> str:
    """Shape code of a per-sample quantity of ``shape``, with the sample axis first."""
    return f"(X.shape[0], {', '.join(str(net.size(w)) for w in shape)})"


def step_shape(net: Network, step: Step) -> str:
    """Shape code of a backward step's full batched value (a parameter gradient: the
    parameter's shape; a delta: one row per sample)."""
    if step.kind == "param":
        return str(tuple(net.size(w) for w in step.shape))
    shape = step.shape[1:] if step.shape and step.shape[0] == N else step.shape
    return rows_of_shape(net, shape)


def is_constant(expr: sp.Expr) -> bool:
    """Whether ``expr`` is a number (the batch size ``n`` aside)."""
    return not (expr.free_symbols - {N})


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
