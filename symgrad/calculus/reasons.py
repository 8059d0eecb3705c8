"""Stage 3 (derive), the reasons of a step: why its local derivative is what it is.

Read off the expressions the chain rule differentiated, never from a layer's name, and
kept on the step record (``Step.rules``, ``Step.reason``) so that the documents turn them
into words without differentiating anything:

- the rules of differentiation ``d body / d x`` uses (sum, product, quotient, power,
  chain, a function of one entry, a sum over an index, a piecewise function);
- the contraction the chain rule's sum goes through (:class:`Contraction`: the Kronecker
  brackets on its summation index, and whether every term carries one, so that the sum
  collapses to one term);
- each of symgrad's own activation functions the body applies, with its derivative from
  its definition in exponentials (:class:`FunctionDerivative`);
- for a step the loss gradient was fused into, the forms between the adjoint with the
  loss gradient substituted and the simplified result (:func:`fusion_forms`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import sympy as sp
from sympy.functions.elementary.hyperbolic import HyperbolicFunction

from symgrad.ir.indices import pull_out
from symgrad.ir.network import Loss
from symgrad.ir.ops import step as step_fn

#: A rule of differentiation.
Rule = Literal["sum", "product", "quotient", "power", "chain", "function", "index sum", "piecewise"]

#: The rules in the order a sentence lists them.
RULES: tuple[Rule, ...] = (
    "sum",
    "product",
    "quotient",
    "power",
    "chain",
    "function",
    "index sum",
    "piecewise",
)


def _is_piecewise(e: sp.Basic) -> bool:
    return isinstance(e, sp.Abs | sp.Max | sp.Min | step_fn) or e.func.__name__ in (
        "relu",
        "leaky_relu",
        "elu",
    )


def _rules_at(e: sp.Basic, dep: Callable[[sp.Basic], bool], found: set[str]) -> None:
    """The rule one node of ``body`` brings into ``d body / d base`` (``dep``: whether a
    node depends on ``base``)."""
    if isinstance(e, sp.Add) and sum(dep(a) for a in e.args) > 1:
        found.add("sum")
    elif isinstance(e, sp.Mul):
        if sum(dep(a) for a in e.args) > 1:
            neg = any(isinstance(a, sp.Pow) and a.exp.is_negative and dep(a) for a in e.args)
            found.add("quotient" if neg else "product")
    elif isinstance(e, sp.Pow) and dep(e.base) and not dep(e.exp):
        found.add("quotient" if e.exp == -1 else "power")
        if not isinstance(e.base, sp.Indexed | sp.Symbol):
            found.add("chain")
    elif isinstance(e, sp.Sum) and dep(e.function):
        found.add("index sum")
    elif isinstance(e, sp.Function):
        if _is_piecewise(e):
            found.add("piecewise")
        if any(dep(a) and not isinstance(a, sp.Indexed | sp.Symbol) for a in e.args):
            found.add("chain")
        elif not _is_piecewise(e):
            found.add("function")


@lru_cache(maxsize=1024)
def rules_used(body: sp.Basic, x: sp.Basic) -> tuple[Rule, ...]:
    """The rules of differentiation that d body / d x uses, read off the expression, in
    :data:`RULES` order (``x`` an entry ``a[k]`` or a scalar; memoised)."""
    found: set[str] = set()
    base = x.base if isinstance(x, sp.Indexed) else x
    known: dict[sp.Basic, bool] = {}

    def dep(e: sp.Basic) -> bool:  # e.has(base), each sub-expression asked once
        hit = known.get(e)
        if hit is None:
            hit = known[e] = e == base or any(dep(a) for a in e.args)
        return hit

    for e in sp.preorder_traversal(body):
        if isinstance(e, sp.Basic) and dep(e):
            _rules_at(e, dep, found)
    return tuple(r for r in RULES if r in found)


@dataclass(frozen=True)
class Contraction:
    """The chain rule's sum over ``dummy`` against the brackets of a local derivative.

    Attributes:
        dummy: the summation index (``i`` of ``sum_i g_i d out_i / d in_k``).
        brackets: the Kronecker brackets ``[dummy = ...]`` of the local derivative, in
            SymPy's sort order.
        collapses: every term carries one: the sum collapses to the one term the bracket
            picks; otherwise that term is picked and the other terms keep their sum.
    """

    dummy: sp.Symbol
    brackets: tuple[sp.KroneckerDelta, ...]
    collapses: bool

    def renamed(self, names: dict[sp.Basic, sp.Basic]) -> Contraction:
        """The same contraction with indices renamed (as a document shows them)."""
        brackets = sorted((b.xreplace(names) for b in self.brackets), key=sp.default_sort_key)
        return Contraction(names.get(self.dummy, self.dummy), tuple(brackets), self.collapses)


@lru_cache(maxsize=1024)
def contraction(local: sp.Expr, dummy: sp.Symbol) -> Contraction | None:
    """How the chain rule's sum over ``dummy`` meets the brackets of ``local``; None where
    no bracket names ``dummy`` (memoised)."""
    brackets = [
        d
        for d in sorted(local.atoms(sp.KroneckerDelta), key=sp.default_sort_key)
        if dummy in d.free_symbols
    ]
    if not brackets:
        return None
    terms = sp.Add.make_args(sp.expand(local))
    collapses = all(any(dummy in d.free_symbols for d in t.atoms(sp.KroneckerDelta)) for t in terms)
    return Contraction(dummy, tuple(brackets), collapses)


def own_functions(body: sp.Expr, arg: sp.Expr) -> list[sp.Function]:
    """The activation functions applied to ``arg`` (``sigma(z_i)``) whose derivative a
    document derives from their definition: symgrad's own, and the hyperbolic functions
    SymPy defines (``tanh``)."""
    out = []
    for f in body.atoms(sp.Function):
        own = type(f).__module__.startswith("symgrad.") or isinstance(f, HyperbolicFunction)
        if f.args == (arg,) and own:
            out.append(f)
    return sorted(out, key=sp.default_sort_key)


#: The variable of a function's derivative from its definition.
X = sp.Symbol("x", real=True)


@dataclass(frozen=True)
class FunctionDerivative:
    """An activation function's derivative and where it comes from.

    Attributes:
        function: the SymPy function class (``sigmoid``).
        derivative: ``f'(x)`` as the op's own rule gives it.
        definition: ``f(x)`` in exponentials, None where the function has no such form
            (or where the derivative of that form does not agree with ``derivative``:
            then nothing is shown).
        definition_derivative: the derivative of ``definition`` (None with it).
        rules: the rules of differentiation the definition's derivative uses.
    """

    function: type
    derivative: sp.Expr
    definition: sp.Expr | None = None
    definition_derivative: sp.Expr | None = None
    rules: tuple[Rule, ...] = ()
    #: no definition in exponentials, and the derivative selects a piece with a step
    #: ``[x > 0]`` (relu and its kin)
    piecewise: bool = False


#: Each function's derivative, once per process.
_FUNCTIONS: dict[type, FunctionDerivative] = {}


def function_derivative(fn: type) -> FunctionDerivative:
    """``fn``'s derivative, and its definition in exponentials with that definition's
    derivative where they agree (memoised: once per function)."""
    hit = _FUNCTIONS.get(fn)
    if hit is None:
        hit = _FUNCTIONS[fn] = _function_derivative(fn)
    return hit


def _function_derivative(fn: type) -> FunctionDerivative:
    fx = fn(X)
    fd = sp.diff(fx, X)
    definition = fx.rewrite(sp.exp)
    if definition != fx and not definition.has(fn):
        dd = sp.diff(definition, X)
        with contextlib.suppress(Exception):
            if sp.simplify(dd - fd.rewrite(sp.exp)) != 0:
                return FunctionDerivative(fn, fd)
        return FunctionDerivative(fn, fd, definition, dd, rules_used(definition, X))
    return FunctionDerivative(fn, fd, piecewise=fd.has(step_fn))


@dataclass(frozen=True)
class Reason:
    """Why a step's local derivative is what it is (``Step.reason``).

    Attributes:
        rules: the rules of differentiation it uses (``Step.rules``).
        structure: the local Jacobian's structure, ``Step.jacobian`` ("loss", "diagonal",
            "linear", "full", "param").
        contraction: how the chain rule's sum meets its brackets (None: no bracket on the
            summation index).
        functions: symgrad's own activation functions the stage applies to its input,
            each with its derivative from its definition.
    """

    rules: tuple[Rule, ...]
    structure: str
    contraction: Contraction | None
    functions: tuple[FunctionDerivative, ...] = ()


def apply_sum_identity(expr: sp.Expr, loss: Loss) -> sp.Expr:
    """``sum_i y_i = 1`` where the loss declares it (targets one-hot or probabilities)."""
    if not any(kind == "sum_y_is_1" for kind, _ in loss.identities):
        return expr
    y = loss.target
    return sp.expand(
        expr.replace(
            lambda e: (
                isinstance(e, sp.Sum)
                and e.function == y[e.limits[0][0]]
                and e.limits[0][1] == 0
                and e.limits[0][2] == loss.width - 1
            ),
            lambda e: sp.S.One,
        )
    )


#: The chain rule's output and input indices (``d out_i / d in_k``).
_I = sp.Symbol("i", integer=True)
_K = sp.Symbol("k", integer=True)


def fusion_forms(
    unfused: sp.Expr, upstream: str, g_loss: sp.Expr, loss: Loss
) -> tuple[sp.Expr, ...]:
    """How a fused step's adjoint simplifies, in its free index ``k`` (as a document
    states ``dL/dz_k``): the adjoint with the loss gradient ``g_loss`` (in ``i``)
    substituted for ``upstream``, then its expanded form where that is shorter, then the
    form after the loss's identity ``sum_i y_i = 1`` where one applies."""
    un = unfused.xreplace({_I: _K, _K: _I})
    s1 = un.replace(
        lambda e: isinstance(e, sp.Indexed) and str(e.base.label) == upstream,
        lambda e: g_loss.xreplace({_I: e.indices[0]}),
    )
    s2 = sp.expand(
        pull_out(
            sp.expand(s1).replace(
                lambda e: isinstance(e, sp.Sum),
                lambda e: sp.Sum(sp.expand(e.function), *e.limits),
            )
        )
    )
    forms = [s1]
    if sp.count_ops(s2) < sp.count_ops(s1):  # the expanded form where it is shorter
        forms.append(s2)
    s3 = apply_sum_identity(s2, loss)
    if s3 != s2:
        forms.append(s3)
    return tuple(forms)


__all__ = [
    "RULES",
    "Contraction",
    "FunctionDerivative",
    "Reason",
    "Rule",
    "apply_sum_identity",
    "contraction",
    "function_derivative",
    "fusion_forms",
    "own_functions",
    "rules_used",
]
