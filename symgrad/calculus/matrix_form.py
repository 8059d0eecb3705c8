"""Stage 4, matrix form: translate contracted component expressions into vector algebra.

The vocabulary is small and is what textbooks use (per sample, column vectors):

    Sum_j W[i,j] v[j]   ->  MatVec(W, v)     W v
    Sum_i W[i,k] v[i]   ->  TMatVec(W, v)    W^T v
    u[p] * v[q]         ->  Outer(u, v)      u v^T
    Sum_i v[i]          ->  SumAll(v)        1^T v   (u^T v when v = u * w)
    v[i] * w[i]         ->  v * w            the Hadamard product (elementwise algebra)

A ``Vec`` symbol is a per-sample vector (in batched code a matrix with samples as rows),
a ``Mat`` symbol a parameter matrix. Everything elementwise stays a plain SymPy
expression, so the LaTeX and NumPy printers only add a rule per operator above. The
batched row-major layout is decided in ``layout.py``, not here.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import sympy as sp

from symgrad.calculus.reverse import Derivation
from symgrad.errors import DerivationError


class Vec(sp.Symbol):
    """A per-sample vector named after an IndexedBase (a1, delta2, b1)."""


class Mat(sp.Symbol):
    """A matrix named after a two-index IndexedBase (W2)."""


class MatVec(sp.Function):
    """``W v``."""

    nargs = 2


class TMatVec(sp.Function):
    """``W^T v``."""

    nargs = 2


class Outer(sp.Function):
    """``u v^T``."""

    nargs = 2


class SumAll(sp.Function):
    """``1^T v``: the sum of a vector's entries (a scalar per sample)."""

    nargs = 1


MATRIX_OPS = (MatVec, TMatVec, Outer, SumAll)


def matrix_pass(d: Derivation) -> Derivation:
    """The matrix-form stage, over a whole derivation: every forward equation and every
    step gets its per-sample matrix form (component expressions are left as they are)."""
    forward = tuple(replace(f, matrix=to_matrix(f.component, (f.stage.index,))) for f in d.forward)
    steps = tuple(replace(s, matrix=to_matrix(s.component, s.indices)) for s in d.steps)
    return replace(d, forward=forward, steps=steps)


@lru_cache(maxsize=4096)
def to_matrix(expr: sp.Expr, free: tuple[sp.Symbol, ...]) -> sp.Expr:
    """The matrix form of a component expression with free indices ``free`` (memoised:
    documents and code generation ask for the same translations many times)."""
    if len(free) == 0:
        return _scalar(expr)
    if len(free) == 1:
        return _vec(expr, free[0])
    if len(free) == 2:
        p, q = free
        terms = []
        for t in sp.Add.make_args(sp.expand_mul(expr) if expr.is_Mul is False else expr):
            fs = sp.Mul.make_args(t)
            if any(f.has(p) and f.has(q) for f in fs):
                raise DerivationError(f"no matrix form for {t}: a factor depends on both {p}, {q}")
            u = sp.Mul(*[f for f in fs if f.has(p)])
            v = sp.Mul(*[f for f in fs if f.has(q)])
            c = sp.Mul(*[f for f in fs if not f.has(p) and not f.has(q)])
            terms.append(_scalar(c) * Outer(_vec(u, p), _vec(v, q)))
        return sp.Add(*terms)
    raise DerivationError(f"no matrix form for a gradient with {len(free)} free indices")


def _vec(e: sp.Expr, k: sp.Symbol) -> sp.Expr:
    if isinstance(e, sp.Indexed):
        if e.indices == (k,):
            return Vec(str(e.base.label))
        raise DerivationError(f"no matrix form for {e} (free index {k})")
    if isinstance(e, sp.Sum):
        if not e.has(k):
            return _scalar(e)
        j, body = _outer(e)
        out = []
        for t in sp.Add.make_args(body):
            if not t.has(k):
                out.append(SumAll(_vec(t, j)))
                continue
            fs = sp.Mul.make_args(t)
            outside = [f for f in fs if not f.has(j)]
            if outside:  # factors free of the summed index leave the sum
                inside = sp.Mul(*[f for f in fs if f.has(j)])
                out.append(_vec(sp.Mul(*outside), k) * _vec(sp.Sum(inside, (j, 0, _hi(e))), k))
                continue
            mats = [f for f in fs if isinstance(f, sp.Indexed) and len(f.indices) == 2]
            rest = [f for f in fs if f not in mats]
            if len(mats) != 1 or any(f.has(k) for f in rest):
                raise DerivationError(f"no matrix form for the contraction {e}")
            M = mats[0]
            W = Mat(str(M.base.label))
            v = _vec(sp.Mul(*rest), j)
            if M.indices == (j, k):
                out.append(TMatVec(W, v))
            elif M.indices == (k, j):
                out.append(MatVec(W, v))
            else:
                raise DerivationError(f"no matrix form for {M} in {e}")
        return sp.Add(*out)
    if isinstance(e, sp.KroneckerDelta):
        raise DerivationError(f"no matrix form for {e}")
    if not e.args:
        if e == k:
            raise DerivationError(f"no matrix form: the index {k} is used as a value")
        return e
    return e.func(*[_vec(a, k) for a in e.args])


def _hi(e: sp.Sum) -> sp.Expr:
    return e.limits[-1][2]


def _outer(e: sp.Sum) -> tuple[sp.Symbol, sp.Expr]:
    """The outermost summation index of ``e`` and the summand over it (SymPy merges nested
    Sums into one with several limits, innermost first)."""
    j = e.limits[-1][0]
    body = sp.Sum(e.function, *e.limits[:-1]) if len(e.limits) > 1 else e.function
    return j, body


def _scalar(e: sp.Expr) -> sp.Expr:
    if isinstance(e, sp.Sum):
        j, body = _outer(e)
        return SumAll(_vec(body, j))
    if isinstance(e, sp.Indexed):
        raise DerivationError(f"no matrix form for {e} (an index is left free)")
    if not e.args:
        return e
    return e.func(*[_scalar(a) for a in e.args])
