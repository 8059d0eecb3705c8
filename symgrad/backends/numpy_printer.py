"""Printing stage: batched matrix expressions -> NumPy source text.

A ``sympy.printing.numpy.NumPyPrinter`` subclass with one ``_print_<Class>`` per
layout operator (``layout.py``) and per symgrad function (``functions.py``). Functions
print in numerically stable forms (sigmoid through tanh, softplus through logaddexp,
softmax and log-sum-exp with the max shifted out); the stable forms are identities,
not derivative rules, so every derivative still comes from the derivation.
"""

from __future__ import annotations

import sympy as sp
from sympy.printing.numpy import NumPyPrinter
from sympy.printing.precedence import PRECEDENCE

from symgrad.calculus.forward_values import tanh_from_ratio
from symgrad.calculus.layout import BMatMul, BOuter, ColSum, RowSum
from symgrad.ir import ops as F


class Softmax(sp.Function):
    """``exp(v) / RowSum(exp(v))`` recognised for a stable printing."""

    nargs = 1


class LogSumExp(sp.Function):
    """``log(RowSum(exp(v)))`` recognised for a stable printing."""

    nargs = 1


class Total(sp.Function):
    """The sum of every entry of an array (a loss value)."""

    nargs = 1


class RowMax(sp.Function):
    """The per-sample maximum, an (n, 1) column (for shifted exponentials)."""

    nargs = 1


def share_softmax_logsumexp(exprs: list[sp.Expr]) -> list[sp.Expr]:
    """Where softmax(u) and logsumexp(u) are both needed (cross-entropy), write both through
    m = max(u), e = exp(u - m), s = sum(e): the program-wide CSE then computes the shifted
    exponential once. Both forms stay stable."""
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


class LogCosh(sp.Function):
    """``log(cosh(v))``, printed as ``logaddexp(v, -v) - log 2`` (no overflow)."""

    nargs = 1


class ClampMin(sp.Function):
    """``max(v, 1e-12)``: the guarded denominator of a BCE gradient (as PyTorch's)."""

    nargs = 1


class SafeLog(sp.Function):
    """A log in a loss value, clamped at -100 like PyTorch's BCE."""

    nargs = 1


def recognise(expr: sp.Expr) -> sp.Expr:
    """Replace softmax and log-sum-exp patterns by nodes that print stably."""

    def is_softmax(e: sp.Expr) -> bool:
        if not e.is_Mul:
            return False
        fs = sp.Mul.make_args(e)
        exps = [f for f in fs if isinstance(f, sp.exp)]
        dens = [f for f in fs if f.is_Pow and f.exp == -1 and isinstance(f.base, RowSum)]
        return (
            len(fs) == 2 and len(exps) == 1 and len(dens) == 1 and dens[0].base.args[0] == exps[0]
        )

    expr = tanh_from_ratio(expr)
    expr = expr.replace(
        lambda e: isinstance(e, sp.log | SafeLog) and isinstance(e.args[0], sp.cosh),
        lambda e: LogCosh(e.args[0].args[0]),
    )
    expr = expr.replace(
        is_softmax, lambda e: Softmax([f for f in e.args if isinstance(f, sp.exp)][0].args[0])
    )
    return expr.replace(
        lambda e: (
            isinstance(e, sp.log | SafeLog)
            and isinstance(e.args[0], RowSum)
            and isinstance(e.args[0].args[0], sp.exp)
        ),
        lambda e: LogSumExp(e.args[0].args[0].args[0]),
    )


class SymgradNumPyPrinter(NumPyPrinter):
    """Prints batched expressions; ``names`` maps Vec/Mat names to variable names."""

    def __init__(self, names: dict[str, str] | None = None, settings=None):
        super().__init__(settings or {})
        self.names = names or {}
        self.helpers: set[str] = set()

    def _module_format(self, fqn, register=True):
        return super()._module_format(fqn, register).replace("numpy.", "np.")

    def _print_Symbol(self, expr):
        return self.names.get(expr.name, expr.name)

    _print_Vec = _print_Symbol
    _print_Mat = _print_Symbol
    _print_Dummy = _print_Symbol

    def _atom(self, e: sp.Expr) -> str:
        """``e`` printed as an operand of a method call or ``@`` (parenthesised unless atomic)."""
        text = self._print(e)
        if e.is_Symbol or isinstance(e, sp.Function) and not isinstance(e, BMatMul):
            return text
        return f"({text})"

    def _print_BMatMul(self, expr):
        # Parenthesised: in Python * and @ share a precedence level, so a * (b @ W) must not
        # print as a * b @ W. The code generator drops parentheses around a whole statement.
        v, w, t = expr.args
        return f"({self._atom(v)} @ {self._print(w)}{'.T' if t == 1 else ''})"

    def _print_BOuter(self, expr):
        # numpy's matmul takes a slow non-BLAS path for a batch of one; np.dot does not,
        # but np.dot is a little slower than matmul for large batches: pick by batch size.
        u, v = self._atom(expr.args[0]), self._atom(expr.args[1])
        return f"({u}.T @ {v} if n > 1 else np.dot({u}.T, {v}))"

    def _print_ColSum(self, expr):
        return f"{self._atom(expr.args[0])}.sum(axis=0)"

    def _print_RowSum(self, expr):
        return f"{self._atom(expr.args[0])}.sum(axis=1, keepdims=True)"

    def _print_sigmoid(self, expr):
        self.helpers.add("_sigmoid")
        return f"_sigmoid({self._print(expr.args[0])})"

    def _print_step(self, expr):
        # heaviside(x, 0) is step with step(0) = 0 and keeps x's dtype (a bool would not).
        return f"np.heaviside({self._print(expr.args[0])}, 0)"

    def _print_relu(self, expr):
        return f"np.maximum({self._print(expr.args[0])}, 0)"

    def _print_leaky_relu(self, expr):
        x = self._print(expr.args[0])
        slope = self._print(F.LEAKY_SLOPE)
        return f"np.where({x} > 0, {x}, {slope}*{self._atom(expr.args[0])})"

    def _print_elu(self, expr):
        x = self._print(expr.args[0])
        return f"np.where({x} > 0, {x}, np.expm1(np.minimum({x}, 0)))"

    def _print_softplus(self, expr):
        # log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)): stable, and cheaper than logaddexp.
        x = self._print(expr.args[0])
        return f"(np.maximum({x}, 0) + np.log1p(np.exp(-np.abs({x}))))"

    def _print_Softmax(self, expr):
        self.helpers.add("_softmax")
        return f"_softmax({self._print(expr.args[0])})"

    def _print_LogSumExp(self, expr):
        self.helpers.add("_logsumexp")
        return f"_logsumexp({self._print(expr.args[0])})"

    def _print_Heaviside(self, expr):
        # np.heaviside keeps float32 (SymPy's default np.select of [0, 0.5, 1] is float64);
        # H(0) = 1/2 as SymPy defines it, which is also torch.maximum's split gradient at ties.
        h0 = expr.args[1] if len(expr.args) > 1 else sp.S.Half
        return f"np.heaviside({self._print(expr.args[0])}, {float(h0)!r})"

    def _print_Total(self, expr):
        return f"np.sum({self._print(expr.args[0])})"

    def _print_RowMax(self, expr):
        return f"{self._atom(expr.args[0])}.max(axis=1, keepdims=True)"

    def _print_Pow(self, expr, rational=False):
        b, e = expr.base, expr.exp
        v = float(e) if e.is_Number else None  # rationals may have become Floats already
        if v == -1:
            return f"1 / {self.parenthesize(b, PRECEDENCE['Pow'])}"
        if v == 0.5:
            return f"np.sqrt({self._print(b)})"
        if v == -0.5:
            return f"1 / np.sqrt({self._print(b)})"
        if e.is_Integer and e < 0:
            return f"1 / {self.parenthesize(b**-e, PRECEDENCE['Mul'])}"
        return super()._print_Pow(expr, rational=rational)

    def _print_LogCosh(self, expr):
        v = self._print(expr.args[0])
        return f"np.logaddexp({v}, -{self._atom(expr.args[0])}) - np.log(2)"

    def _print_ClampMin(self, expr):
        return f"np.maximum({self._print(expr.args[0])}, 1e-12)"

    def _print_SafeLog(self, expr):
        self.helpers.add("_log")
        return f"_log({self._print(expr.args[0])})"

    def _print_Max(self, expr):
        args = [self._print(a) for a in expr.args]
        out = args[0]
        for a in args[1:]:
            out = f"np.maximum({out}, {a})"
        return out

    def _print_Min(self, expr):
        args = [self._print(a) for a in expr.args]
        out = args[0]
        for a in args[1:]:
            out = f"np.minimum({out}, {a})"
        return out

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Rational(self, expr):
        return repr(float(expr)) if expr.q != 1 else str(expr.p)

    def _print_Half(self, expr):
        return "0.5"


__all__ = [
    "BMatMul",
    "BOuter",
    "ColSum",
    "ClampMin",
    "LogCosh",
    "LogSumExp",
    "RowSum",
    "SafeLog",
    "Softmax",
    "SymgradNumPyPrinter",
    "recognise",
]
