"""Stage 6 (print), C target: one element of a batched expression -> C99 source text.

The C target lowers every batched statement of the program to loops (``c_lower.py``);
inside a loop, an array is read one element at a time, so what is left to print is a
scalar expression over array elements, numbers and the batch size. This is a
``sympy.printing.c.C99CodePrinter`` subclass: array elements arrive as placeholder
symbols (``names`` maps each to its C access, ``z1[i0 * 4 + i1]``), functions print from
the op registry's SymPy classes (sigmoid through tanh, softplus through log1p: the same
stable forms as the NumPy module), numbers carry the working precision (``0.5f`` for
``float``) so that float stays float.
"""

from __future__ import annotations

from typing import Any

import sympy as sp
from sympy.printing.c import C99CodePrinter
from sympy.printing.precedence import PRECEDENCE

from symgrad.calculus.stability import ClampMin, LogCosh, SafeLog, SafeLog1p
from symgrad.errors import SpecError
from symgrad.ir import ops as F
from symgrad.ir.ops import OPS, fill, op_of

#: The C spelling of each registered op, by its SymPy class: ``{0}`` is the argument,
#: ``{f}`` the precision suffix of <math.h> (``tanhf`` for float), ``{p}`` the prefix of
#: the generated module's helpers (``net_sigmoid``). Helpers are static functions of the
#: generated file (``templates/c/_helpers.c.j2``).
C_OPS: dict[Any, str] = {
    sp.exp: "exp{f}({0})",
    sp.log: "log{f}({0})",
    sp.sqrt: "sqrt{f}({0})",
    sp.Abs: "fabs{f}({0})",
    sp.sign: "{p}_sign({0})",
    sp.tanh: "tanh{f}({0})",
    sp.cosh: "cosh{f}({0})",
    sp.sinh: "sinh{f}({0})",
    sp.sin: "sin{f}({0})",
    sp.cos: "cos{f}({0})",
    sp.Max: "fmax{f}({0}, {1})",
    sp.Min: "fmin{f}({0}, {1})",
    F.sigmoid: "{p}_sigmoid({0})",
    F.step: "{p}_step({0})",
    F.relu: "{p}_relu({0})",
    F.leaky_relu: "{p}_leaky_relu({0})",
    F.elu: "{p}_elu({0})",
    F.softplus: "{p}_softplus({0})",
}
#: The helpers each spelling needs (emitted only when used: no unused static function).
HELPERS: tuple[str, ...] = ("sign", "sigmoid", "step", "relu", "leaky_relu", "elu", "softplus")
HELPERS += ("logcosh", "log", "log1p", "heaviside", "sq")


class SymgradCPrinter(C99CodePrinter):
    """Prints one element of a batched expression as C99 (``real`` is ``float`` or
    ``double``); ``names`` maps placeholder symbol names to their C text."""

    def __init__(self, real: str = "double", prefix: str = "net") -> None:
        super().__init__({"strict": False})
        self.real = real
        self.prefix = prefix
        self.names: dict[str, str] = {}
        self.helpers: set[str] = set()

    @property
    def suffix(self) -> str:
        return "f" if self.real == "float" else ""

    def lit(self, value: float) -> str:
        """A floating literal in the working precision."""
        text = repr(float(value))
        if text in ("inf", "-inf", "nan"):
            raise SpecError(f"the C target cannot print the constant {text}")
        if "." not in text and "e" not in text:
            text += ".0"
        return text + self.suffix

    def doprint_expr(self, expr: sp.Expr) -> str:
        return self._print(expr)

    def _print(self, expr, **kwargs):
        op = op_of(expr)
        if op is not None:
            return self._print_op(expr)
        return super()._print(expr, **kwargs)

    def _print_op(self, expr: sp.Expr) -> str:
        spelling = C_OPS.get(expr.func)
        if spelling is None:
            name = OPS[expr.func].name
            raise SpecError(f"the C target has no spelling for the function '{name}'")
        args = list(expr.args)
        if "{1}" in spelling and len(args) > 2:  # n-ary max/min: fold left
            inner = expr.func(*args[:-1], evaluate=False)
            return self._print_op(expr.func(inner, args[-1], evaluate=False))
        if "{p}_" in spelling:
            self.helpers.add(spelling.split("{p}_")[1].split("(")[0])
        fields = {str(k): self._print(a) for k, a in enumerate(args)}
        fields |= {f"{k}p": v for k, v in fields.items()}
        text = spelling.replace("{f}", self.suffix).replace("{p}", self.prefix)
        return fill(text, fields)

    def _helper(self, name: str, *args: sp.Expr) -> str:
        self.helpers.add(name)
        return f"{self.prefix}_{name}({', '.join(self._print(a) for a in args)})"

    def _print_Symbol(self, expr):
        return self.names.get(expr.name, expr.name)

    _print_Dummy = _print_Symbol

    def _print_Float(self, expr):
        return self.lit(float(expr))

    def _print_Integer(self, expr):
        return self.lit(int(expr))

    def _print_Rational(self, expr):
        return self.lit(float(expr))

    def _print_Half(self, expr):
        return self.lit(0.5)

    def _print_One(self, expr):
        return self.lit(1.0)

    def _print_Zero(self, expr):
        return self.lit(0.0)

    def _print_NegativeOne(self, expr):
        return self.lit(-1.0)

    def _print_Pi(self, expr):
        return self.lit(float(expr))

    _print_Exp1 = _print_Pi
    _print_NumberSymbol = _print_Pi

    def _print_Pow(self, expr, rational=False):
        b, e = expr.base, expr.exp
        v = float(e) if e.is_Number else None
        par = self.parenthesize(b, PRECEDENCE["Pow"])
        if v == -1:
            return f"{self.lit(1)} / {par}"
        if v == 0.5:
            return f"sqrt{self.suffix}({self._print(b)})"
        if v == -0.5:
            return f"{self.lit(1)} / sqrt{self.suffix}({self._print(b)})"
        if v == 2:
            if b.is_Symbol:
                return f"{par} * {par}"
            return self._helper("sq", b)
        if v is not None and v == int(v) and v < 0:
            return f"{self.lit(1)} / {self.parenthesize(b ** int(-v), PRECEDENCE['Mul'])}"
        return f"pow{self.suffix}({self._print(b)}, {self._print(e)})"

    def _print_Heaviside(self, expr):
        h0 = expr.args[1] if len(expr.args) > 1 else sp.S.Half
        self.helpers.add("heaviside")
        return f"{self.prefix}_heaviside({self._print(expr.args[0])}, {self.lit(float(h0))})"

    def _print_LogCosh(self, expr):
        return self._helper("logcosh", expr.args[0])

    def _print_SafeLog(self, expr):
        return self._helper("log", expr.args[0])

    def _print_SafeLog1p(self, expr):
        return self._helper("log1p", expr.args[0])

    def _print_ClampMin(self, expr):
        return f"fmax{self.suffix}({self._print(expr.args[0])}, {self.lit(1e-12)})"

    def _print_Piecewise(self, expr):
        if expr.args[-1].cond != True:  # noqa: E712 - SymPy's true
            raise SpecError("the C target cannot print a piecewise value with no otherwise branch")
        out = self._print(expr.args[-1].expr)
        for e, c in reversed(expr.args[:-1]):
            out = f"({self._print(c)} ? {self._print(e)} : {out})"
        return out

    def _print_Relational(self, expr):
        lhs, rhs = self._print(expr.lhs), self._print(expr.rhs)
        return f"({lhs} {expr.rel_op} {rhs})"

    def _print_BooleanTrue(self, expr):
        return "1"

    def _print_BooleanFalse(self, expr):
        return "0"


#: Stability nodes printed as functions (listed so that the lowering treats them as
#: elementwise).
ELEMENTWISE_NODES = (ClampMin, LogCosh, SafeLog, SafeLog1p, sp.Heaviside)
