"""Printing stage, the loss value: a batch sum of a product as one dot product.

The program sums each loss statement ``l<k>`` over the batch (``Total(l<k>)``). Where a
statement is a product ``A * B`` of two arrays of the full batched shape (the targets
times a log-probability, say), the statement keeps ``B`` and the value reads
``vdot(A, l<k>)``: one BLAS dot product instead of an elementwise product and a sum.
The choice comes from the shapes of the factors, never from what the loss is called.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp

from symgrad.calculus.stability import Total


class VDot(sp.Function):
    """The sum over every element of ``a * b`` (two arrays of one shape)."""

    nargs = 2


def dot_loss_terms(
    items: list[tuple[str, sp.Expr, tuple[str, ...]]],
    loss: range,
    total: sp.Expr,
    is_full: Callable[[sp.Expr], bool],
) -> tuple[list[tuple[str, sp.Expr, tuple[str, ...]]], sp.Expr]:
    """``items`` and ``total`` with every loss statement (positions ``loss``) of the form
    ``c * A * B`` (``c`` a number, ``A`` an array variable of the full shape, ``B`` a full
    expression) stored as ``B`` and summed as ``c * VDot(A, l<k>)``."""
    out = list(items)
    for k in loss:
        target, expr, comment = out[k]
        sym = sp.Symbol(target)
        if Total(sym) not in total.atoms(Total):
            continue
        coeff, rest = expr.as_coeff_Mul()
        factors = sp.Mul.make_args(rest)
        pick = next(
            (f for f in factors if (f.is_Symbol or isinstance(f, sp.Dummy)) and is_full(f)),
            None,
        )
        if pick is None or len(factors) < 2:
            continue
        other = sp.Mul(*[f for f in factors if f is not pick])
        if not is_full(other) or other.is_Symbol:
            continue  # a row or a column (broadcast), or a bare variable: summed as before
        out[k] = (target, other, comment)
        total = total.xreplace({Total(sym): coeff * VDot(pick, sym)})
    return out, total
