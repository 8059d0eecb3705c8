"""Stage 3 (derive), through a layer's named sub-expressions: one chain-rule sum.

A map with named sub-expressions (``let``: a norm's mean and variance) is derived as the
expression they stand for; the documents also walk its backward pass through the names,
last first (``dL/dvar``, ``dL/dmu``, then the input). Each of those steps is one sum over
the expressions that read the quantity: every reader's adjoint times its derivative (the
other names held fixed), summed over the free index where the reader has it, then
contracted (:mod:`symgrad.calculus.contraction`).
"""

from __future__ import annotations

from collections.abc import Iterable

import sympy as sp

from symgrad.calculus.contraction import contract
from symgrad.ir.indices import pull_out
from symgrad.ir.lets import distinct_dummies


def chain_through(
    readers: Iterable[tuple[sp.Expr, sp.Expr, bool]],
    wrt: sp.Expr,
    index: sp.Symbol,
    width: sp.Expr,
) -> tuple[sp.Expr, sp.Expr, tuple[tuple[sp.Expr, sp.Expr], ...]] | None:
    """``(chain rule, result, terms)`` of the adjoint of ``wrt`` from ``readers``
    (expression, its adjoint, whether it has the free ``index`` running to ``width``):
    ``terms`` pairs each term of the chain rule with its contraction. None where nothing
    reads ``wrt`` (a name, an element of a named vector, or of the layer's input)."""
    terms, chain = [], []
    base = wrt.base if isinstance(wrt, sp.Indexed) else wrt
    held = frozenset(s for s in wrt.free_symbols if isinstance(s, sp.Symbol) and s.is_integer)
    for expr, adj, indexed in readers:
        if not expr.has(base):
            continue
        # a sum whose index is the one of ``wrt`` (``sum_k (a[k] - mu)**2`` against
        # ``a[k]``) gets a fresh index first: the derivative reads the free ``k``
        expr = distinct_dummies(expr, held)
        d = sp.diff(expr, wrt)
        if d == 0:
            continue
        term = sp.Sum(adj * d, (index, 0, width - 1)) if indexed else adj * d
        chain.append(term)
        terms.append(contract(term))
    if not terms:
        return None
    result = pull_out(sp.factor_terms(sp.Add(*terms)))
    return sp.Add(*chain, evaluate=False), result, tuple(zip(chain, terms, strict=True))
