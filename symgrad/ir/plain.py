"""Plain-text printing shared by every text output (code comments, terminal documents,
``check``'s formula syntax): one base printer, so a Kronecker delta, a registered op or
a sum reads the same everywhere. Each output subclasses it for its own sum syntax."""

from __future__ import annotations

import sympy as sp
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

from symgrad.ir.ops import op_of


class PlainTextPrinter(StrPrinter):
    """SymPy's StrPrinter with symgrad's plain-text conventions.

    - a Kronecker delta is an Iverson bracket ``[i == k]`` (never a second "delta");
    - registered ops print by their registry name (``abs``, not SymPy's ``Abs``);
    - sums print as ``sum_k body`` (subclasses choose another syntax);
    - a matrix product ``A @ v`` (however a subclass prints its nodes) is parenthesised as
      an operand of ``*``, ``/``, ``**`` or another ``@``: in Python ``*`` and ``@`` share a
      precedence level, so ``a1*A2 @ a1`` would read ``(a1*A2) @ a1``.
    """

    def parenthesize(self, item: sp.Basic, level: int, strict: bool = False) -> str:
        text: str = super().parenthesize(item, level, strict)
        # at Add's level too: SymPy parenthesises a negative product's factors at that level
        if level >= PRECEDENCE["Add"] and has_top_level_matmul(text):
            return f"({text})"
        return text

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

    def _print_Sum(self, expr: sp.Sum) -> str:
        body = self._print(expr.function)
        idx = "".join(str(v) for v, _, _ in expr.limits)
        if expr.function.is_Add:
            body = f"({body})"
        return f"sum_{idx} {body}"


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


__all__ = ["PlainTextPrinter", "has_top_level_matmul", "plain"]
