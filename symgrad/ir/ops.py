"""The op registry: every function of the component form, declared once.

An :class:`Op` entry holds everything symgrad knows about one function: its SymPy class
(whose ``fdiff`` is the local derivative rule the chain rule reads), its LaTeX, its
NumPy / torch / JAX spellings for generated code, the callables the numeric evaluators
and the autograd references use, whether spec files may call it, and where it has
kinks (``verify`` keeps sample points away from them). Printers and evaluators look ops
up here; a function without an entry is an error that names it. Named activations are
expressions over these ops (:data:`ACTIVATIONS`): adding one is one line there.
Derivatives are written so that substituting the function's own value gives the
forward-value form a person writes (``sigmoid' = sigmoid (1 - sigmoid)``).
Kinks follow PyTorch: ``relu'(0) = 0``, ``leaky_relu'(0) = slope``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy as sp
from sympy.core.function import Application

from symgrad.errors import DerivationError

LEAKY_SLOPE = sp.Rational(1, 100)


class step(sp.Function):  # noqa: N801 - SymPy function names are lower case
    """Heaviside step with step(0) = 0 (the derivative of relu, as in PyTorch)."""

    is_real = True

    @classmethod
    def eval(cls, x):
        if x.is_Number:
            return sp.S.One if x > 0 else sp.S.Zero
        return None

    def fdiff(self, argindex=1):
        return sp.S.Zero


class sigmoid(sp.Function):  # noqa: N801
    """Logistic function 1 / (1 + exp(-x))."""

    is_real = True

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return sp.S.Half
        return None

    def fdiff(self, argindex=1):
        return self * (1 - self)

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return 1 / (1 + sp.exp(-x))


class relu(sp.Function):  # noqa: N801
    """max(x, 0); relu'(0) = 0."""

    is_real = True

    def fdiff(self, argindex=1):
        return step(self.args[0])


class leaky_relu(sp.Function):  # noqa: N801
    """x for x > 0, slope * x otherwise (slope 0.01, PyTorch's default)."""

    is_real = True

    def fdiff(self, argindex=1):
        x = self.args[0]
        return LEAKY_SLOPE + (1 - LEAKY_SLOPE) * step(x)


class elu(sp.Function):  # noqa: N801
    """x for x > 0, exp(x) - 1 otherwise (alpha = 1)."""

    is_real = True

    def fdiff(self, argindex=1):
        x = self.args[0]
        # 1 on the right, exp(x) = elu(x) + 1 on the left: written in the forward value.
        return step(x) + (1 - step(x)) * (self + 1)


class softplus(sp.Function):  # noqa: N801
    """log(1 + exp(x)), printed stably."""

    is_real = True

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return sp.log(1 + sp.exp(x))


@dataclass(frozen=True)
class Op:
    r"""One function of the component form and all its spellings.

    Templates use ``{0}`` for the printed argument and ``{0p}`` for the argument as an
    operand (parenthesised unless atomic); ``{slope}`` etc. are not used: constants are
    written into the template.

    Attributes:
        name: the name in specs, plain text and code comments (``sigmoid``, ``abs``).
        func: the SymPy class; its ``fdiff`` is the derivative rule.
        latex: LaTeX for the function name (``\sigma``); the argument follows in parentheses.
        numpy: NumPy source template (a stable form where one exists).
        torch: torch source template (generated torch code).
        jax: JAX source template (generated JAX code, ``jnp`` is ``jax.numpy``).
        numeric: a NumPy callable (the numeric evaluation of derivations).
        torch_fn: ``torch module -> callable`` (the independent torch reference).
        jax_fn: ``jax module -> callable`` (the independent JAX reference).
        spec: whether spec expressions may call it (the parser's whitelist).
        helper: a helper function the printed NumPy code needs (defined by the template).
        kinks: ``args -> expressions`` whose zeros are points where the function (or its
            derivative) is not differentiable.
        arity: how many arguments it takes (``max``/``min``: 2, and more in specs).
        np_name: its NumPy function, when NumPy has one of the same meaning: a steps file
            may write ``np.<np_name>(...)`` (``np.exp``, ``np.maximum``); every op of one
            argument may also be called bare by its name (``relu(z1)``).
    """

    name: str
    func: Any
    latex: str
    numpy: str
    torch: str
    jax: str
    numeric: Callable[..., Any]
    torch_fn: Callable[[Any], Callable[..., Any]]
    jax_fn: Callable[[Any], Callable[..., Any]]
    spec: bool = False
    helper: str | None = None
    kinks: Callable[..., tuple[sp.Expr, ...]] | None = None
    arity: int = 1
    np_name: str | None = None


def _np_sigmoid(v: Any) -> Any:
    return np.exp(-np.logaddexp(0.0, -v))


def _kink_at_zero(*args: sp.Expr) -> tuple[sp.Expr, ...]:
    return (args[0],)


def _kink_between(*args: sp.Expr) -> tuple[sp.Expr, ...]:
    return tuple(a - b for n, a in enumerate(args) for b in args[n + 1 :])


_LEAKY = float(LEAKY_SLOPE)

OPS: dict[Any, Op] = {}


def register(op: Op) -> Op:
    """Add ``op`` to the registry (replacing an entry for the same SymPy class)."""
    OPS[op.func] = op
    return op


for _op in (
    Op("exp", sp.exp, r"\exp", "np.exp({0})", "torch.exp({0})", "jnp.exp({0})",
       np.exp, lambda t: t.exp, lambda j: j.numpy.exp, spec=True, np_name="exp"),
    Op("log", sp.log, r"\log", "np.log({0})", "torch.log({0})", "jnp.log({0})",
       np.log, lambda t: t.log, lambda j: j.numpy.log, spec=True, np_name="log"),
    Op("sqrt", sp.sqrt, r"\sqrt", "np.sqrt({0})", "torch.sqrt({0})", "jnp.sqrt({0})",
       np.sqrt, lambda t: t.sqrt, lambda j: j.numpy.sqrt, spec=True, np_name="sqrt"),
    Op("abs", sp.Abs, r"\operatorname{abs}", "np.abs({0})", "torch.abs({0})", "jnp.abs({0})",
       np.abs, lambda t: t.abs, lambda j: j.numpy.abs, spec=True, kinks=_kink_at_zero,
       np_name="abs"),
    Op("sign", sp.sign, r"\operatorname{sign}", "np.sign({0})", "torch.sign({0})",
       "jnp.sign({0})", np.sign, lambda t: t.sign, lambda j: j.numpy.sign,
       kinks=_kink_at_zero, np_name="sign"),
    Op("tanh", sp.tanh, r"\tanh", "np.tanh({0})", "torch.tanh({0})", "jnp.tanh({0})",
       np.tanh, lambda t: t.tanh, lambda j: j.numpy.tanh, spec=True, np_name="tanh"),
    Op("cosh", sp.cosh, r"\cosh", "np.cosh({0})", "torch.cosh({0})", "jnp.cosh({0})",
       np.cosh, lambda t: t.cosh, lambda j: j.numpy.cosh, spec=True, np_name="cosh"),
    Op("sinh", sp.sinh, r"\sinh", "np.sinh({0})", "torch.sinh({0})", "jnp.sinh({0})",
       np.sinh, lambda t: t.sinh, lambda j: j.numpy.sinh, spec=True, np_name="sinh"),
    Op("sin", sp.sin, r"\sin", "np.sin({0})", "torch.sin({0})", "jnp.sin({0})",
       np.sin, lambda t: t.sin, lambda j: j.numpy.sin, spec=True, np_name="sin"),
    Op("cos", sp.cos, r"\cos", "np.cos({0})", "torch.cos({0})", "jnp.cos({0})",
       np.cos, lambda t: t.cos, lambda j: j.numpy.cos, spec=True, np_name="cos"),
    Op("max", sp.Max, r"\max", "np.maximum({0}, {1})", "torch.maximum({0}, {1})",
       "jnp.maximum({0}, {1})", np.maximum, lambda t: t.maximum, lambda j: j.numpy.maximum,
       spec=True, kinks=_kink_between, arity=2, np_name="maximum"),
    Op("min", sp.Min, r"\min", "np.minimum({0}, {1})", "torch.minimum({0}, {1})",
       "jnp.minimum({0}, {1})", np.minimum, lambda t: t.minimum, lambda j: j.numpy.minimum,
       spec=True, kinks=_kink_between, arity=2, np_name="minimum"),
    Op("sigmoid", sigmoid, r"\sigma", "_sigmoid({0})", "torch.sigmoid({0})",
       "jax.nn.sigmoid({0})", _np_sigmoid, lambda t: t.sigmoid, lambda j: j.nn.sigmoid,
       spec=True, helper="_sigmoid"),
    Op("step", step, "", "np.heaviside({0}, 0)", "({0} > 0).to({0p}.dtype)",
       "({0} > 0).astype({0p}.dtype)",
       lambda v: (np.asarray(v) > 0).astype(float),
       lambda t: lambda v: (v > 0).to(v.dtype),
       lambda j: lambda v: (v > 0).astype(v.dtype), kinks=_kink_at_zero),
    Op("relu", relu, r"\operatorname{relu}", "np.maximum({0}, 0)", "torch.relu({0})",
       "jax.nn.relu({0})", lambda v: np.maximum(v, 0.0), lambda t: t.relu,
       lambda j: j.nn.relu, kinks=_kink_at_zero),
    Op("leaky_relu", leaky_relu, r"\operatorname{leaky\_relu}",
       f"np.where({{0}} > 0, {{0}}, {_LEAKY!r}*{{0p}})",
       f"torch.nn.functional.leaky_relu({{0}}, {_LEAKY!r})",
       f"jax.nn.leaky_relu({{0}}, {_LEAKY!r})",
       lambda v: np.where(v > 0, v, _LEAKY * v),
       lambda t: lambda v: t.nn.functional.leaky_relu(v, _LEAKY),
       lambda j: lambda v: j.nn.leaky_relu(v, _LEAKY), kinks=_kink_at_zero),
    Op("elu", elu, r"\operatorname{elu}", "np.where({0} > 0, {0}, np.expm1(np.minimum({0}, 0)))",
       "torch.nn.functional.elu({0})", "jax.nn.elu({0})",
       lambda v: np.where(v > 0, v, np.expm1(np.minimum(v, 0.0))),
       lambda t: t.nn.functional.elu, lambda j: j.nn.elu, kinks=_kink_at_zero),
    Op("softplus", softplus, r"\operatorname{softplus}",
       # log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)): stable, cheaper than logaddexp.
       "(np.maximum({0}, 0) + np.log1p(np.exp(-np.abs({0}))))",
       "torch.nn.functional.softplus({0})", "jax.nn.softplus({0})",
       lambda v: np.logaddexp(0.0, v), lambda t: t.nn.functional.softplus,
       lambda j: j.nn.softplus),
):  # fmt: skip
    register(_op)


_FIELD = re.compile(r"\{(\d+p?)\}")


def fill(template: str, fields: dict[str, str]) -> str:
    """``template`` with ``{0}``, ``{0p}``, ``{1}`` ... replaced by ``fields`` (one pass, so
    printed arguments are never re-read as placeholders)."""
    return _FIELD.sub(lambda m: fields[m.group(1)], template)


def lookup(func: Any) -> Op:
    """The registry entry of a SymPy function class.

    Raises:
        DerivationError: ``func`` has no entry (names the function).
    """
    try:
        return OPS[func]
    except (KeyError, TypeError):
        name = getattr(func, "__name__", str(func))
        raise DerivationError(
            f"no op registered for function '{name}' (add an Op entry in symgrad/ir/ops.py)"
        ) from None


def op_of(expr: sp.Basic) -> Op | None:
    """The entry of the function ``expr`` applies, or None (arithmetic, symbols, ...)."""
    return OPS.get(expr.func) if isinstance(expr, Application) else None


def kinks(expr: sp.Basic) -> list[sp.Expr]:
    """Every expression in ``expr`` whose zeros are non-differentiable points."""
    out: list[sp.Expr] = []
    for node in sp.preorder_traversal(expr):
        op = op_of(node)
        if op is not None and op.kinks is not None:
            out.extend(op.kinks(*node.args))
    return out


#: Functions a spec expression may call, by name (the parser's whitelist), from the registry.
SPEC_FUNCTIONS: dict[str, Any] = {op.name: op.func for op in OPS.values() if op.spec}
#: Every registered function by name (component formulas in ``check --formula`` call any).
FUNCTIONS: dict[str, Any] = {op.name: op.func for op in OPS.values()}

#: Named elementwise activations, as expressions in the Symbol ``x`` over registered ops.
#: Adding an activation is one line here: derive, codegen, the documents, verify and the
#: references all read it through the ops it is built from.
X = sp.Symbol("x", real=True)
ACTIVATIONS: dict[str, sp.Expr] = {
    "identity": X,
    "sigmoid": sigmoid(X),
    "tanh": sp.tanh(X),
    "relu": relu(X),
    "leaky_relu": leaky_relu(X),
    "softplus": softplus(X),
    "elu": elu(X),
    "silu": X * sigmoid(X),
}

#: Symgrad's own function classes.
CUSTOM_FUNCTIONS = (step, sigmoid, relu, leaky_relu, elu, softplus)
