"""Stability pass: unstable patterns -> identities that evaluate safely, decided by structure.

A list of :class:`Rule` objects, each a pattern (a predicate on one SymPy node), its stable
form, a one-line description and the hazard it removes. The rules are identities, never
approximations, so every derivative still comes from the derivation. They are applied
wherever the pattern occurs, whatever the layer or loss is called:

- ``IR_RULES`` rewrite into functions that carry their own derivative rule (``sigmoid``,
  ``softplus``); :func:`stabilise_network` applies them to every stage body and the loss
  before the derivation, so the backward pass is derived from the stable forms.
- ``PROGRAM_RULES`` (the IR rules too) rewrite the batched forward, loss and backward
  expressions of the program (``layout.py`` form): log-sum-exp and softmax with the row
  maximum shifted out, ``log1p``/``expm1``/``hypot`` forms that remove cancellation,
  ``log(cosh)``, guarded square roots of sums of squares.
- ``GUARD_RULES`` guard divisions in backward expressions as PyTorch does (the BCE clamp).

The result is target-free SymPy: the nodes defined here (``Softmax``, ``LogSumExp``,
``LogCosh``, ``ClampMin``, ``SafeLog`` ...) are printed by each backend's printer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import sympy as sp
from sympy.codegen.cfunctions import expm1, hypot, log1p

from symgrad.calculus.einsum import AxisMax, AxisSum
from symgrad.calculus.layout import RowSum
from symgrad.calculus.matrix_form import Vec
from symgrad.ir import ops as F
from symgrad.ir.network import Network, Stage
from symgrad.ir.reductions import ReduceMax

# ---------------------------------------------------------------------------------------
# Target-free nodes that backends print in a stable way.


class Softmax(sp.Function):
    """``exp(v) / RowSum(exp(v))``, evaluated with the row maximum shifted out."""

    nargs = 1


class LogSumExp(sp.Function):
    """``log(RowSum(exp(v)))``, evaluated with the row maximum shifted out."""

    nargs = 1


class Total(sp.Function):
    """The sum of every entry of an array (a loss value)."""

    nargs = 1


class RowMax(sp.Function):
    """The per-sample maximum, an (n, 1) column (for shifted exponentials)."""

    nargs = 1


class LogCosh(sp.Function):
    """``log(cosh(v))``: no overflow for large ``|v|``, no cancellation for small ``|v|``."""

    nargs = 1


class ClampMin(sp.Function):
    """``max(v, 1e-12)``: a denominator that can reach 0, clamped as PyTorch's BCE does."""

    nargs = 1


class SafeLog(sp.Function):
    """A log in a loss value, clamped at -100 like PyTorch's BCE."""

    nargs = 1


class SafeLog1p(sp.Function):
    """``log1p`` in a loss value, clamped at -100 like ``SafeLog``."""

    nargs = 1


# ---------------------------------------------------------------------------------------
# Rules.


@dataclass(frozen=True)
class Rule:
    """One rewrite: ``match(node)`` selects a node, ``apply(node)`` is its stable form."""

    name: str
    pattern: str  # the unstable form, in words a learner can read: "log(1 + exp(u))"
    stable: str  # what it becomes: "softplus(u) = max(u, 0) + log1p(exp(-|u|))"
    hazard: str  # what goes wrong without it
    match: Callable[[sp.Basic], bool]
    apply: Callable[[sp.Basic], sp.Expr | None]  # None: no rewrite after all


@dataclass(frozen=True)
class Applied:
    """A rewrite that happened: which rule, and the node before and after."""

    rule: Rule
    before: sp.Expr
    after: sp.Expr


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


SOFTPLUS = Rule(
    "softplus",
    "log(1 + exp(u))   (also log(c + d exp(u)), c, d > 0)",
    "softplus(u) = max(u, 0) + log1p(exp(-|u|))   (log(c) + softplus(u + log(d/c)))",
    "exp(u) overflows for u > 709 (88 in float32): the log becomes inf, its gradient NaN",
    lambda e: _is_log(e) and _log_c_plus_exp(e) is not None,
    _log_c_plus_exp,
)
LOGADDEXP = Rule(
    "logaddexp",
    "log(exp(u) + exp(v))",
    "u + softplus(v - u)",
    "exp overflows for arguments > 709: log(inf), and inf/inf in the derivative",
    lambda e: _is_log(e) and _logaddexp(e) is not None,
    _logaddexp,
)
EXP_RATIO = Rule(
    "exp-ratio",
    "exp(c u) / (1 + exp(u))**k",
    "sigmoid(u)**c * sigmoid(-u)**(k - c)",
    "exp(u) overflows in numerator and denominator: inf / inf is NaN",
    lambda e: _exp_ratio(e) is not None,
    _exp_ratio,
)
SIGMOID = Rule(
    "sigmoid",
    "1 / (1 + exp(-u))",
    "sigmoid(u), exp's argument capped below overflow",
    "exp(-u) overflows for u < -709; its derivative exp(-u)/(1 + exp(-u))**2 is inf/inf",
    lambda e: e.is_Pow and e.exp.is_number and e.exp < 0 and _one_plus_exp(e.base) is not None,
    _sigmoid_pow,
)
EXP_RATIONAL = Rule(
    "exp-rational",
    "P(exp(u)) / Q(exp(u))   (polynomials, Q with positive coefficients)",
    "P and Q in sigmoid(u) and sigmoid(-u), each term of the same degree",
    "exp(u) overflows in numerator and denominator: inf / inf is NaN",
    lambda e: _exp_rational(e) is not None,
    _exp_rational,
)
HYPERBOLIC_RATIO = Rule(
    "hyperbolic-ratio",
    "(... sinh(u) ... + ... cosh(u) ...) / cosh(u)",
    "the quotient distributed: ... tanh(u) ... + ...",
    "sinh(u) and cosh(u) overflow for |u| > 710 (89 in float32): inf / inf is NaN",
    lambda e: _hyperbolic_ratio(e) is not None,
    _hyperbolic_ratio,
)
SIGMOID_COMPLEMENT = Rule(
    "sigmoid-complement",
    "t - t sigmoid(u)   (1 - sigmoid(u) in sigmoid's derivative); 2 t sigmoid(u) - t",
    "t sigmoid(-u); t tanh(u/2)",
    "sigmoid(u) rounds to 1 for u > 17 (37 in float64): 1 - sigmoid(u) loses every digit, "
    "and a sum split into t - t sigmoid(u) cancels catastrophically",
    lambda e: _sigmoid_complement(e) is not None,
    _sigmoid_complement,
)
LOG_SIGMOID = Rule(
    "log-sigmoid",
    "log(sigmoid(u))",
    "-softplus(-u)",
    "sigmoid(u) underflows to 0 for u < -745: log(0) = -inf",
    lambda e: _is_log(e) and isinstance(e.args[0], F.sigmoid),
    lambda e: -F.softplus(-e.args[0].args[0]),
)
LOG_ONE_MINUS_SIGMOID = Rule(
    "log-one-minus-sigmoid",
    "log(1 - sigmoid(u))",
    "-softplus(u)",
    "1 - sigmoid(u) rounds to 0 for u > 37: log(0) = -inf, and cancellation before that",
    lambda e: _is_log(e) and _log_one_minus_sigmoid(e) is not None,
    _log_one_minus_sigmoid,
)
LOGSUMEXP = Rule(
    "logsumexp",
    "log(sum_j exp(u[j]))",
    "m + log(sum_j exp(u[j] - m)), m = max_j u[j]",
    "exp(u) overflows for u > 709: log(inf)",
    lambda e: (
        _is_log(e) and isinstance(e.args[0], RowSum) and isinstance(e.args[0].args[0], sp.exp)
    ),
    _lse,
)
SOFTMAX = Rule(
    "softmax",
    "exp(u[i]) / sum_j exp(u[j])   (forward and every backward use; also a weighted mean "
    "sum_j f[j] exp(u[j]) / sum_j exp(u[j]))",
    "exp(u[i] - m) / sum_j exp(u[j] - m), m = max_j u[j]",
    "exp(u) overflows for u > 709: inf / inf is NaN",
    lambda e: _softmax_ratio(e) is not None,
    _softmax_ratio,
)
COMPONENT_SOFTMAX = Rule(
    "softmax-over-index",
    "sum_j' f[j'] exp(u[j']) / sum_j exp(u[j])   (a component form, any summation index)",
    "both exponentials shifted by m = max_j u[j]",
    "exp(u) overflows for u > 709: inf / inf is NaN",
    lambda e: _component_softmax(e) is not None,
    _component_softmax,
)
LOG_COSH = Rule(
    "logcosh",
    "log(cosh(u))",
    "log1p(2 sinh(u/2)**2) for |u| < 1, else |u| + log1p(exp(-2|u|)) - log 2",
    "cosh(u) overflows for |u| > 710; log(cosh(u)) cancels to 0 for tiny u",
    lambda e: _is_log(e) and isinstance(e.args[0], sp.cosh),
    lambda e: LogCosh(e.args[0].args[0]),
)
LOG1P = Rule(
    "log1p",
    "log(1 + u)",
    "log1p(u)",
    "1 + u rounds away the digits of a small u (cancellation)",
    lambda e: isinstance(e, sp.log) and _log1p(e) is not None,
    _log1p,
)
EXPM1 = Rule(
    "expm1",
    "exp(u) - 1",
    "expm1(u)",
    "exp(u) - 1 cancels for small u",
    lambda e: e.is_Add and _expm1(e) is not None,
    _expm1,
)
SQRT1PM1 = Rule(
    "sqrt1pm1",
    "sqrt(1 + u) - 1",
    "u / (sqrt(1 + u) + 1)",
    "sqrt(1 + u) - 1 cancels for small u",
    lambda e: e.is_Add and _sqrt1pm1(e) is not None,
    _sqrt1pm1,
)
HYPOT = Rule(
    "hypot",
    "sqrt(u**2 + v**2)",
    "hypot(u, v)",
    "u**2 overflows for |u| > 1e154 (1e19 in float32)",
    lambda e: e.is_Pow and e.exp == sp.S.Half and _hypot(e) is not None,
    _hypot,
)
GUARD_SQRT = Rule(
    "sqrt-of-sum-guard",
    "1 / sqrt(sum of squares)   (any negative power of it)",
    "1 / max(sqrt(sum of squares), 1e-12), as torch.nn.functional.normalize",
    "the sum can be exactly 0: division by 0 (inf, then NaN)",
    lambda e: (
        e.is_Pow
        and e.exp.is_number
        and e.exp < 0
        and not e.exp.is_integer
        and _sum_of_squares(e.base)
    ),
    _guard_sqrt,
)
GUARD_BCE = Rule(
    "division-guard",
    "y/a + (y - 1)/(1 - a)   (a denominator a, 1 - a or a (1 - a))",
    "(y - a) / max(a (1 - a), 1e-12), as PyTorch's BCE backward",
    "a saturated output a = 0 or 1 divides by 0: inf, then NaN",
    _bce_shaped,
    _guard_bce,
)

#: Not a pattern rewrite but a choice the loss makes (``codegen._loss_expression``): a log
#: of the network output is taken of the last layer's body instead, where the rules above
#: then leave no log that can reach 0. Listed so that audits and documents can name it.
LOG_THROUGH_OUTPUT = Rule(
    "log-of-output",
    "log(yhat[i]) with yhat = f(z)   (in the loss)",
    "log(f(z)) simplified: z[i] - logsumexp(z), -softplus(-u), ...",
    "yhat = f(z) rounds to 0 or 1 before the log: -inf, and gradients lose their digits",
    lambda e: False,
    lambda e: None,
)

#: Not a pattern rewrite either: a pass over the derivation (``stability_fusion.py``). A loss
#: gradient that divides by the output is substituted into the steps that read it, where
#: the output's factor in their Jacobian cancels the division.
LOSS_DIVISION = Rule(
    "fused-loss-gradient",
    "dL/dyhat = -y / yhat, then yhat[k] dL/dyhat[k] in the next step",
    "the loss gradient substituted and cancelled: -y (no division by yhat)",
    "yhat rounds to 0 (a softmax at large logits): -y/yhat is inf, then inf * 0 is NaN",
    lambda e: False,
    lambda e: None,
)

#: Rules whose stable forms carry derivative rules: safe before the derivation.
IR_RULES: tuple[Rule, ...] = (
    SOFTPLUS,
    LOGADDEXP,
    EXP_RATIO,
    SIGMOID,
    EXP_RATIONAL,
    LOG_SIGMOID,
    LOG_ONE_MINUS_SIGMOID,
    SIGMOID_COMPLEMENT,
)
#: Rules for the batched program (forward, loss and backward expressions).
PROGRAM_RULES: tuple[Rule, ...] = (
    *IR_RULES,
    HYPERBOLIC_RATIO,
    LOG_COSH,
    LOGSUMEXP,
    SOFTMAX,
    LOG1P,
    EXPM1,
    SQRT1PM1,
    HYPOT,
    GUARD_SQRT,
)
#: Division guards for backward expressions.
GUARD_RULES: tuple[Rule, ...] = (GUARD_BCE,)
ALL_RULES: tuple[Rule, ...] = (*PROGRAM_RULES, *GUARD_RULES)


def stabilise(
    expr: sp.Expr, rules: Sequence[Rule] = PROGRAM_RULES, log: list[Applied] | None = None
) -> sp.Expr:
    """``expr`` with every rule applied wherever its pattern occurs, to a fixed point.

    Args:
        expr: a component-form or batched expression.
        rules: the rules to apply, in order (earlier rules see the larger patterns first).
        log: if given, each rewrite is appended as an :class:`Applied`.
    """
    for _ in range(8):  # each pass can expose a new pattern; a few passes reach a fixed point
        before = expr
        for rule in rules:

            def apply(e: sp.Basic, rule: Rule = rule) -> sp.Basic:
                new = rule.apply(e)
                if new is None or new == e:
                    return e
                if log is not None:
                    log.append(Applied(rule, e, new))
                return new

            expr = expr.replace(rule.match, apply)
        if expr == before:
            break
    return expr


def stabilise_stage(stage: Stage, log: list[Applied] | None = None) -> Stage:
    """A stage whose body has the IR rules applied (same name, label and parameters)."""
    from dataclasses import replace

    body = stabilise(stage.body, IR_RULES, log)
    return stage if body == stage.body else replace(stage, body=body)


def stabilise_network(net: Network, log: list[Applied] | None = None) -> Network:
    """Every stage body and the loss with the IR rules applied, before the derivation.

    The result is equal (``==``) to ``net`` when nothing matched, so a caller can keep a
    derivation it already has."""
    from dataclasses import replace

    stages = tuple(stabilise_stage(s, log) for s in net.stages)
    lbody = stabilise(net.loss.body, IR_RULES, log)
    if stages == net.stages and lbody == net.loss.body:
        return net
    return replace(net, stages=stages, loss=replace(net.loss, body=lbody))


def share_softmax_logsumexp(exprs: Iterable[sp.Expr]) -> list[sp.Expr]:
    """Where softmax(u) and logsumexp(u) are both needed (cross-entropy), write both through
    m = max(u), e = exp(u - m), s = sum(e): the program-wide CSE then computes the shifted
    exponential once. Both forms stay stable."""
    exprs = list(exprs)
    both = set().union(*(e.atoms(Softmax) for e in exprs)) if exprs else set()
    lse = set().union(*(e.atoms(LogSumExp) for e in exprs)) if exprs else set()
    shared = {f.args[0] for f in both} & {f.args[0] for f in lse}
    if not shared:
        return exprs
    repl: dict[sp.Basic, sp.Expr] = {}
    for u in shared:
        m = RowMax(u)
        e = sp.exp(u - m)
        s = RowSum(e)
        repl[Softmax(u)] = e / s
        repl[LogSumExp(u)] = m + sp.log(s)
    return [e.xreplace(repl) for e in exprs]


# ---------------------------------------------------------------------------------------
# Hazards that remain after the rewrites (for ``symgrad audit``).


@dataclass(frozen=True)
class Hazard:
    """A remaining risk in one expression: what, where (the sub-expression), and why."""

    kind: str  # "overflow", "division", "log of 0", "cancellation"
    where: sp.Expr
    detail: str


def _shifted(u: sp.Expr) -> bool:
    shifts = (RowMax, AxisMax)
    return any(isinstance(t, shifts) or isinstance(-t, shifts) for t in sp.Add.make_args(u)) or (
        u.is_nonpositive is True
    )


def _nonnegative(t: sp.Expr) -> bool:
    """Whether ``t`` is >= 0 by its structure (squares, abs, exp, sums of such ...)."""
    if t.is_number:
        return bool(t >= 0)
    if t.is_nonnegative:
        return True
    if isinstance(t, sp.Abs | sp.exp | sp.cosh | F.sigmoid | F.softplus | F.relu):
        return True
    if t.is_Pow:
        return bool(t.exp.is_number and (t.exp.is_even or not t.exp.is_integer)) or _nonnegative(
            t.base
        )
    if isinstance(t, RowSum | sp.Sum) or t.is_Add or t.is_Mul:
        return all(_nonnegative(a) for a in (t.args if not isinstance(t, sp.Sum) else [t.function]))
    return False


def _may_vanish(b: sp.Expr) -> bool:
    """Whether a denominator may reach 0 (it is not a clamp, a positive constant, ...)."""
    if isinstance(b, ClampMin) or b.is_positive is True or b.is_number:
        return False
    if b.is_Pow:
        return _may_vanish(b.base)
    if isinstance(b, RowSum | AxisSum) and isinstance(b.args[0], sp.exp):
        return False  # a sum of exponentials (of shifted arguments) is >= 1 or overflows
    if b.is_Add and any(t.is_number and t > 0 for t in b.args):
        return not all(_nonnegative(t) for t in b.args)
    return not isinstance(b, sp.cosh | sp.exp)


def _exact(t: sp.Expr) -> bool:
    """A term whose values are exact small integers (a step, a sign): no cancellation."""
    return all(f.is_number or isinstance(f, F.step | sp.sign) for f in sp.Mul.make_args(t))


def hazards(expr: sp.Expr, data: Iterable[sp.Symbol] = ()) -> list[Hazard]:
    """The numerical hazards left in a (stabilised) batched expression.

    Args:
        expr: the expression.
        data: symbols that are data (inputs, targets), not computed values: a difference
            such as ``1 - y`` of data is exact enough and is not reported.
    """
    data = set(data)
    out: list[Hazard] = []
    # Inside a clamp the hazards are handled: the clamp is the guard.
    seen: set[sp.Basic] = {
        g for c in expr.atoms(ClampMin) for g in sp.preorder_traversal(c.args[0])
    }
    for e in sp.preorder_traversal(expr):
        if e in seen:
            continue
        seen.add(e)
        if isinstance(e, sp.exp) and not _shifted(e.args[0]):
            out.append(Hazard("overflow", e, "exp overflows above 709.8 (88.7 in float32)"))
        elif isinstance(e, sp.cosh | sp.sinh):
            out.append(Hazard("overflow", e, "overflows above |u| ~ 710 (89 in float32)"))
        elif isinstance(e, sp.log) and _may_vanish(e.args[0]):
            out.append(Hazard("log of 0", e, "log of a value that can reach 0 gives -inf"))
        elif isinstance(e, SafeLog | SafeLog1p):
            out.append(
                Hazard("log of 0", e, "its argument can reach 0: clamped at -100, as PyTorch")
            )
        elif e.is_Pow and e.exp.is_number and e.exp < 0 and _may_vanish(e.base):
            out.append(
                Hazard("division", e, "division by a value that can reach 0 (inf, then NaN)")
            )
        elif e.is_Add:
            nums = [t for t in e.args if t.is_number]
            rest = [t for t in e.args if not t.is_number]
            if (
                len(nums) == 1
                and len(rest) == 1
                and (nums[0] > 0) == rest[0].could_extract_minus_sign()
                and not rest[0].free_symbols <= data
                and not _exact(rest[0])
            ):
                out.append(
                    Hazard(
                        "cancellation",
                        e,
                        "relative digits are lost where the terms nearly cancel (the absolute "
                        "error stays at rounding level)",
                    )
                )
    return out


__all__ = [
    "ALL_RULES",
    "GUARD_RULES",
    "IR_RULES",
    "LOG_THROUGH_OUTPUT",
    "LOSS_DIVISION",
    "PROGRAM_RULES",
    "Applied",
    "ClampMin",
    "Hazard",
    "LogCosh",
    "LogSumExp",
    "RowMax",
    "COMPONENT_SOFTMAX",
    "Rule",
    "SIGMOID_COMPLEMENT",
    "SafeLog",
    "SafeLog1p",
    "Softmax",
    "Total",
    "hazards",
    "share_softmax_logsumexp",
    "stabilise",
    "stabilise_network",
    "stabilise_stage",
]
