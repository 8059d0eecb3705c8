"""Named sub-expressions of a map (``let``): definitions in order, each may use the earlier
names. The engine differentiates the body with every name substituted; the names are kept
on the stage so that the documents can write the steps in them.

A norm layer's statistics are named the same way, found by their structure (a sum over
the input's axis divided by its width): the mean ``mu`` of the input, the mean square
deviation from it ``sigma2``, or the mean square ``nu2``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy as sp

from symgrad.ir.indices import idx

Lets = tuple[tuple[sp.Symbol, sp.Expr], ...]


#: Fresh names for a summation index that a substituted definition would shadow.
_SPARE = tuple(idx(nm) for nm in ("j", "k", "p", "q", "r", "t", "u", "v", "e", "c", "h", "w"))


def distinct_dummies(e: sp.Basic, outer: frozenset = frozenset()) -> sp.Basic:
    """``e`` with every sum's index distinct from the indices of the sums around it and
    from the free symbols: ``sum((a[j] - sum(a[j], j)/n)**2, j)`` (a definition substituted
    into a sum over the same index) gets a fresh inner index."""
    if not e.args:
        return e
    if isinstance(e, sp.Sum) and len(e.limits) == 1:
        var, lo, hi = e.limits[0]
        f = e.function
        if var in outer:
            taken = outer | f.free_symbols | lo.free_symbols | hi.free_symbols
            new = next(x for x in _SPARE if x not in taken and x.name not in map(str, taken))
            f = f.xreplace({var: new})
            var = new
        return sp.Sum(distinct_dummies(f, outer | {var}), (var, lo, hi))
    if isinstance(e, sp.Sum):
        return e
    around = outer | {x for x in e.free_symbols if isinstance(x, sp.Symbol)}
    return e.func(*(distinct_dummies(a, around) for a in e.args))


def expand(lets: Sequence[tuple[sp.Symbol, sp.Expr]]) -> dict[sp.Symbol, sp.Expr]:
    """Each name's definition with the earlier names substituted, in definition order."""
    out: dict[sp.Symbol, sp.Expr] = {}
    for sym, expr in lets:
        out[sym] = distinct_dummies(sp.sympify(expr).xreplace(out))
    return out


def substitute(lets: Sequence[tuple[sp.Symbol, sp.Expr]], body: sp.Expr) -> sp.Expr:
    """``body`` with every name replaced by its expanded definition."""
    if not lets:
        return body
    return distinct_dummies(sp.sympify(body).xreplace(expand(lets)))


def _mean_of(e: sp.Basic, w: sp.Expr) -> sp.Sum | None:
    """The sum of ``e = c*Sum(...)/w`` (``c`` a number: a mean over the whole axis)."""
    if not isinstance(e, sp.Mul):
        return None
    sums = [a for a in e.args if isinstance(a, sp.Sum)]
    rest = [a for a in e.args if not isinstance(a, sp.Sum) and not a.is_Number]
    if len(sums) != 1 or rest != [1 / w] or len(sums[0].limits) != 1:
        return None
    _, lo, hi = sums[0].limits[0]
    return sums[0] if lo == 0 and sp.simplify(hi - (w - 1)) == 0 else None


def norm_statistics(body: sp.Expr, inp: sp.IndexedBase, w: sp.Expr) -> Lets:
    """The means over the input's axis in ``body``, innermost first: the mean of the input
    (``mu``), a mean square deviation from a named mean (``sigma2``), a mean square of the
    input (``nu2``). Other means are not named."""
    found: dict[str, sp.Sum] = {}
    for node in sp.postorder_traversal(body):
        s = _mean_of(node, w)
        if s is None or s in found.values():
            continue
        f, var = s.function, s.limits[0][0]
        if f == inp[var]:
            name = "mu"
        elif isinstance(f, sp.Pow) and f.exp == 2 and f.base == inp[var]:
            name = "nu2"
        elif isinstance(f, sp.Pow) and f.exp == 2 and "mu" in found and f.has(found["mu"]):
            name = "sigma2"
        else:
            continue
        found.setdefault(name, s)
    return tuple((sp.Symbol(nm, real=True), s / w) for nm, s in found.items())
