"""Stability pass, its patterns: the predicates and rewrites behind each rule of
``calculus/stability.py`` (``match`` and ``apply``), one function per pattern."""

from __future__ import annotations

import sympy as sp
from sympy.codegen.cfunctions import expm1, hypot, log1p

from symgrad.calculus.layout import RowSum
from symgrad.calculus.matrix_form import Vec
from symgrad.calculus.stability_nodes import ClampMin, LogSumExp, SafeLog, Softmax
from symgrad.ir import ops as F
from symgrad.ir.reductions import ReduceMax


def _one_plus_exp(e: sp.Basic) -> sp.Expr | None:
    """``v`` when ``e`` is ``1 + exp(v)``, else None."""
    if not (e.is_Add and len(e.args) == 2 and sp.S.One in e.args):
        return None
    other = e.args[0] if e.args[1] == 1 else e.args[1]
    return other.args[0] if isinstance(other, sp.exp) else None


def _log_c_plus_exp(e: sp.Basic) -> sp.Expr | None:
    """log(c + d exp(v)) = log(c) + softplus(v + log(d/c)) for numbers c, d > 0."""
    arg = e.args[0]
    if not (arg.is_Add and len(arg.args) == 2):
        return None
    c = next((t for t in arg.args if t.is_number), None)
    other = next((t for t in arg.args if not t.is_number), None)
    if c is None or other is None or not c > 0:
        return None
    d, ex = other.as_coeff_Mul()
    if not (isinstance(ex, sp.exp) and d > 0):
        return None
    shift = sp.log(d / c)
    return sp.log(c) + F.softplus(ex.args[0] + shift)


def _logaddexp(e: sp.Basic) -> sp.Expr | None:
    """log(exp(u) + exp(v)) = u + softplus(v - u): both derivatives are sigmoids."""
    arg = e.args[0]
    if not (arg.is_Add and len(arg.args) == 2 and all(isinstance(t, sp.exp) for t in arg.args)):
        return None
    u, v = (t.args[0] for t in arg.args)
    return u + F.softplus(v - u)


def _sigmoid_complement(e: sp.Basic) -> sp.Expr | None:
    """Two terms of a sum: ``t - t sigmoid(u)`` -> ``t sigmoid(-u)`` and
    ``2 t sigmoid(u) - t`` -> ``t tanh(u/2)``."""
    if not e.is_Add:
        return None
    terms = list(e.args)
    for s in terms:
        for f in sp.Mul.make_args(s):
            if not isinstance(f, F.sigmoid):
                continue
            t, u = -s / f, f.args[0]
            for other, new in ((t, t * F.sigmoid(-u)), (t / 2, -t / 2 * sp.tanh(u / 2))):
                if other in terms:
                    rest = list(terms)
                    rest.remove(s)
                    rest.remove(other)
                    return sp.Add(*rest, new)
    return None


def _is_log(e: sp.Basic) -> bool:
    return isinstance(e, sp.log | SafeLog)


# exp(c v) / (1 + exp(v))**k = sigmoid(v)**c * sigmoid(-v)**(k - c), for 0 <= c <= k.
def _exp_ratio(e: sp.Basic) -> sp.Expr | None:
    if not e.is_Mul:
        return None
    facs = sp.Mul.make_args(e)
    exps = [f for f in facs if isinstance(f, sp.exp)]
    dens = [
        f
        for f in facs
        if f.is_Pow and f.exp.is_number and f.exp < 0 and _one_plus_exp(f.base) is not None
    ]
    if not exps or len(dens) != 1:
        return None
    den = dens[0]
    v = _one_plus_exp(den.base)
    if v is None:
        return None
    k = -den.exp
    w = sp.Add(*[f.args[0] for f in exps])
    c = sp.cancel(w / v)
    if not c.is_number or c < 0 or c > k:
        return None
    rest = [f for f in facs if f not in exps and f is not den]
    return sp.Mul(*rest) * F.sigmoid(v) ** c * F.sigmoid(-v) ** (k - c)


def _exp_rational(e: sp.Basic) -> sp.Expr | None:
    """A ratio of polynomials in ``E = exp(u)`` (``(1 + exp(u))/(2 + exp(u))``), rewritten
    with ``exp(u) = sigmoid(u)/sigmoid(-u)`` and both sides multiplied by ``sigmoid(-u)**K``:
    numerator and denominator become bounded; the denominator, whose coefficients are
    >= 0 with non-zero ends, stays away from 0 (``sigmoid(u) + sigmoid(-u) = 1``)."""
    if not e.is_Mul:
        return None
    facs = sp.Mul.make_args(e)
    u = None
    for f in facs:
        if f.is_Pow and f.exp.is_Integer and f.exp < 0 and f.base.is_Add:
            found = [a for t in f.base.args for a in sp.Mul.make_args(t) if isinstance(a, sp.exp)]
            if found:
                u = found[0].args[0]
                break
    if u is None:
        return None
    E = sp.Dummy("E", positive=True)

    def power(q: sp.Basic) -> sp.Expr | None:
        c = sp.cancel(q.args[0] / u) if isinstance(q, sp.exp) else None
        return c if c is not None and c.is_Integer else None

    inside: list[sp.Expr] = []
    outside: list[sp.Expr] = []
    for f in facs:
        g = f.replace(lambda q: power(q) is not None, lambda q: E ** power(q))
        (inside if g.has(E) else outside).append(g if g.has(E) else f)
    num, den = sp.fraction(sp.together(sp.Mul(*inside)))
    try:
        pn, pd = sp.Poly(num, E), sp.Poly(den, E)
    except sp.PolynomialError:
        return None
    k = max(pn.degree(), pd.degree())
    cd = [pd.coeff_monomial(E**m) for m in range(k + 1)]
    if k < 1 or not all(c.is_number and c >= 0 for c in cd) or cd[0] == 0 or cd[k] == 0:
        return None
    s, t = F.sigmoid(u), F.sigmoid(-u)
    new_num = sp.Add(*[pn.coeff_monomial(E**m) * s**m * t ** (k - m) for m in range(k + 1)])
    new_den = sp.Add(*[cd[m] * s**m * t ** (k - m) for m in range(k + 1)])
    return sp.Mul(*outside) * new_num / new_den


def _hyperbolic_ratio(e: sp.Basic) -> sp.Expr | None:
    """A product with ``1/cosh(u)**k`` distributed over its sums, each ``sinh(u)/cosh(u)``
    written ``tanh(u)``: no ``inf/inf`` when cosh and sinh overflow (|u| > 710)."""
    if not e.is_Mul:
        return None
    us = [
        f.base.args[0]
        for f in sp.Mul.make_args(e)
        if f.is_Pow and isinstance(f.base, sp.cosh) and f.exp.is_Integer and f.exp < 0
    ]
    if not us:
        return None
    u = us[0]
    sh, ch = sp.sinh(u), sp.cosh(u)
    if not e.has(sh) and not any(f.is_Add and f.has(ch) for f in sp.Mul.make_args(e)):
        return None
    expanded = sp.expand(
        e, deep=False, power_exp=False, power_base=False, multinomial=False, log=False
    )
    out = []
    for t in sp.Add.make_args(expanded):
        d = t.as_powers_dict()
        p_sh, p_ch = sp.sympify(d.get(sh, 0)), sp.sympify(d.get(ch, 0))
        if not (p_sh.is_Integer and p_ch.is_Integer) or p_ch > 0:
            return None  # cosh(u) left in a numerator: the rewrite would not help
        if p_sh > 0 and p_ch < 0:
            m = min(p_sh, -p_ch)
            t = t * (sp.tanh(u) * ch / sh) ** m
        out.append(t)
    return sp.Add(*out)


def _sigmoid_pow(e: sp.Basic) -> sp.Expr | None:
    # 1 / (1 + exp(v))**k = sigmoid(-v)**k
    v = _one_plus_exp(e.base)
    return None if v is None else F.sigmoid(-v) ** (-e.exp)


def _log_one_minus_sigmoid(e: sp.Basic) -> sp.Expr | None:
    arg = e.args[0]
    if not (arg.is_Add and len(arg.args) == 2 and sp.S.One in arg.args):
        return None
    other = arg.args[0] if arg.args[1] == 1 else arg.args[1]
    if isinstance(-other, F.sigmoid):
        return -F.softplus((-other).args[0])
    return None


def _softmax_ratio(e: sp.Basic) -> sp.Expr | None:
    # exp(u) * ... / RowSum(exp(u)): the pair becomes Softmax(u), in forward and backward.
    if not e.is_Mul:
        return None
    facs = list(sp.Mul.make_args(e))
    for d in facs:
        if (
            d.is_Pow
            and d.exp == -1
            and isinstance(d.base, RowSum)
            and isinstance(d.base.args[0], sp.exp)
            and d.base.args[0] in facs
        ):
            num = d.base.args[0]
            rest = [f for f in facs if f is not d]
            rest.remove(num)
            return sp.Mul(*rest) * Softmax(num.args[0])
    return _softmax_weighted(facs)


def _softmax_weighted(facs: list[sp.Expr]) -> sp.Expr | None:
    # RowSum(f * exp(u)) / RowSum(exp(u)) = RowSum(f * Softmax(u)): a softmax-weighted mean.
    for d in facs:
        if not (d.is_Pow and d.exp == -1 and isinstance(d.base, RowSum)):
            continue
        ex = d.base.args[0]
        if not isinstance(ex, sp.exp):
            continue
        for w in facs:
            if isinstance(w, RowSum) and ex in sp.Mul.make_args(w.args[0]):
                rest = [f for f in facs if f is not d and f is not w]
                inner = w.args[0] / ex * Softmax(ex.args[0])
                return sp.Mul(*rest) * RowSum(inner)
    return None


def _sum_of_exp(e: sp.Basic) -> tuple[sp.Expr, tuple] | None:
    """``(u, limits)`` when ``e`` is ``Sum(exp(u), (j, lo, hi))`` (one index), else None."""
    if isinstance(e, sp.Sum) and len(e.limits) == 1 and isinstance(e.function, sp.exp):
        return e.function.args[0], e.limits[0]
    return None


def _component_softmax(e: sp.Basic) -> sp.Expr | None:
    """``Sum(f exp(u[j']), j') / Sum(exp(u[j]), j)`` (over any summation index, a weight
    ``f`` or none): both exponentials shifted by ``max_j u[j]`` (the ratio is unchanged)."""
    if not e.is_Mul:
        return None
    facs = list(sp.Mul.make_args(e))
    for d in facs:
        found = _sum_of_exp(d.base) if d.is_Pow and d.exp == -1 else None
        if found is None or found[0].has(ReduceMax):
            continue
        u, (j, lo, hi) = found
        if lo != 0:
            continue
        r = sp.Dummy("r", integer=True)  # its own bound index (j is bound by the sums)
        m = ReduceMax(u.xreplace({j: r}), r, hi)
        for w in facs:
            if w is d or not isinstance(w, sp.Sum) or len(w.limits) != 1:
                continue
            k, lo2, hi2 = w.limits[0]
            ex = sp.exp(u.xreplace({j: k}))
            if (lo2, hi2) != (lo, hi) or ex not in sp.Mul.make_args(w.function):
                continue
            num = sp.Sum(w.function / ex * sp.exp(u.xreplace({j: k}) - m), (k, lo, hi))
            den = sp.Sum(sp.exp(u - m), (j, lo, hi))
            rest = [f for f in facs if f is not d and f is not w]
            return sp.Mul(*rest) * num / den
    return None


def _component_logsumexp(e: sp.Basic) -> sp.Expr | None:
    """``log(Sum(exp(u[j]), j))`` (a component form, any summation index) ->
    ``m + log(Sum(exp(u[j] - m), j))`` with ``m = max_j u[j]``."""
    found = _sum_of_exp(e.args[0]) if isinstance(e, sp.log) else None
    if found is None or found[0].has(ReduceMax) or found[1][1] != 0:
        return None
    u, (j, lo, hi) = found
    r = sp.Dummy("r", integer=True)
    m = ReduceMax(u.xreplace({j: r}), r, hi)
    return m + sp.log(sp.Sum(sp.exp(u - m), (j, lo, hi)))


def _log1p(e: sp.Basic) -> sp.Expr | None:
    arg = e.args[0]
    if not arg.is_Add or sp.S.One not in arg.args:
        return None
    u = arg - 1
    if isinstance(u, sp.exp) or u.is_number:
        return None  # log(1 + exp(u)) is softplus's
    return log1p(u)


def _expm1(e: sp.Basic) -> sp.Expr | None:
    # exp(u) - 1 -> expm1(u) and 1 - exp(u) -> -expm1(u), inside a longer sum too.
    terms = list(sp.Add.make_args(e))
    for c in (sp.S.One, sp.S.NegativeOne):
        if c not in terms:
            continue
        for t in terms:
            if isinstance(-c * t, sp.exp):
                rest = list(terms)
                rest.remove(c)
                rest.remove(t)
                return sp.Add(*rest) - c * expm1((-c * t).args[0])
    return None


def _sqrt1pm1(e: sp.Basic) -> sp.Expr | None:
    # sqrt(1 + u) - 1 = u / (sqrt(1 + u) + 1): no cancellation when u is small.
    terms = list(sp.Add.make_args(e))
    if sp.S.NegativeOne not in terms:
        return None
    for t in terms:
        if t.is_Pow and t.exp == sp.S.Half and t.base.is_Add and sp.S.One in t.base.args:
            u = t.base - 1
            rest = list(terms)
            rest.remove(sp.S.NegativeOne)
            rest.remove(t)
            return sp.Add(*rest) + u / (t + 1)
    return None


def _hypot(e: sp.Basic) -> sp.Expr | None:
    b = e.base
    if not (b.is_Add and len(b.args) == 2):
        return None
    if all(t.is_Pow and t.exp == 2 for t in b.args):
        return hypot(b.args[0].base, b.args[1].base)
    return None


def _sum_of_squares(e: sp.Basic) -> bool:
    """A sum of squares with no positive constant: non-negative, and exactly 0 at 0."""
    if isinstance(e, RowSum):
        return _sum_of_squares(e.args[0])
    if isinstance(e, sp.Sum):
        return _sum_of_squares(e.function)
    if e.is_Pow:
        return e.exp == 2 and not e.base.is_number
    if e.is_Add:
        return all(_sum_of_squares(t) for t in e.args)
    return False


def _guard_sqrt(e: sp.Basic) -> sp.Expr | None:
    # s**(-p) with s a sum of squares: its root clamped at 1e-12, as
    # torch.nn.functional.normalize clamps the norm (the gradient at 0 is then g / 1e-12).
    return ClampMin(sp.sqrt(e.base)) ** (2 * e.exp)


def _bounded_poly(p: sp.Expr) -> sp.Expr | None:
    """The array ``v`` when ``p`` is a polynomial in one array ``v`` whose roots are only
    0 and 1 (``v``, ``1 - v``, ``v (1 - v)``: BCE-shaped denominators), else None."""
    vecs = p.atoms(Vec)
    if len(vecs) != 1 or p.free_symbols - vecs:
        return None
    (v,) = vecs
    t = sp.Dummy("t")
    try:
        poly = sp.Poly(p.xreplace({v: t}), t)
    except sp.PolynomialError:
        return None
    if poly.degree() < 1:
        return None
    roots = sp.roots(poly)
    if sum(roots.values()) != poly.degree() or not set(roots) <= {0, 1}:
        return None
    return v


def _bce_shaped(e: sp.Basic) -> bool:
    if not e.is_Add:
        return False
    for t in e.args:
        for f in sp.Mul.make_args(t):
            if f.is_Pow and f.exp.is_number and f.exp < 0 and _bounded_poly(f.base) is not None:
                return True
    return False


def _guard_bce(e: sp.Basic) -> sp.Expr | None:
    """``y/a + (y - 1)/(1 - a)`` as one fraction whose denominator ``a (1 - a)`` is clamped
    at 1e-12, as PyTorch's binary_cross_entropy backward does."""
    num, den = sp.fraction(sp.factor(sp.together(e)))
    vpart = sp.Mul(*[f for f in sp.Mul.make_args(den) if _bounded_poly(f) is not None])
    rest = sp.Mul(*[f for f in sp.Mul.make_args(den) if _bounded_poly(f) is None])
    if vpart == 1:
        return None
    # The values lie in (0, 1): orient the clamped factor so it is positive there.
    if vpart.xreplace({v: sp.S.Half for v in vpart.atoms(Vec)}) < 0:
        vpart, num = sp.factor(sp.expand(-vpart)), -num
    return num / (rest * ClampMin(vpart))


def _lse(e: sp.Basic) -> sp.Expr | None:
    return LogSumExp(e.args[0].args[0].args[0])
