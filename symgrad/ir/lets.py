"""Named sub-expressions of a map (``let``): definitions in order, each may use the earlier
names. The engine differentiates the body with every name substituted; the names are kept
on the stage so that the documents can write the steps in them.

A layer's statistics are named the same way, found by their structure, never by the
layer's name: a sum over the input's axis divided by its width is the mean ``mu`` of the
input, the mean square deviation from it ``sigma2``, or the mean square ``nu2``; a sum of
the exponentials of the input is the softmax denominator ``S``; the root of a sum of the
input's squares (plus a constant) is its length ``r``, ``||a||``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy as sp

from symgrad.ir.indices import I, idx

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
    """``body`` with every name replaced by its expanded definition, every sum's index
    distinct from those of the sums around it (a Python-API map may nest ``Sum(a[j], j)``
    inside a sum over ``j``, which SymPy reads as a new index; the derivation and the
    lowering want distinct letters)."""
    if not lets:
        return distinct_dummies(sp.sympify(body))
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
    out = [(sp.Symbol(nm, real=True), s / w) for nm, s in found.items()]
    xhat = _normalised(body, inp, w, found)
    if xhat is not None:
        out.append((sp.Symbol("xhat", real=True), xhat))
    return tuple(out)


def _normalised(body: sp.Expr, inp: sp.IndexedBase, w: sp.Expr, found) -> sp.Expr | None:
    """The normalised input ``(inp[i] - mu) / sqrt(sigma2 + c)`` where ``body`` divides
    the deviation from the mean by the root of the variance plus a number ``c``."""
    if "mu" not in found or "sigma2" not in found:
        return None
    mu, var = found["mu"] / w, found["sigma2"] / w
    dev = root = None
    for x in sp.preorder_traversal(body):
        if dev is None and isinstance(x, sp.Add) and set(x.args) == {inp[I], -mu}:
            dev = x
        elif (
            root is None
            and isinstance(x, sp.Pow)
            and x.exp == -sp.S.Half
            and var in sp.Add.make_args(x.base)
            and all(t.is_Number for t in sp.Add.make_args(x.base) if t != var)
        ):
            root = x
    return dev * root if dev is not None and root is not None else None


def _whole_axis(s: sp.Basic, w: sp.Expr) -> bool:
    if not isinstance(s, sp.Sum) or len(s.limits) != 1:
        return False
    _, lo, hi = s.limits[0]
    return lo == 0 and sp.expand(hi - (w - 1)) == 0


def _root_of_squares(node: sp.Basic, inp: sp.IndexedBase, w: sp.Expr) -> bool:
    """``sqrt(sum_j inp[j]**2 + c)`` (``c`` a number, maybe none), or its inverse."""
    if not (isinstance(node, sp.Pow) and node.exp in (sp.S.Half, -sp.S.Half)):
        return False
    terms = sp.Add.make_args(node.base)
    sums = [t for t in terms if _whole_axis(t, w)]
    if len(sums) != 1 or not all(t.is_Number for t in terms if t is not sums[0]):
        return False
    var = sums[0].limits[0][0]
    return sums[0].function == inp[var] ** 2


def _exp_sum(node: sp.Basic, inp: sp.IndexedBase, w: sp.Expr) -> bool:
    """``sum_j exp(inp[j])``, the denominator of a softmax."""
    if not _whole_axis(node, w):
        return False
    var = node.limits[0][0]
    return node.function == sp.exp(inp[var])


def kind_of(e: sp.Expr, inp: sp.IndexedBase, w: sp.Expr) -> str | None:
    """What a named definition ``e`` (written out in the stage's arrays) is, read from its
    structure as :func:`statistics` finds it: "mean", "variance", "mean square", "softmax
    denominator", "length"; None for anything else."""
    if _exp_sum(e, inp, w):
        return "softmax denominator"
    if _root_of_squares(e, inp, w):
        return "length"
    kinds = {"mu": "mean", "sigma2": "variance", "nu2": "mean square", "xhat": "normalised"}
    for sym, value in norm_statistics(e, inp, w):
        if value == e:
            return kinds[sym.name]
    return None


def statistics(body: sp.Expr, inp: sp.IndexedBase, w: sp.Expr) -> Lets:
    """The statistics of the input that ``body`` reads, found by structure: the means of
    :func:`norm_statistics`, then the softmax denominator ``S`` and the length ``r``."""
    # a name the map already uses (a parameter ``mu``, an array ``r``) is not given twice
    used = {str(x) for x in body.free_symbols} | {str(x) for x in body.atoms(sp.IndexedBase)}
    found = [(sym, e) for sym, e in norm_statistics(body, inp, w) if sym.name not in used]
    for name, test in (("S", _exp_sum), ("r", _root_of_squares)):
        nodes = [x for x in sp.preorder_traversal(body) if test(x, inp, w)]
        taken = {str(sym) for sym, _ in found} | used
        if nodes and name not in taken:
            node = nodes[0]
            if isinstance(node, sp.Pow):  # the root itself, where the body divides by it
                node = sp.sqrt(node.base)
            found.append((sp.Symbol(name, real=True), node))
    return tuple(found)
