"""Plain-text printing shared by every text output (terminal documents, code comments,
``check``'s formula syntax, the audit): one printer, so a Kronecker delta, a registered op,
a sum or a matrix product reads the same everywhere. An output that needs another syntax
for one node (``check`` writes ``sum(body, k)``) subclasses it for that node only.

The printer knows symgrad's matrix and batched nodes by their class names (``MatVec``,
``BMatMul``, ``RowSum``, ...): SymPy dispatches on the class name, so this module needs no
import from the later stages that define them.
"""

from __future__ import annotations

import re

import sympy as sp
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

from symgrad.ir.ops import op_of

#: Nodes printed with ``@``: in Python ``*``, ``/`` and ``@`` share one precedence level
#: and read left to right, so as a factor such a product is parenthesised.
_MATMUL_NODES = frozenset({"BMatMul", "BOuter", "MatVec", "TMatVec"})
#: An adjoint's name (``da1``, ``dW2``, ``delta2``): printed first in a product.
_ADJOINT = re.compile(r"^(d(?!elta)[A-Za-z]|delta)")


class PlainTextPrinter(StrPrinter):
    """SymPy's StrPrinter with symgrad's plain-text conventions.

    - a Kronecker delta is an Iverson bracket ``[i == k]`` (never a second "delta");
    - registered ops print by their registry name (``abs``, not SymPy's ``Abs``);
    - a sum prints as ``sum_k body`` (``sum_k (body)`` for a sum body, or always where
      ``paren_sum_body``), and a sum that is itself an operand is parenthesised
      (``(sum_j exp(z2[j]))**2``, the square of the sum);
    - matrix form: ``W2.T @ delta2``, ``outer(u, v)``, ``diag(v)``, ``sum(v)``; batched
      form: ``A1 @ W2.T``, ``rowsum(V)``, ``colsum(V)``;
    - a matrix product is parenthesised as an operand of ``*``, ``/``, ``**`` or another
      ``@`` (``a1*(A2 @ W2)``), since Python reads ``a1*A2 @ W2`` as ``(a1*A2) @ W2``.
    """

    #: Print the adjoint factors of a product first (``da1*a1*(1 - a1)``): the chain
    #: rule's reading order (the documents); off for formula syntaxes.
    adjoints_first = False

    def __init__(self, settings: dict | None = None) -> None:
        super().__init__(settings)
        self._in_mul = False

    # -- precedence ----------------------------------------------------------------------
    def parenthesize(self, item: sp.Basic, level: int, strict: bool = False) -> str:
        if type(item).__name__ in _MATMUL_NODES and self._in_mul:
            return f"({self._print(item)})"
        if isinstance(item, sp.Sum) and level >= PRECEDENCE["Mul"]:
            return f"({self._print(item)})"
        text: str = super().parenthesize(item, level, strict)
        # at Add's level too: SymPy parenthesises a negative product's factors at that level
        if level >= PRECEDENCE["Add"] and has_top_level_matmul(text):
            return f"({text})"
        return text

    def _op(self, e: sp.Basic) -> str:
        """An operand of ``@``: parenthesised unless a power, a call or an atom."""
        text = self.parenthesize(e, PRECEDENCE["Mul"])
        if has_top_level_matmul(text):
            return f"({text})"
        return text

    def _transposed(self, e: sp.Basic) -> str:
        """``e.T``: ``e`` parenthesised unless a call or an atom (``.T`` binds tightest)."""
        return self.parenthesize(e, PRECEDENCE["Pow"], strict=True) + ".T"

    # -- scalar nodes --------------------------------------------------------------------
    def _print_KroneckerDelta(self, expr: sp.KroneckerDelta) -> str:
        a, b = (self._print(v) for v in expr.args)
        return f"[{a} == {b}]"

    def _print_Function(self, expr: sp.Function) -> str:
        op = op_of(expr)
        if op is not None:
            return f"{op.name}({self.stringify(expr.args, ', ')})"
        return super()._print_Function(expr)

    _print_Abs = _print_Function
    _print_Max = _print_Function
    _print_Min = _print_Function

    #: Always parenthesise a sum's body (``sum_k (W[k, i]*d[k])``), not only a sum's.
    paren_sum_body = False

    def _print_Sum(self, expr: sp.Sum) -> str:
        heads = "".join(
            f"sum_{self._print(v)} " if lo == 0 else f"sum_{{{v}={lo}..{hi}}} "
            for v, lo, hi in reversed(expr.limits)
        )
        saved, self._in_mul = self._in_mul, False
        try:
            body = self._print(expr.function)
        finally:
            self._in_mul = saved
        if self.paren_sum_body or expr.function.is_Add:
            body = f"({body})"
        return heads + body

    def _print_Add(self, expr: sp.Add, order: str | None = None) -> str:
        saved, self._in_mul = self._in_mul, False
        try:
            return super()._print_Add(expr, order)
        finally:
            self._in_mul = saved

    def _print_Mul(self, expr: sp.Mul) -> str:
        saved, self._in_mul = self._in_mul, True
        try:
            if self.adjoints_first:
                ordered = self._adjoints_first(expr)
                if ordered is not None:
                    return ordered
            return super()._print_Mul(expr)
        finally:
            self._in_mul = saved

    def _adjoints_first(self, expr: sp.Mul) -> str | None:
        """``da1*a1*(1 - a1)`` (brackets last); None where the default order stays."""
        if expr.could_extract_minus_sign() or any(f.is_Rational for f in expr.args):
            return None
        factors = list(sp.Mul.make_args(expr))
        if any(isinstance(f, sp.Pow) and f.exp.is_negative for f in factors):
            return None
        first = [f for f in factors if _is_adjoint(f)]
        last = [f for f in factors if isinstance(f, sp.KroneckerDelta)]
        if not first and not last:
            return None
        rest = [f for f in factors if not _is_adjoint(f) and not isinstance(f, sp.KroneckerDelta)]
        return "*".join(self.parenthesize(f, PRECEDENCE["Mul"]) for f in first + rest + last)

    # -- matrix form (per sample) --------------------------------------------------------
    def _print_MatVec(self, expr: sp.Expr) -> str:
        return f"{self._op(expr.args[0])} @ {self._op(expr.args[1])}"

    def _print_TMatVec(self, expr: sp.Expr) -> str:
        return f"{self._transposed(expr.args[0])} @ {self._op(expr.args[1])}"

    def _print_Outer(self, expr: sp.Expr) -> str:
        return "outer({}, {})".format(*(self._print(a) for a in expr.args))

    def _print_SumAll(self, expr: sp.Expr) -> str:
        return f"sum({self._print(expr.args[0])})"

    def _print_Diag(self, expr: sp.Expr) -> str:
        return f"diag({self._print(expr.args[0])})"

    # -- batched form (samples as rows) --------------------------------------------------
    def _print_BMatMul(self, expr: sp.Expr) -> str:
        v, w, t = expr.args
        return f"{self._op(v)} @ {self._op(w)}{'.T' if t != 0 else ''}"

    def _print_BOuter(self, expr: sp.Expr) -> str:
        return f"{self._transposed(expr.args[0])} @ {self._op(expr.args[1])}"

    def _print_RowSum(self, expr: sp.Expr) -> str:
        return f"rowsum({self._print(expr.args[0])})"

    def _print_ColSum(self, expr: sp.Expr) -> str:
        return f"colsum({self._print(expr.args[0])})"

    def _print_RowMax(self, expr: sp.Expr) -> str:
        return f"rowmax({self._print(expr.args[0])})"


class TextPrinter(PlainTextPrinter):
    """The documents' plain text: adjoints first in a product (the chain rule's order),
    every sum's body in parentheses (where it ends is never in doubt), the step function
    as the Iverson bracket ``[z > 0]``."""

    adjoints_first = True
    paren_sum_body = True

    def _print_step(self, expr: sp.Expr) -> str:
        return f"[{self._print(expr.args[0])} > 0]"


def _is_adjoint(f: sp.Basic) -> bool:
    if isinstance(f, sp.Indexed):
        name = str(f.base.label)
    elif isinstance(f, sp.Symbol) and type(f).__name__ == "Vec":
        name = f.name
    else:
        return False
    return bool(_ADJOINT.match(name))


def has_top_level_matmul(text: str) -> bool:
    """Whether ``text`` has an ``@`` outside every bracket (a product that needs parentheses
    to be one operand)."""
    depth = 0
    for c in text:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "@" and depth == 0:
            return True
    return False


def plain(expr: sp.Basic) -> str:
    """``expr`` in plain text (see :class:`PlainTextPrinter`)."""
    return PlainTextPrinter().doprint(expr)


class MatrixText(PlainTextPrinter):
    """Batched matrix formulas for comments: ``R{z1} = X @ RW1.T + Rb1``."""

    def _print_Symbol(self, expr):
        return {"x": "X", "y": "Y", "N": "n"}.get(expr.name, expr.name)

    _print_Vec = _print_Symbol
    _print_Mat = _print_Symbol

    def _op(self, e: sp.Expr) -> str:
        text = self._print(e)
        atomic = e.is_Symbol or isinstance(e, sp.Function)
        return text if atomic and not has_top_level_matmul(text) else f"({text})"

    def _print_BMatMul(self, expr):
        v, w, t = expr.args
        return f"{self._op(v)} @ {self._print(w)}{'.T' if t != 0 else ''}"

    def _print_BOuter(self, expr):
        return f"{self._op(expr.args[0])}.T @ {self._op(expr.args[1])}"

    def _print_RowSum(self, expr):
        return f"rowsum({self._print(expr.args[0])})"

    def _print_ColSum(self, expr):
        return f"colsum({self._print(expr.args[0])})"


def matrix_text(expr: sp.Expr) -> str:
    """One batched expression as plain text (for comments and ``derive --hvp``)."""
    return MatrixText().doprint(expr)


__all__ = [
    "MatrixText",
    "PlainTextPrinter",
    "TextPrinter",
    "has_top_level_matmul",
    "matrix_text",
    "plain",
]
