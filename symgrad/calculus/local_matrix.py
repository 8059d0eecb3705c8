"""Stage 4 (matrix), for the documents: the matrix of a step's local Jacobian.

A step keeps its local derivative in components (``Step.local``: ``d out_i / d in_k`` in
the indices ``i, k``); :func:`jacobian_matrix` restates it as a matrix where it has one
(``W``, ``diag(sigma'(z))``, ``I``), term by term: a bracket ``[i = k]`` times a vector is
a diagonal matrix, an array read ``A[i, k]`` is that matrix, any other term goes through
the matrix-form translation. The step record answers it (``Step.local_matrix``), so no
document translates a formula itself.
"""

from __future__ import annotations

from functools import lru_cache

import sympy as sp

from symgrad.calculus.layout import BATCHED_OPS
from symgrad.calculus.matrix_form import Mat, MatVec, Outer, SumAll, TMatVec, Vec, to_matrix
from symgrad.errors import DerivationError

I = sp.Symbol("i", integer=True)  # noqa: E741 - the chain rule's index
K = sp.Symbol("k", integer=True)


class Diag(sp.Function):
    """``diag(v)``: the diagonal matrix of a vector (a diagonal Jacobian, for display)."""

    nargs = 1


def _vector_valued(e: sp.Basic) -> bool:
    """Whether ``e`` is a vector or a matrix rather than a scalar."""
    if isinstance(e, Vec | Mat):
        return True
    if isinstance(e, SumAll):
        return False
    if isinstance(e, (MatVec, TMatVec, Outer, *BATCHED_OPS)):
        return True
    return any(_vector_valued(a) for a in e.args)


_D = sp.Dummy("delta_ik")


def _delta_term_matrix(t: sp.Expr) -> sp.Expr | None:
    """The matrix of a term that reads the bracket ``[i = k]``: its coefficient (on the
    diagonal, where ``k = i``) as a diagonal matrix, plus the matrix of the part without
    the bracket (``([i = k] - 1/n) g_i`` is ``diag(g) - g 1^T / n``, not ``diag(g (1 -
    1/n))``). None where the bracket is not a linear factor."""
    td = t.xreplace({sp.KroneckerDelta(I, K): _D})
    if _D in sp.Mul.make_args(td):  # a factor: the common case, kept as it is written
        coef, rest = td / _D, sp.S.Zero
    else:
        td = sp.expand(td, deep=False)
        coef, rest = sp.diff(td, _D), td.xreplace({_D: sp.S.Zero})
    if coef.has(_D):
        return None
    m = to_matrix(coef.xreplace({K: I}), (I,))
    diag = Diag(m) if _vector_valued(m) else m * Mat("I")
    if rest == 0:
        return diag
    return diag + to_matrix(sp.factor_terms(rest), (I, K))


@lru_cache(maxsize=1024)
def jacobian_matrix(local: sp.Expr, diagonal: bool = False) -> sp.Expr | None:
    """The matrix ``[d out_i / d in_k]`` of a local derivative in i, k, if it has one
    (``diagonal``: the local Jacobian is ``[i = k]`` times a vector; memoised)."""
    kd = sp.KroneckerDelta(I, K)
    terms = []
    try:
        if diagonal:
            return _delta_term_matrix(local)
        for t in sp.Add.make_args(local):
            if isinstance(t, sp.Indexed) and len(t.indices) == 2:
                if t.indices != (I, K):
                    return None
                terms.append(Mat(str(t.base.label)))
            elif t.has(kd):
                m = _delta_term_matrix(t)
                if m is None:
                    return None
                terms.append(m)
            else:
                terms.append(to_matrix(t, (I, K)))
    except DerivationError:  # no matrix form: shown in components only
        return None
    return sp.Add(*terms)


def matrix_or_none(expr: sp.Expr | None, free: tuple[sp.Symbol, ...]) -> sp.Expr | None:
    """``to_matrix(expr, free)``, or None where ``expr`` is None or has no matrix form."""
    if expr is None:
        return None
    try:
        return to_matrix(expr, free)
    except DerivationError:
        return None


__all__ = ["Diag", "jacobian_matrix", "matrix_or_none"]
