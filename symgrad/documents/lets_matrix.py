"""A stage's matrix forms written through a name that is linear in the input, for display.

Layer norm names ``xhat = (a - mu) / sqrt(sigma2 + eps)``. Written in the names, its
matrix forms still read the input ``a`` where no definition matches (``2 a - 2 mu`` in an
outer product, ``sum(a * g)`` in the backward pass). Each such ``a`` is ``mu + xhat
sqrt(sigma2 + eps)``; once substituted, the sums and outer products are opened (they are
linear: a factor that is one number per sample comes out of them) and the terms in
``mu`` cancel, leaving the textbook matrix forms ``outer(gamma xhat, xhat) / (n sqrt(sigma2
+ eps))`` and ``(g gamma - sum(g gamma)/n - xhat sum(g gamma xhat)/n) / sqrt(sigma2 +
eps)``. The result is kept only where it reads no input and is shorter.

Display only, and equal to what it rewrites: a substitution of a name's own definition and
the linearity of a sum.
"""

from __future__ import annotations

from collections.abc import Iterator

import sympy as sp

from symgrad.calculus.layout import RowSum
from symgrad.calculus.matrix_form import Outer, SumAll, Vec

#: Linear in each argument; a per-sample number comes out of them.
_LINEAR = (SumAll, RowSum, Outer)


def _is_number_per_sample(e: sp.Expr, vectors: frozenset[sp.Symbol]) -> bool:
    """Whether ``e`` is one number per sample: it reads no vector (a sum of one is a number)."""
    bare = e.replace(lambda x: isinstance(x, SumAll | RowSum), lambda x: sp.Symbol("_sum"))
    return not any(isinstance(s, Vec) or s in vectors for s in bare.free_symbols)


def _split(e: sp.Expr, vectors: frozenset[sp.Symbol]) -> list[tuple[sp.Expr, sp.Expr]]:
    """``e`` as a sum of (number per sample, vector) pairs; the vector 1 where a term has
    none (the ones vector of an outer product's argument)."""
    out = []
    for term in sp.Add.make_args(sp.expand(e)):
        factors = sp.Mul.make_args(term)
        number = [f for f in factors if _is_number_per_sample(f, vectors)]
        vector = [f for f in factors if not _is_number_per_sample(f, vectors)]
        out.append((sp.Mul(*number), sp.Mul(*vector)))
    return out


def _opened(e: sp.Expr, vectors: frozenset[sp.Symbol]) -> sp.Expr:
    """Every sum and outer product split over its terms, numbers per sample taken out."""

    def open_one(x: sp.Expr) -> sp.Expr:
        if isinstance(x, Outer):
            u, v = x.args
            return sp.Add(
                *(
                    cu * cv * Outer(vu, vv)
                    for cu, vu in _split(u, vectors)
                    for cv, vv in _split(v, vectors)
                )
            )
        (body,) = x.args
        pieces = _split(body, vectors)
        if any(vec == 1 for _, vec in pieces):  # a number summed over the width: left whole
            return x
        return sp.Add(*(c * x.func(vec) for c, vec in pieces))

    return e.replace(lambda x: isinstance(x, _LINEAR), open_one)


def _is_coefficient(f: sp.Expr, vectors: frozenset[sp.Symbol]) -> bool:
    """A factor made of numbers, sizes and scalar names only (no vector, no sum)."""
    if f.has(SumAll, RowSum, Outer):
        return False
    return not any(isinstance(s, Vec) or s in vectors for s in f.free_symbols)


def _tidy(e: sp.Expr, vectors: frozenset[sp.Symbol]) -> sp.Expr:
    """``e`` expanded, the terms with the same vectors and sums gathered, each coefficient
    factored (``(2 sigma2 + 2 eps) / (2 n (sigma2 + eps)^(3/2))`` is ``1 / (n sqrt(sigma2 +
    eps))``), then common factors taken out."""
    groups: dict[sp.Expr, sp.Expr] = {}
    for term in sp.Add.make_args(sp.expand(e)):
        factors = sp.Mul.make_args(term)
        key = sp.Mul(*(f for f in factors if not _is_coefficient(f, vectors)))
        coefficient = sp.Mul(*(f for f in factors if _is_coefficient(f, vectors)))
        groups[key] = groups.get(key, sp.S.Zero) + coefficient
    out = sp.Add(*(sp.factor(c) * key for key, c in groups.items()))
    return sp.factor_terms(out)


def linear_names(
    names: tuple[tuple[sp.Symbol, sp.Expr], ...],
) -> Iterator[tuple[Vec, sp.Symbol, sp.Expr, sp.Expr]]:
    """``(input, name, c0, c1)`` for each name whose form is ``c0 + c1 input`` with ``c0``
    and ``c1`` numbers per sample."""
    vectors = vector_names(names)
    for sym, form in names:
        for v in sorted(form.atoms(Vec), key=str):
            c0 = form.xreplace({v: sp.S.Zero})
            c1 = sp.cancel((form - c0) / v)
            if c1 == 0 or c0.has(v) or c1.has(v):  # a sum of the input is not linear here
                continue
            if all(_is_number_per_sample(c, vectors) for c in (c0, c1)):
                yield v, sym, c0, c1


def vector_names(names: tuple[tuple[sp.Symbol, sp.Expr], ...]) -> frozenset[sp.Symbol]:
    """The names that are vectors (their forms read one, and sum it over nothing)."""
    found: set[sp.Symbol] = set()
    for sym, form in names:
        if not _is_number_per_sample(form, frozenset(found)):
            found.add(sym)
    return frozenset(found)


def through_linear_names(e: sp.Expr, names: tuple[tuple[sp.Symbol, sp.Expr], ...]) -> sp.Expr:
    """``e`` (in the names already) with the input written through a linear name, where
    that leaves no input and is shorter; else ``e``."""
    vectors = vector_names(names)
    # a constant such as eps held as a symbol meanwhile, so that it cancels exactly
    held = {f: sp.Dummy() for f in e.atoms(sp.Float)}
    held.update({f: sp.Dummy() for _, form in names for f in form.atoms(sp.Float)})
    back = {d: f for f, d in held.items()}
    for v, sym, c0, c1 in linear_names(tuple((s, f.xreplace(held)) for s, f in names)):
        if not e.has(v):
            continue
        out = _tidy(_opened(e.xreplace(held).xreplace({v: (sym - c0) / c1}), vectors), vectors)
        if not out.has(v) and sp.count_ops(out) < sp.count_ops(e):
            return out.xreplace(back)
    return e
