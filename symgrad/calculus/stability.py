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

The nodes are defined in ``stability_nodes.py``, each rule's pattern function in
``stability_patterns.py``, the hazards ``audit`` reports in ``stability_hazards.py`` and the
pass over the derivation (a loss gradient that divides by the output, fused into its
consumers) in ``stability_fusion.py``; this module holds the rules and applies them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import sympy as sp

from symgrad.calculus.layout import RowSum
from symgrad.calculus.stability_hazards import Hazard, hazards
from symgrad.calculus.stability_nodes import (
    ClampMin,
    LogCosh,
    LogSumExp,
    RowMax,
    SafeLog,
    SafeLog1p,
    Softmax,
    Total,
)
from symgrad.calculus.stability_patterns import (
    _bce_shaped,
    _component_logsumexp,
    _component_softmax,
    _exp_ratio,
    _exp_rational,
    _expm1,
    _guard_bce,
    _guard_sqrt,
    _hyperbolic_ratio,
    _hypot,
    _is_log,
    _log1p,
    _log_c_plus_exp,
    _log_one_minus_sigmoid,
    _logaddexp,
    _lse,
    _one_plus_exp,
    _sigmoid_complement,
    _sigmoid_pow,
    _softmax_ratio,
    _sqrt1pm1,
    _sum_of_squares,
)
from symgrad.ir import ops as F
from symgrad.ir.network import Network, Stage

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
COMPONENT_LOGSUMEXP = Rule(
    "logsumexp-over-index",
    "log(sum_j exp(u[j]))   (a component form, any summation index)",
    "m + log(sum_j exp(u[j] - m)), m = max_j u[j]",
    "exp(u) overflows for u > 709: log(inf)",
    lambda e: _component_logsumexp(e) is not None,
    _component_logsumexp,
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

    The result and its rewrites are memoised per expression and rules (code generation
    stabilises the same expressions for every target, and documents print the programs).
    """
    key = (expr, tuple(rules))
    hit = _STABLE.get(key)
    if hit is None:
        applied: list[Applied] = []
        hit = (_stabilise(expr, rules, applied), tuple(applied))
        _STABLE[key] = hit
        while len(_STABLE) > _STABLE_SIZE:
            _STABLE.popitem(last=False)
    else:
        _STABLE.move_to_end(key)
    if log is not None:
        log.extend(hit[1])
    return hit[0]


#: (expression, rules) -> (stable form, rewrites), least recently used dropped first.
_STABLE: OrderedDict[tuple, tuple[sp.Expr, tuple[Applied, ...]]] = OrderedDict()
_STABLE_SIZE = 8192


def clear() -> None:
    """Forget every memoised stabilisation."""
    _STABLE.clear()


def _stabilise(expr: sp.Expr, rules: Sequence[Rule], log: list[Applied]) -> sp.Expr:
    nodes = set(sp.preorder_traversal(expr))
    for _ in range(8):  # each pass can expose a new pattern; a few passes reach a fixed point
        before = expr
        for rule in rules:
            # a rule that matches no node leaves the expression as it is: no tree rebuild
            if not any(rule.match(n) for n in nodes):
                continue

            def apply(e: sp.Basic, rule: Rule = rule) -> sp.Basic:
                new = rule.apply(e)
                if new is None or new == e:
                    return e
                log.append(Applied(rule, e, new))
                return new

            new_expr = expr.replace(rule.match, apply)
            if new_expr is not expr:
                expr = new_expr
                nodes = set(sp.preorder_traversal(expr))
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
    "COMPONENT_LOGSUMEXP",
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
