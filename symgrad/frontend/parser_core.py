"""The one parser core: a token cursor and precedence climbing over binary operators.

Every expression front end (spec expressions in :mod:`~symgrad.frontend.expr_parser`,
matrix formulas in :mod:`~symgrad.verify.matrix_formula`, NumPy lines in
:mod:`~symgrad.learn.steps.expression`) is a :class:`ParserCore` that names its binary
operator levels (:attr:`ParserCore.levels`, loosest first) and supplies a builder: what
an operand is (:meth:`ParserCore.operand`) and what two operands joined by an operator
build (:meth:`ParserCore.combine`: SymPy for specs, tuple trees for formulas and NumPy).
Chains of one level are read iteratively, left to right; the recursion is bounded by the
number of levels and by :meth:`ParserCore.nest` (parentheses, calls, unary signs).
"""

from __future__ import annotations

from typing import Generic, NamedTuple, NoReturn, TypeVar

from symgrad.frontend.tokens import Token

T = TypeVar("T")

#: The pseudo-operator of juxtaposition (``W2^T delta2``), for a level that admits it.
ADJACENT = " "


class Level(NamedTuple):
    """One precedence level: its operators, whether they chain (``a < b < c`` does not),
    and whether two operands side by side are joined at this level (juxtaposition)."""

    ops: frozenset[str]
    chain: bool = True
    adjacent: bool = False


def level(*ops: str, chain: bool = True, adjacent: bool = False) -> Level:
    return Level(frozenset(ops), chain, adjacent)


class ParserCore(Generic[T]):
    """A cursor over tokens (ending with an ``"end"`` token) and precedence climbing."""

    levels: tuple[Level, ...] = ()
    max_depth = 40

    def __init__(self, tokens: list[Token]):
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    # -- what a dialect supplies -------------------------------------------------------
    def fail(self, message: str) -> NoReturn:
        """Raise the dialect's one-line error."""
        raise NotImplementedError

    def operand(self) -> T:
        """One operand of the innermost level (a unary expression)."""
        raise NotImplementedError

    def combine(self, op: Token, left: T, right: T) -> T:
        """``left op right`` built (``op.text`` is :data:`ADJACENT` for juxtaposition)."""
        raise NotImplementedError

    def adjacent(self, tok: Token) -> bool:
        """Whether ``tok`` starts an operand written right after another (juxtaposition)."""
        return False

    def too_deep(self, tok: Token) -> str:
        """The message when nesting passes :attr:`max_depth` at ``tok``."""
        return f"expression nested too deeply (at most {self.max_depth})"

    def expected(self, tok: Token, text: str) -> NoReturn:
        """Report that ``text`` was expected where ``tok`` is."""
        found = "the end" if tok.kind == "end" else repr(tok.text)
        self.fail(f"expected {text!r}, found {found}")

    # -- the cursor ----------------------------------------------------------------------
    def peek(self, ahead: int = 0) -> Token:
        if ahead:
            return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]
        return self.tokens[self.pos]  # the cursor never passes the "end" token

    def take(self) -> Token:
        tok = self.tokens[self.pos]
        if tok.kind != "end":
            self.pos += 1
        return tok

    def at(self, *ops: str) -> bool:
        """Whether the next token is one of the operators ``ops``."""
        tok = self.peek()
        return tok.kind == "op" and tok.text in ops

    def expect(self, text: str) -> Token:
        tok = self.take()
        if tok.kind != "op" or tok.text != text:
            self.expected(tok, text)
        return tok

    def nest(self, tok: Token | None = None) -> None:
        """One level deeper (a parenthesis, a call, a sign); bounded by :attr:`max_depth`."""
        self.depth += 1
        if self.depth > self.max_depth:
            self.fail(self.too_deep(tok if tok is not None else self.peek()))

    def leave(self) -> None:
        self.depth -= 1

    # -- precedence climbing -----------------------------------------------------------
    def binary(self, start: int = 0) -> T:
        """An expression whose loosest operator is at level ``start`` or tighter."""
        if start >= len(self.levels):
            return self.operand()
        lv = self.levels[start]
        left = self.binary(start + 1)
        while True:
            tok = self.peek()
            if tok.kind == "op" and tok.text in lv.ops:
                self.take()
            elif lv.adjacent and self.adjacent(tok):
                tok = Token("op", ADJACENT, tok.pos)
            else:
                return left
            left = self.combine(tok, left, self.binary(start + 1))
            if not lv.chain:
                return left
