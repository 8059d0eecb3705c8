"""Stage 3 (derive), forward values: derivatives rewritten in the values the forward pass computed.

A stage ``y[i] = N(x, i) * R`` (``R`` free of ``i``) satisfies ``N(x, m) = y[m] / R`` for
every index ``m``; substituting that identity turns ``sigmoid(z)(1 - sigmoid(z))`` into
``a (1 - a)`` and the softmax Jacobian into ``s_i delta_ik - s_i s_k``. The rewrite is exact
(an identity, not a guess) and is kept only when it makes the expression no more costly.
Sums that belong to the forward body (``R``) are frozen while substituting so that the
identity is never applied inside its own definition.
"""

from __future__ import annotations

import sympy as sp

from symgrad.ir.indices import indices_of, pull_out
from symgrad.ir.network import Stage


def rewrite(expr: sp.Expr, stage: Stage) -> sp.Expr:
    """``expr`` with the stage's input written through its output where that is cheaper."""
    body = stage.body
    if not expr.has(stage.inp):
        return expr
    dep = [f for f in sp.Mul.make_args(body) if f.has(stage.index)]
    rest = sp.Mul(*[f for f in sp.Mul.make_args(body) if not f.has(stage.index)])
    numer = sp.Mul(*dep)
    # Sums of the body that do not involve the free index (softmax's denominator) are frozen;
    # those that do (a dense-like Sum_j A[i, j] x[j]) are part of the pattern itself.
    sums = {s: sp.Dummy("S") for s in body.atoms(sp.Sum) if not s.has(stage.index)}
    thaw = {v: k for k, v in sums.items()}
    rest_f = rest.xreplace(sums)

    idx_syms = [m for m in indices_of(expr) if m.is_integer]
    if numer == body:  # N is the whole body: substitute the body itself
        pairs = [(body.xreplace({stage.index: m}), stage.out[m]) for m in idx_syms]
    else:
        pairs = [(numer.xreplace({stage.index: m}), stage.out[m] / rest_f) for m in idx_syms]

    def rw(e: sp.Expr) -> sp.Expr:
        if isinstance(e, sp.Sum):
            return sp.Sum(rw(e.function), *e.limits)
        if e.args and e.has(sp.Sum):
            e = e.func(*[rw(a) for a in e.args])
        for old, new in pairs:
            if e.has(old.args[0] if old.args else old):
                e = e.subs(old, new)
        return e

    new = pull_out(rw(expr.xreplace(sums))).xreplace(thaw)
    if sp.count_ops(new) <= sp.count_ops(expr):
        return new
    return expr


#: cancel_scalar leaves alone expressions with functions nested deeper than this ...
MAX_CANCEL_NESTING = 3
#: ... or with more operations than this (bounded time on hostile input).
MAX_CANCEL_OPS = 200


def _nesting(expr: sp.Expr) -> int:
    """How deeply functions (tanh, exp, Max ...) are nested in ``expr``."""
    if not expr.args:
        return 0
    inner = max(_nesting(a) for a in expr.args)
    return inner + (1 if isinstance(expr, sp.Function | sp.Max | sp.Min) else 0)


def cancel_scalar(expr: sp.Expr) -> sp.Expr:
    """Cancel common factors of a rational expression, treating every Sum as a frozen atom
    (SymPy's simplifiers are not run on Sums); kept only when it is cheaper."""
    if _nesting(expr) > MAX_CANCEL_NESTING or sp.count_ops(expr) > MAX_CANCEL_OPS:
        # Polynomial gcds over nested functions take minutes and rarely simplify anything.
        return expr
    sums = {e: sp.Dummy("S") for e in expr.atoms(sp.Sum)}
    thaw = {v: k for k, v in sums.items()}
    frozen = expr.xreplace(sums)
    new = sp.factor_terms(sp.cancel(frozen)).xreplace(thaw)
    return new if sp.count_ops(new) < sp.count_ops(expr) else expr


def tanh_from_ratio(expr: sp.Expr) -> sp.Expr:
    """sinh(u) / cosh(u) -> tanh(u): finite where both overflow."""

    def fix(e: sp.Expr) -> sp.Expr:
        fs = list(sp.Mul.make_args(e))
        for f in fs:
            if isinstance(f, sp.sinh):
                inv = sp.cosh(f.args[0]) ** -1
                if inv in fs:
                    fs.remove(f)
                    fs.remove(inv)
                    return fix(sp.Mul(*fs) * sp.tanh(f.args[0]))
        return e

    return expr.replace(lambda e: e.is_Mul and e.has(sp.sinh), fix)


def centre_samples(expr: sp.Expr, inp: sp.IndexedBase, n: sp.Expr) -> sp.Expr:
    """``expr`` with the sample-indexed input ``inp[t, k]`` written through its values
    centred on the batch mean, ``inp[t, k] = c[t, k] + mean_k`` (an identity), where
    ``sum_t c[t, k] = 0``: the mean cancels from a gradient through batch statistics, which
    then reads ``(inp[t, k] - mean_k)`` as the textbook does. ``n`` is the batch size (sums
    over the samples run to ``n - 1``). Kept only when it makes the expression smaller."""
    c = sp.IndexedBase("_centred", real=True)
    mean = sp.IndexedBase("_mean", real=True)

    def is_mean_sum(e: sp.Basic) -> bool:
        if not isinstance(e, sp.Sum) or len(e.limits) != 1:
            return False
        var, lo, hi = e.limits[0]
        f = e.function
        return (
            lo == 0
            and hi == n - 1
            and isinstance(f, sp.Indexed)
            and f.base == inp
            and f.indices[0] == var
            and not any(ix.has(var) for ix in f.indices[1:])
        )

    new = expr.replace(is_mean_sum, lambda e: n * mean[e.function.indices[1:]])
    new = new.replace(
        lambda e: isinstance(e, sp.Indexed) and e.base == inp,
        lambda e: c[e.indices] + mean[e.indices[1:]],
    )
    new = _sample_sums(new, c, n, 0)
    new = sp.expand(new, power_base=False, power_exp=False, log=False, multinomial=False)
    new = _sample_sums(new, c, n, 0)
    back: dict[sp.Basic, sp.Basic] = {}
    for e in new.atoms(sp.Indexed):
        if e.base == c:
            t = sp.Dummy("t", integer=True)
            rest = e.indices[1:]
            back[e] = inp[e.indices] - sp.Sum(inp[(t, *rest)], (t, 0, n - 1)) / n
        elif e.base == mean:
            t = sp.Dummy("t", integer=True)
            back[e] = sp.Sum(inp[(t, *e.indices)], (t, 0, n - 1)) / n
    new = sp.factor_terms(new.xreplace(back))
    return new if sp.count_ops(new) < sp.count_ops(expr) else expr


def _sample_sums(expr: sp.Expr, c: sp.IndexedBase, n: sp.Expr, depth: int) -> sp.Expr:
    """Sums over the samples made linear and canonical: summands expanded and split, factors
    free of the sample index pulled out, ``sum_t c[t, k] = 0``, ``sum_t u = n u`` for ``u``
    free of ``t``, and the dummy named by nesting depth (equal sums compare equal)."""
    if not expr.args:
        return expr
    if isinstance(expr, sp.Sum) and len(expr.limits) == 1 and expr.limits[0][2] == n - 1:
        var, lo, hi = expr.limits[0]
        fresh = sp.Symbol(f"_t{depth}", integer=True)
        body = _sample_sums(expr.function.xreplace({var: fresh}), c, n, depth + 1)
        body = sp.expand(body, power_base=False, power_exp=False, log=False, multinomial=False)
        out = []
        for term in sp.Add.make_args(body):
            dep = [f for f in sp.Mul.make_args(term) if f.has(fresh)]
            indep = sp.Mul(*[f for f in sp.Mul.make_args(term) if not f.has(fresh)])
            if not dep:
                out.append(n * indep)
            elif len(dep) == 1 and isinstance(dep[0], sp.Indexed) and dep[0].base == c:
                continue  # the centred values sum to zero over the batch
            else:
                out.append(indep * sp.Sum(sp.Mul(*dep), (fresh, lo, hi)))
        return sp.Add(*out)
    return expr.func(*[_sample_sums(a, c, n, depth) for a in expr.args])
