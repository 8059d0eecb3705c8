"""Index and width symbols: the naming conventions of the component form, in one place."""

from __future__ import annotations

import sympy as sp


def idx(name: str) -> sp.Symbol:
    """An index symbol (integer valued)."""
    return sp.Symbol(name, integer=True)


def width(layer: int) -> sp.Symbol:
    """The symbolic width n_l of layer ``l`` (``n_0`` is the input width)."""
    return sp.Symbol(f"n_{layer}", integer=True, positive=True)


#: The free output index every stage states its component form in.
I = idx("i")
#: The batch size: the range of the sample index of a stage that couples the samples.
BATCH = sp.Symbol("N", integer=True, positive=True)
#: The sample index such a stage states its output in (``out[s, i]``).
SAMPLE = idx("s")
#: Indices used while differentiating (fresh, never in user input).
K = idx("k_")
P = idx("p_")
Q = idx("q_")
R = idx("r_")
T = idx("t_")  # the sample of an input element of a stage that couples the samples

#: Display names: free indices of vectors, of parameter gradients, and summation dummies.
FREE_NAMES = ("i",)
PARAM_NAMES = ("p", "q", "r", "s")
DUMMY_NAMES = ("k", "j", "m", "l", "t", "u", "v", "w")
#: Summation dummies over the samples of the batch (sums with upper limit ``BATCH - 1``).
SAMPLE_NAMES = ("t", "u", "v", "w")


def indices_of(expr: sp.Expr) -> set[sp.Symbol]:
    """All index symbols used in subscripts of ``expr`` (free or bound)."""
    out: set[sp.Symbol] = set()
    for ind in expr.atoms(sp.Indexed):
        for a in ind.indices:
            out |= {s for s in a.free_symbols if s.is_integer}
    return out


def canonical(expr: sp.Expr, free: tuple[sp.Symbol, ...], names: tuple[str, ...]) -> sp.Expr:
    """Rename ``free`` to ``names`` and summation dummies to k, j, m, ... (readable, no clashes)."""
    mapping = {f: idx(n) for f, n in zip(free, names, strict=False)}
    taken = set(names)
    pool = [n for n in DUMMY_NAMES if n not in taken]

    def walk(e: sp.Expr, depth: int, bound: frozenset[str] = frozenset()) -> sp.Expr:
        if isinstance(e, sp.Sum):
            body = e.function
            limits = []
            for var, lo, hi in e.limits:
                # a name no other symbol of the summand uses (inner dummies included) and
                # no enclosing sum binds (an inner sum never shadows an outer one)
                used = ({s.name for s in body.atoms(sp.Symbol)} - {var.name}) | bound
                order = pool[depth % len(pool) :] + pool[: depth % len(pool)]
                if hi == BATCH - 1:  # a sum over the samples of the batch: t, u, ...
                    order = [nm for nm in SAMPLE_NAMES if nm not in taken] + order
                new = idx(next(nm for nm in order if nm not in used))
                depth += 1
                body = body.xreplace({var: new})
                limits.append((new, lo, hi))
                bound = bound | {new.name}
            return sp.Sum(walk(body, depth, bound), *limits)
        if not e.args:
            return e
        return e.func(*[walk(a, depth, bound) for a in e.args])

    # Dummies first: a free index may take a name a dummy had before.
    return walk(expr, 0).xreplace(mapping)


def one_based(e: sp.Expr) -> sp.Expr:
    """An index expression as the documents show it, with every index counting from 1.

    A position ``p = s h + kh - pad`` of 0-based indices is ``p + 1 = s (h - 1) + kh - pad``
    in 1-based ones. Plain indices and numbers are left alone; widths (positive symbols)
    are not indices and are not shifted.
    """
    if not e.args or not e.free_symbols:
        return e
    shift = {v: v - 1 for v in e.free_symbols if v.is_integer and not v.is_positive}
    if not shift:
        return e
    return sp.expand(e.xreplace(shift) + 1)


def pull_out(expr: sp.Expr) -> sp.Expr:
    """Move factors that do not depend on a Sum's index outside it (recursively)."""
    if not expr.args or not expr.has(sp.Sum):
        return expr
    if isinstance(expr, sp.Sum) and len(expr.limits) == 1:
        var = expr.limits[0][0]
        body = pull_out(expr.function)
        terms = sp.Add.make_args(body)
        out = []
        for t in terms:
            inner = [f for f in sp.Mul.make_args(t) if f.has(var)]
            outer = [f for f in sp.Mul.make_args(t) if not f.has(var)]
            out.append(sp.Mul(*outer) * sp.Sum(sp.Mul(*inner), expr.limits[0]))
        return sp.Add(*out)
    return expr.func(*[pull_out(a) for a in expr.args])
