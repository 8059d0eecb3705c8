"""Spec-expression parsing stage: expression text from a spec file -> SymPy expression.

This is a whitelist parser. It never uses ``eval``, ``exec``, ``compile``, ``sympify``,
``parse_expr`` or the ``ast`` module: the one tokenizer (:mod:`symgrad.frontend.tokens`,
spec dialect) and the one parser core (:mod:`symgrad.frontend.parser_core`, precedence
climbing over ``+ -`` and ``* /``) drive a builder that makes SymPy objects directly, and
only from the names the caller allows.

Grammar (Python precedence and associativity)::

    expr    := term (('+' | '-') term)*
    term    := unary (('*' | '/') unary)*
    unary   := ('+' | '-')* power
    power   := primary ('**' unary)?          # right-associative, exponent a constant
    primary := NUMBER | NAME | NAME '[' INDEX (',' INDEX)* ']'
             | FUNC '(' expr (',' expr)* ')' | 'sum' '(' expr (',' RANGE)+ ')' | '(' expr ')'
             | ('max' | 'min') '(' expr ',' RANGE ')'    # a reduction over the index
    RANGE   := INDEX | '(' INDEX ',' expr ',' expr ')'   # inclusive limits, sizes and numbers

``max(u, v)`` with two expressions is the elementwise maximum; when the last of two
arguments is a declared index name, ``max(a[j], j)`` is the maximum over that index.

Every bad input raises :class:`~symgrad.errors.SpecError` with a one-line message.
Sizes are bounded (characters, tokens, nesting, exponents, constants) so that no input
can make the parser hang, recurse deeply or build huge numbers. For the same reason no
SymPy evaluation that queries assumptions runs on symbolic input: calls with symbolic
arguments are built unevaluated (``cosh(yhat - y)`` stays as written), and constant
sub-expressions fold at once to an Integer, Rational or real Float (``log(2)`` becomes
``0.693...``; a complex constant such as ``sqrt(-1)`` is an error).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Collection, Mapping
from typing import Any, NoReturn

import sympy as sp

from symgrad.errors import SpecError
from symgrad.frontend.parser_core import ADJACENT, ParserCore, level
from symgrad.frontend.tokens import FORMULA, SPEC, Token, tokenize
from symgrad.ir.ops import FUNCTIONS, OPS, SPEC_FUNCTIONS, step
from symgrad.ir.reductions import ReduceMax, ReduceMin, ShiftMax

MAX_CHARS = 4000
MAX_TOKENS = SPEC.max_tokens
MAX_DEPTH = 40
MAX_EXPONENT = 64
MAX_MINMAX_ARGS = 6  # derive + codegen within seconds (bench/time_bounds.py)
_BIG = 10**300  # largest magnitude of any numeric constant

_UNDEFINED = (sp.nan, sp.zoo, sp.oo, sp.S.NegativeInfinity)
_BINARY = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    ADJACENT: operator.mul,  # component formulas: a1[i](1 - a1[i]), 2(a2[i] - y[i])
}
_COMPARE = (">", "<", ">=", "<=")
_SUM_ARITY = "sum() takes 2 or more arguments: sum(expression, index, ...)"


def _show(text: str) -> str:
    """Quote a token for a message (long ones shortened)."""
    return repr(text if len(text) <= 24 else text[:20] + "...")


def _where(tok: Token) -> str:
    return "end of expression" if tok.kind == "end" else f"{_show(tok.text)} at position {tok.pos}"


class _Parser(ParserCore[sp.Expr]):
    """The spec dialect: builds SymPy, ``+ -`` then ``* /`` on the core's levels."""

    levels = (level("+", "-"), level("*", "/"))
    max_depth = MAX_DEPTH

    def __init__(self, tokens: list[Token], fail: Callable[[str], NoReturn], **names: Any):
        super().__init__(tokens)
        self._fail = fail
        self.scalars: Mapping[str, sp.Expr] = names["scalars"]
        self.arrays: Mapping[str, sp.IndexedBase] = names["arrays"]
        self.indices: Mapping[str, tuple[sp.Symbol, sp.Expr]] = names["indices"]
        self.free = set(names["free_indices"])
        self.bound: list[str] = []  # indices bound by the enclosing sums
        self.index_arithmetic: bool = names.get("index_arithmetic", False)
        self.functions: Mapping[str, Any] = names.get("functions") or SPEC_FUNCTIONS
        # component formulas: comparisons (z1[i] > 0) and implicit products a1[i](1 - a1[i])
        self.formula: bool = names.get("formula", False)
        if self.formula:
            self.levels = (level("+", "-"), level("*", "/", adjacent=True))
        self.index_symbols = {sym for sym, _ in self.indices.values()}

    # -- the dialect's messages -------------------------------------------------------
    def fail(self, message: str) -> NoReturn:
        self._fail(message)

    def unexpected(self, tok: Token, hint: str = "") -> NoReturn:
        if tok.kind == "end":
            self.fail("unexpected end of expression" + hint)
        self.fail(f"unexpected {_where(tok)}{hint}")

    def expected(self, tok: Token, text: str) -> NoReturn:
        self.unexpected(tok, f" (expected {text!r})")

    def too_deep(self, tok: Token) -> str:
        return f"expression is nested too deeply at position {tok.pos} (max {MAX_DEPTH})"

    # -- building SymPy objects safely -----------------------------------------------
    def build(
        self, tok: Token, fn: Callable[..., sp.Expr], *args: sp.Expr, fold: bool = True
    ) -> sp.Expr:
        """Apply ``fn`` and check the result (finite, bounded constants).

        A constant result that is not a plain number (``log(2)``, ``2**(1/2)``) is folded
        to a real Float at once, so no nested symbolic constant (whose numeric evaluation
        by SymPy's assumption queries can take exponential time) is ever built.
        """
        try:
            value = fn(*args)
            self.check(tok, value)
            if fold and not value.is_Number and all(a.is_Number for a in args):
                value = value.evalf(15)
                if not value.is_Number:
                    self.fail(f"constant near position {tok.pos} is not a real number")
                self.check(tok, value)
        except (ArithmeticError, ValueError, TypeError, RecursionError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.fail(f"cannot evaluate near position {tok.pos}: {reason}")
        return value

    def check(self, tok: Token, value: sp.Expr) -> None:
        for part in (value, *value.args):
            if any(part is bad for bad in _UNDEFINED):
                self.fail(
                    f"undefined or infinite value near position {tok.pos} (division by zero?)"
                )
            too_large = (part.is_Float and not abs(float(part)) <= 1e300) or (
                part.is_Rational and (abs(part.p) > _BIG * part.q or part.q > _BIG)
            )
            if too_large:
                self.fail(f"constant is too large near position {tok.pos} (at most 1e300)")

    # -- grammar ---------------------------------------------------------------------
    def parse(self) -> sp.Expr:
        if self.peek().kind == "end":
            self.fail("empty expression")
        value = self.expr()
        tok = self.peek()
        if tok.kind != "end":
            if tok.text == ",":
                self.unexpected(tok, " (commas only separate arguments and indices)")
            self.unexpected(tok)
        return value

    def combine(self, op: Token, left: sp.Expr, right: sp.Expr) -> sp.Expr:
        return self.build(op, _BINARY[op.text], left, right)

    def operand(self) -> sp.Expr:
        return self.unary()

    def adjacent(self, tok: Token) -> bool:
        """A factor right after a number or a closing bracket: ``2(x)``, ``a1[i](1 - a1[i])``
        (a name before ``(`` stays a call)."""
        prev = self.tokens[self.pos - 1]
        ends = prev.kind == "num" or (prev.kind == "op" and prev.text in ")]")
        return ends and (tok.kind in ("name", "num") or (tok.kind == "op" and tok.text == "("))

    def comparison(self, tok: Token, left: sp.Expr) -> sp.Expr:
        """``a > b`` (after ``(`` or ``[`` and ``a``): 1 where it holds, 0 elsewhere and at a
        tie (as relu' is), the step of ``a - b``."""
        cmp = self.take()
        right = self.expr()
        diff = (left, right) if cmp.text in (">", ">=") else (right, left)
        return self.build(cmp, lambda a, b: step(a - b), *diff)

    def expr(self) -> sp.Expr:
        return self.binary()

    def signs(self) -> tuple[bool, Token]:
        """Consume a run of unary signs; return (negate?, first token)."""
        first, negate = self.peek(), False
        while self.at("+", "-"):
            negate ^= self.take().text == "-"
        return negate, first

    def unary(self) -> sp.Expr:
        negate, first = self.signs()
        value = self.power()
        return self.build(first, operator.neg, value) if negate else value

    def power(self) -> sp.Expr:
        # Iterative right fold of  p0 ** s1 p1 ** s2 p2 ...  (s_k: sign of the k-th exponent).
        operands = [(False, self.peek(), self.primary())]
        while self.at("**"):
            self.take()
            negate, first = self.signs()
            operands.append((negate, first, self.primary()))
        negate, tok, value = operands[-1]
        for k in range(len(operands) - 1, 0, -1):
            if negate:
                value = self.build(tok, operator.neg, value)
            if not value.is_Number or abs(value) > MAX_EXPONENT:
                msg = f"must be a numeric constant with |value| <= {MAX_EXPONENT}"
                self.fail(f"exponent at position {tok.pos} {msg}")
            negate, tok, base = operands[k - 1]
            value = self.build(tok, operator.pow, base, value)
        return value

    def primary(self) -> sp.Expr:
        tok = self.take()
        if tok.kind == "num":
            return self.number(tok)
        if tok.kind == "name":
            return self.name(tok)
        if tok.text in ("(", "["):
            close = ")" if tok.text == "(" else "]"
            self.nest(tok)
            value = self.expr()
            if self.formula and self.at(*_COMPARE):  # (z1[i] > 0), [z1[i] > 0]
                value = self.comparison(tok, value)
            elif close == "]":
                self.unexpected(tok, " (only arrays can be subscripted)")
            self.expect(close)
            self.leave()
            return value
        self.unexpected(tok)

    def number(self, tok: Token) -> sp.Expr:
        if tok.text.isdigit():
            value = int(tok.text)
            if value <= _BIG:
                return sp.Integer(value)
        elif math.isfinite(float(tok.text)) and abs(float(tok.text)) <= 1e300:
            return sp.Float(tok.text)
        self.fail(f"number {_show(tok.text)} at position {tok.pos} is out of range (at most 1e300)")

    def name(self, tok: Token) -> sp.Expr:
        name = tok.text
        if self.at("("):
            if name == "sum":
                return self.sum(tok)
            if name in ("max", "min") and self.reduction_index() is not None:
                return self.sum(tok, ReduceMax if name == "max" else ReduceMin)
            if name == "softmax" and self.index_arithmetic:
                return self.softmax(tok)
            if name in self.functions:
                return self.call(tok)
            if name in self.scalars or name in self.arrays:
                self.fail(f"{name!r} at position {tok.pos} is not a function")
            allowed = ", ".join(sorted([*self.functions, "sum"]))
            self.fail(f"function {name!r} is not allowed (allowed: {allowed})")
        if self.at("[") and name in self.arrays:
            return self.subscript(tok)
        if self.at("[") and name in self.scalars:
            self.fail(f"scalar {name!r} at position {tok.pos} cannot be subscripted")
        if name in self.scalars:
            return self.scalars[name]
        if name in self.arrays:
            self.fail(f"array {name!r} at position {tok.pos} must be subscripted, e.g. {name}[i]")
        if name in self.indices:
            self.fail(
                f"index {name!r} at position {tok.pos} may only appear inside brackets, e.g. a[i]"
            )
        if name in self.functions or name == "sum":
            self.fail(f"function {name!r} at position {tok.pos} must be called")
        known = ", ".join([*sorted(self.scalars), *(f"{a}[...]" for a in sorted(self.arrays))])
        self.fail(f"unknown name {name!r} at position {tok.pos} (allowed: {known or 'none'})")

    def index_token(self, tok: Token, what: str) -> str:
        """Check that ``tok`` names a declared index; return the name."""
        if tok.kind != "name":
            self.fail(f"{what}, found {_where(tok)}")
        if tok.text not in self.indices:
            allowed = ", ".join(sorted(self.indices)) or "none"
            self.fail(f"unknown index {tok.text!r} at position {tok.pos} (allowed: {allowed})")
        return tok.text

    def subscript(self, tok: Token) -> sp.Expr:
        self.nest(self.expect("["))
        syms: list[sp.Expr] = []
        while True:
            syms.append(self.position())
            sep = self.take()
            if sep.text == "]" and sep.kind == "op":
                break
            if sep.text != "," or sep.kind != "op":
                what = "index expressions" if self.index_arithmetic else "index names"
                self.fail(f"only {what} are allowed inside brackets, found {_where(sep)}")
        self.leave()
        base = self.arrays[tok.text]
        if base.shape is not None and len(base.shape) != len(syms):
            self.fail(f"array {tok.text!r} takes {len(base.shape)} indices, got {len(syms)}")
        return self.build(tok, lambda *s: base[s], *syms, fold=False)  # x[0] reads an entry

    def index_name(self) -> sp.Symbol:
        idx_tok = self.take()
        name = self.index_token(idx_tok, "only index names are allowed inside brackets")
        if name not in self.bound and name not in self.free:
            where = f"at position {idx_tok.pos}"
            self.fail(f"index {name!r} {where} is not declared free here (sum over it?)")
        return self.indices[name][0]

    def position(self) -> sp.Expr:
        """One subscript: an index name, or (with ``index_arithmetic``) an affine index
        expression such as ``2*h + r - 1`` (integer coefficients and constants)."""
        if not self.index_arithmetic:
            return self.index_name()
        total: sp.Expr = sp.S.Zero
        sign = 1
        if self.at("-", "+"):
            sign = -1 if self.take().text == "-" else 1
        while True:
            total += sign * self.index_term()
            if not self.at("+", "-"):
                return total
            sign = -1 if self.take().text == "-" else 1

    def index_term(self) -> sp.Expr:
        """A product of factors, each a small integer, a size name (a positive integer
        scalar such as ``S`` in ``S*i``) or an index name; at most one index name. A
        formula may juxtapose a number and a factor (``2h``)."""
        value: sp.Expr = self.index_factor()
        while self.at("*") or (self.formula and self.adjacent(self.peek())):
            if self.at("*"):
                self.take()
            tok = self.peek()
            factor = self.index_factor()
            if value.free_symbols & self.index_symbols and factor.free_symbols & self.index_symbols:
                self.fail(f"index expressions are affine: no product of indices at {_where(tok)}")
            value = value * factor
        return value

    def index_factor(self) -> sp.Expr:
        tok = self.peek()
        if tok.kind == "num":
            self.take()
            if not tok.text.isdigit() or len(tok.text) > 6:
                self.fail(f"index expressions take small integers, found {_where(tok)}")
            return sp.Integer(int(tok.text))
        if tok.kind == "name" and tok.text not in self.indices:
            value = self.scalars.get(tok.text)
            if value is not None and value.is_Symbol and value.is_integer and value.is_positive:
                self.take()
                return value
        return self.index_name()

    def call(self, tok: Token) -> sp.Expr:
        self.nest(self.expect("("))
        args = [self.expr()]
        while self.at(","):
            self.take()
            args.append(self.expr())
        self.expect(")")
        self.leave()
        name = tok.text
        fn: Callable[..., sp.Expr] = self.functions[name]
        op = OPS[fn]
        if op.arity > 1:  # max, min: elementwise over 2 or more
            if not op.arity <= len(args) <= MAX_MINMAX_ARGS:
                self.fail(
                    f"{name}() takes {op.arity} to {MAX_MINMAX_ARGS} arguments, got {len(args)}"
                )
        elif len(args) != 1:
            self.fail(f"{name}() takes exactly 1 argument, got {len(args)}")
        if all(arg.is_Number for arg in args):
            if not op.spec:  # a function SymPy does not evaluate: the registry's value
                return self.build(
                    tok, lambda *a: sp.Float(float(op.numeric(*map(float, a)))), *args
                )
            return self.build(tok, fn, *args)  # folded to a number by build()
        # SymPy's automatic evaluation queries assumptions of the arguments, which can take
        # exponential time on nested input (tanh(tanh(...) - x) - x ...): keep calls as written.
        return self.build(tok, lambda *a: fn(*a, evaluate=False), *args)

    def _comma_ahead(self, start: int) -> int:
        """The position of the first ``,`` (or ``)``, ``]``) at this nesting level."""
        k, level = start, 0
        while (t := self.tokens[k]).kind != "end":
            if t.kind == "op" and level == 0 and t.text in ",)]":
                break
            if t.kind == "op":
                level += (t.text in "([") - (t.text in ")]")
            k += 1
        return k

    def reduction_index(self) -> str | None:
        """The index name when the call ahead is ``(expr, INDEX)`` or ``(expr, (INDEX, lo,
        hi))`` with INDEX declared."""
        k = self._comma_ahead(self.pos + 1)
        if self.tokens[k].text != "," or k + 2 >= len(self.tokens):
            return None
        name, close = self.tokens[k + 1], self.tokens[k + 2]
        if name.text == "(" and name.kind == "op":
            name, close = close, self.tokens[min(k + 3, len(self.tokens) - 1)]
            if name.kind == "name" and name.text in self.indices and close.text == ",":
                return name.text
            return None
        if name.kind == "name" and name.text in self.indices and close.text == ")":
            return name.text
        return None

    def softmax(self, tok: Token) -> sp.Expr:
        """``softmax(e, j)``: the softmax of ``e`` over the index ``j`` (free or bound here,
        the other indices fixed), written out as ``exp(e) / sum_j' exp(e[j -> j'])``; its
        stable forms are found by structure, as for the softmax layer."""
        self.nest(self.expect("("))
        body = self.expr()
        if not self.at(","):
            self.fail("softmax() takes 2 arguments: softmax(expression, index)")
        self.take()
        idx_tok = self.take()
        name = self.index_token(idx_tok, "the second argument of softmax() must be an index name")
        if name not in self.free and name not in self.bound:
            self.fail(f"softmax(..., {name}): index {name!r} is neither free nor summed over here")
        self.expect(")")
        self.leave()
        sym, width = self.indices[name]
        if not body.has(sym):
            self.fail(f"softmax(..., {name}): the expression does not use index {name!r}")
        dummy = sp.Symbol(f"{name}_", integer=True)
        # the shift by the maximum over the index: finite exponentials, the same value
        over = sp.Symbol(f"{name}__", integer=True)
        body = body - ShiftMax(body.xreplace({sym: over}), over, width - 1)
        den = sp.Sum(sp.exp(body.xreplace({sym: dummy}), evaluate=False), (dummy, 0, width - 1))
        return sp.exp(body, evaluate=False) / den

    def bound_expr(self, what: str) -> sp.Expr:
        """One limit of an explicit range: an integer expression of sizes and numbers."""
        tok = self.peek()
        value = self.expr()
        bad = [s_ for s_ in value.free_symbols if not (s_.is_integer and s_.is_positive)]
        if bad or not (value.is_integer or value.free_symbols):
            self.fail(
                f"the {what} of a range near position {tok.pos} must be an integer "
                "expression of sizes and numbers"
            )
        return value

    def sum(self, tok: Token, reduce: type | None = None) -> sp.Expr:
        """``sum(body, j)``, ``sum(body, (j, lo, hi))`` (inclusive limits) or several such
        ranges, ``sum(body, j, (k, 0, r - 1))`` (a sum over each), or with ``reduce`` the
        reduction ``max(body, j)``/``min`` over one index."""
        self.nest(self.expect("("))
        # The index arguments bind names in the body: find them first, after the comma
        # at this nesting level.
        k = self._comma_ahead(self.pos)
        t = self.tokens[k]
        if t.text == ")":
            self.fail(_SUM_ARITY if reduce is None else f"{tok.text}() needs 2 arguments")
        if t.text != ",":
            self.unexpected(t)
        names = self._range_names(k + 1, several=reduce is None)
        for n_, name in enumerate(names):
            if name in self.bound or name in names[:n_]:
                self.fail(f"index {name!r} is already bound by an enclosing sum")
            if name in self.free:
                self.fail(f"cannot sum over free index {name!r}")
        self.bound.extend(names)
        body = self.expr()
        del self.bound[len(self.bound) - len(names) :]
        ranges = []
        for _ in names:
            self.expect(",")
            ranges.append(self._range(tok))
        if self.at(","):
            self.fail(_SUM_ARITY if reduce is None else f"{tok.text}() needs 2 arguments")
        self.expect(")")
        self.leave()
        for sym, lo, hi in reversed(ranges):  # the first range is the outermost sum
            if lo != 0:  # ranges start at 0 in the IR: shift the index
                body = body.xreplace({sym: sym + lo})
                hi = hi - lo
            if reduce is not None:
                if not body.has(sym):
                    self.fail(
                        f"{tok.text}(..., {sym}): the expression does not use index {str(sym)!r}"
                    )
                return self.build(tok, lambda b, s=sym, h=hi: reduce(b, s, h), body, fold=False)
            body = self.build(tok, lambda b, s=sym, h=hi: sp.Sum(b, (s, 0, h)), body, fold=False)
        return body

    def _range_names(self, k: int, several: bool) -> list[str]:
        """The index names of the ranges from token ``k`` on (each ``j`` or ``(j, lo, hi)``,
        separated by commas; one unless ``several``)."""
        names = []
        while True:
            ranged = self.tokens[k].kind == "op" and self.tokens[k].text == "("
            names.append(
                self.index_token(
                    self.tokens[k + 1 if ranged else k],
                    "the second argument of sum() must be an index name or (index, first, last)",
                )
            )
            if ranged:  # past the matching ')'
                k = self._comma_ahead(k + 1)
                while self.tokens[k].text == ",":
                    k = self._comma_ahead(k + 1)
            if self.tokens[k].kind == "end":
                return names
            k += 1
            if not several or self.tokens[k].text != "," or self.tokens[k].kind != "op":
                return names
            k += 1

    def _range(self, tok: Token) -> tuple[sp.Symbol, sp.Expr, sp.Expr]:
        """One range ``j`` or ``(j, lo, hi)`` (its name checked already): (symbol, lo, hi)."""
        name = self.peek().text if not self.at("(") else self.tokens[self.pos + 1].text
        sym, width = self.indices[name]
        lo, hi = sp.S.Zero, width - 1
        if self.at("("):
            self.expect("(")
            self.take()  # the index name, checked above
            self.expect(",")
            lo = self.bound_expr("first value")
            self.expect(",")
            hi = self.bound_expr("last value")
            self.expect(")")
            if (hi - lo).is_Integer and hi - lo < 0:
                self.fail(f"{tok.text}(..., ({name}, {lo}, {hi})): the range is empty")
        else:
            self.take()  # the index name, checked above
        return sym, lo, hi


def scalar_names(text: str, *, field: str | None = None) -> tuple[str, ...]:
    """The variable names of a free scalar expression, in order of first appearance.

    Every name that is not called is a variable (``a*b + c`` gives
    ``a, b, c``). Used by the scalar explorer, whose variables are the expression's own
    names; the expression itself is then parsed by :func:`parse_expression` as usual.
    """

    def fail(message: str) -> NoReturn:
        raise SpecError(message, field=field)

    if not isinstance(text, str):
        fail(f"expected a string expression, got {type(text).__name__}")
    if len(text) > MAX_CHARS:
        fail(f"expression is too long ({len(text)} characters, at most {MAX_CHARS})")
    tokens = tokenize(text, fail, SPEC)
    names = (
        t.text
        for t, after in zip(tokens, tokens[1:], strict=False)
        if t.kind == "name" and after.text != "("  # a call: a function, never a variable
    )
    return tuple(dict.fromkeys(names))


def parse_expression(
    text: str,
    *,
    scalars: Mapping[str, sp.Expr] = {},
    arrays: Mapping[str, sp.IndexedBase] = {},
    indices: Mapping[str, tuple[sp.Symbol, sp.Expr]] = {},
    free_indices: Collection[str] = (),
    file: str | None = None,
    field: str | None = None,
    index_arithmetic: bool = False,
    formula: bool = False,
) -> sp.Expr:
    """Parse spec-expression ``text`` into a SymPy expression.

    ``scalars`` are names usable bare, ``arrays`` names usable only subscripted by
    index names (``a[i]``, ``A[i, j]``). ``indices`` maps an index name to its symbol
    and width; ``sum(e, j)`` sums ``j`` over ``0 .. width - 1``. An index may appear
    in a subscript only inside a sum over it or when listed in ``free_indices``.
    ``index_arithmetic`` also allows affine index expressions in subscripts
    (``x[q, h + r, 2*w + s - 1]``, as a conv layer reads its input).
    ``formula`` reads a component formula (``check --formula``): every op of the
    registry may be called (not only :data:`~symgrad.ir.ops.SPEC_FUNCTIONS`),
    comparisons ``(a > b)`` / ``[a > b]`` are the step of ``a - b`` and juxtaposed
    factors multiply (``a1[i](1 - a1[i])``).
    Raises :class:`SpecError` (located at ``file``/``field``) for any bad input.
    """

    def fail(message: str) -> NoReturn:
        raise SpecError(message, file=file, field=field)

    if not isinstance(text, str):
        fail(f"expected a string expression, got {type(text).__name__}")
    if len(text) > MAX_CHARS:
        fail(f"expression is too long ({len(text)} characters, at most {MAX_CHARS})")
    tokens = tokenize(text, fail, FORMULA if formula else SPEC)
    names = {"scalars": scalars, "arrays": arrays, "indices": indices}
    return _Parser(
        tokens,
        fail,
        free_indices=free_indices,
        index_arithmetic=index_arithmetic,
        functions=FUNCTIONS if formula else SPEC_FUNCTIONS,
        formula=formula,
        **names,
    ).parse()
