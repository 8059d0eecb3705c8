"""Reading one NumPy-subset expression: the one tokenizer (NumPy dialect) and parser core
of :mod:`symgrad.frontend` build a tree of tuples (Python's precedence), never executed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import numpy as np

from symgrad.errors import SpecError
from symgrad.frontend.parser_core import ParserCore, level
from symgrad.frontend.tokens import NUMPY, Token, tokenize
from symgrad.learn.steps.ops import (
    BARE,
    BARE_CALLS,
    CALL_KEYWORDS,
    METHOD_CALLS,
    METHOD_SAME,
    METHOD_UNARY,
    NP_BINARY,
    NP_CALLS,
    NP_OPERATORS,
    NP_REDUCE,
    NP_UNARY,
)

MAX_TOKENS = NUMPY.max_tokens  # per statement
MAX_DEPTH = 40


class StepsInputError(SpecError):
    """The steps file cannot be read (a one-line error naming the file and line)."""


def line_tokens(line: str, file: str | None, where: str) -> list[Token]:
    """One logical line as tokens of the NumPy dialect (errors name ``file`` and ``where``)."""

    def fail(message: str) -> NoReturn:
        raise StepsInputError(f"{where}: {message}", file=file)

    return tokenize(line, fail, NUMPY)


class _Parser(ParserCore[tuple]):
    """The NumPy dialect: the core's levels (comparison, ``+ -``, ``* / @``, Python's
    precedence) build a tree of tuples."""

    levels = (
        level(">", "<", ">=", "<=", "==", chain=False),
        level("+", "-"),
        level("*", "/", "@"),
    )
    max_depth = MAX_DEPTH

    def __init__(
        self,
        toks: list[Token],
        file: str | None,
        where: str,
        helpers: Mapping[str, tuple[str, ...]] | None = None,
    ):
        super().__init__(toks)
        self.file, self.where = file, where
        self.helpers: Mapping[str, tuple[str, ...]] = helpers or {}

    # -- the dialect -----------------------------------------------------------------
    def fail(self, message: str) -> NoReturn:
        raise StepsInputError(f"{self.where}: {message}", file=self.file)

    def expected(self, tok: Token, text: str) -> NoReturn:
        found = repr(tok.text) if tok.kind != "end" else "the end of the line"
        self.fail(f"expected {text!r}, found {found}")

    def too_deep(self, tok: Token) -> str:
        return "expression nested too deeply"

    def operand(self) -> tuple:
        return self.unary()

    def combine(self, op: Token, left: tuple, right: tuple) -> tuple:
        return ("bin", op.text, left, right)

    def compare(self) -> tuple:
        return self.binary(0)

    def arith(self) -> tuple:
        return self.binary(1)

    def parse(self) -> tuple:
        e = self.compare()
        if self.peek().kind != "end":
            self.fail(f"unexpected {self.peek().text!r}")
        self.strings_only_in_einsum(e)
        return e

    def strings_only_in_einsum(self, e: Any) -> None:
        """A quoted string is einsum's subscripts and nothing else."""
        if not isinstance(e, tuple) or not e:
            return
        if e[0] == "str":
            self.fail("a quoted string is allowed only as einsum's subscripts")
        if e[0] == "call" and e[1] == "einsum":
            if not e[2] or e[2][0][0] != "str":
                self.fail('einsum takes its subscripts first: einsum("ij,ij->i", a, b)')
            for a in e[2][1:]:
                self.strings_only_in_einsum(a)
            return
        for c in e:
            if isinstance(c, dict):
                for v in c.values():
                    self.strings_only_in_einsum(v)
            else:
                self.strings_only_in_einsum(c)

    def unary(self) -> tuple:
        if self.peek().text in ("-", "+"):
            op = self.take().text
            self.nest()
            e = self.unary()
            self.leave()
            return ("neg", e) if op == "-" else e
        return self.power()

    def power(self) -> tuple:
        base = self.postfix()
        if self.peek().text == "**":
            self.take()
            self.nest()
            exp = self.unary()
            self.leave()
            value = _number(exp)
            if value is None:
                self.fail("an exponent must be a number")
            if abs(value) > 64:
                self.fail("exponent too large (at most 64)")
            return ("bin", "**", base, ("num", value))
        return base

    def postfix(self) -> tuple:
        e = self.primary()
        while self.peek().text in (".", "["):
            if self.take().text == "[":
                e = ("index", e, self.subscripts())
                continue
            t = self.take()
            if t.kind != "name":
                self.fail("expected a name after '.'")
            e = self.attribute(e, t.text)
        return e

    def attribute(self, e: tuple, name: str) -> tuple:
        """``e.NAME`` or ``e.NAME(...)``: the attributes and methods of an array."""
        call = self.peek().text == "("
        if name == "T" and not call:
            return ("T", e)
        if name == "shape" and not call:
            if self.peek().text != "[":
                return ("shapeall", e)
            self.expect("[")
            k = self.take()
            if k.kind != "num" or not k.text.isdigit():
                self.fail("shape[...] takes an integer")
            self.expect("]")
            return ("shape", e, int(k.text))
        if name in ("size", "ndim") and not call:
            return ("attr", name, e)
        if name in NP_REDUCE and call:
            args, kwargs = self.arguments()
            if args:  # .sum(0): the axis given positionally
                if len(args) > 1 or args[0][0] != "num" or "axis" in kwargs:
                    self.fail(f".{name}() takes one axis: .{name}(axis=0)")
                kwargs = {"axis": int(args[0][1]), **kwargs}
            return ("reduce", name, e, kwargs)
        if name in METHOD_SAME and call:
            self.expect("(")
            self.expect(")")
            return e
        if name in METHOD_UNARY and call:
            self.expect("(")
            self.expect(")")
            return ("bare", name, e)
        if name in METHOD_CALLS and call:
            args, kwargs = self.arguments(general=True)
            return ("call", name, (e, *args), kwargs, "method")
        allowed = ".T, .shape, .size, .ndim, " + ", ".join(
            f".{m}()" for m in (*NP_REDUCE, *METHOD_CALLS, *METHOD_SAME, *METHOD_UNARY)
        )
        self.fail(f"attribute .{name} is not allowed (allowed: {allowed})")

    def subscripts(self) -> tuple:
        """``[:, None, 1:3, ...]`` after an expression (the ``[`` taken): slices, None,
        an ellipsis and integer positions, as NumPy indexes."""
        self.nest()
        items: list[tuple] = []
        while True:
            if self.peek().text == "None":
                self.take()
                items.append(("none",))
            elif self.peek().text == "...":
                self.take()
                items.append(("ellipsis",))
            else:
                parts: list[tuple | None] = []
                cur: tuple | None = None
                while True:
                    if self.peek().text in (":", ",", "]"):
                        parts.append(cur)
                        cur = None
                        if self.peek().text != ":":
                            break
                        self.take()
                        if len(parts) > 2:
                            self.fail("a slice is start:stop:step")
                        continue
                    cur = self.arith()
                if len(parts) == 1:
                    if parts[0] is None:
                        self.fail("empty subscript")
                    items.append(("at", parts[0]))
                else:
                    items.append(("slice", *(parts + [None] * (3 - len(parts)))))
            t = self.take()
            if t.text == "]":
                break
            if t.text != ",":
                self.fail(f"expected ',' or ']' in a subscript, found {t.text!r}")
        self.leave()
        return tuple(items)

    def arguments(self, general: bool = False) -> tuple[list[tuple], dict[str, Any]]:
        self.expect("(")
        self.nest()
        args: list[tuple] = []
        kwargs: dict[str, Any] = {}
        while self.peek().text != ")":
            t = self.peek()
            if t.kind == "name" and self.peek(1).text == "=":
                self.take()
                self.take()
                if general and t.text not in CALL_KEYWORDS:
                    self.fail(
                        f"keyword argument {t.text}= is not allowed "
                        f"(allowed: {', '.join(CALL_KEYWORDS)})"
                    )
                word = {"keepdim": "keepdims", "dim": "axis"}.get(t.text, t.text)  # torch's
                if general and word == "keepdims":
                    kwargs[word] = ("bool", self.keyword(word))
                elif general:
                    kwargs[word] = self.compare()
                else:
                    kwargs[word] = self.keyword(word)
            else:
                if kwargs:
                    self.fail("positional argument after a keyword argument")
                args.append(self.compare())
            if self.peek().text == ",":
                self.take()
            elif self.peek().text != ")":
                self.fail(f"expected ',' or ')', found {self.peek().text!r}")
        self.take()
        self.leave()
        return args, kwargs

    def keyword(self, name: str) -> Any:
        if name == "axis":
            if self.peek().text == "(":  # a tuple of axes: axis=(0, 2, 3)
                self.take()
                axes = [self.keyword("axis")]
                while self.peek().text == ",":
                    self.take()
                    if self.peek().text == ")":
                        break
                    axes.append(self.keyword("axis"))
                self.expect(")")
                return tuple(axes)
            neg = self.peek().text == "-"
            if neg:
                self.take()
            t = self.take()
            if t.kind != "num" or not t.text.isdigit():
                self.fail("axis= takes an integer")
            return -int(t.text) if neg else int(t.text)
        if name == "keepdims":
            t = self.take()
            if t.text not in ("True", "False"):
                self.fail("keepdims= takes True or False")
            return t.text == "True"
        self.fail(f"keyword argument {name}= is not allowed (allowed: axis, keepdims)")

    def primary(self) -> tuple:
        t = self.take()
        if t.kind == "num":
            v = float(t.text)
            if not np.isfinite(v):
                self.fail(f"number {t.text} is not finite")
            return ("num", v)
        if t.kind == "str":
            return ("str", t.text[1:-1])
        if t.text == "(":
            self.nest()
            e = self.compare()
            if self.peek().text == ",":  # a tuple: a shape, kernel or padding, (3, 3)
                items = [e]
                while self.peek().text == ",":
                    self.take()
                    if self.peek().text == ")":
                        break
                    items.append(self.compare())
                e = ("tuple", tuple(items))
            self.expect(")")
            self.leave()
            return e
        if t.text == "[":  # an Iverson bracket, as symgrad prints relu': [z1 > 0]
            self.nest()
            e = self.compare()
            if e[0] == "bin" and e[1] in (">", "<", ">=", "<=", "=="):
                self.expect("]")
                self.leave()
                return e
            items = [e]  # a list of numbers: tensordot's axes=[[1], [0]]
            while self.peek().text == ",":
                self.take()
                items.append(self.compare())
            self.expect("]")
            self.leave()
            if not all(_constant(c) for c in items):
                self.fail(
                    "lists are not read (only lists of numbers, as tensordot's axes): "
                    "write an array expression, or [z1 > 0] for an Iverson bracket"
                )
            return ("tuple", tuple(items))
        if t.kind == "name":
            if t.text == "np" and self.peek().text == ".":
                return self.np_attribute()
            if self.peek().text == "(":
                if t.text in self.helpers:
                    args, kwargs = self.arguments()
                    if len(args) != len(self.helpers[t.text]) or kwargs:
                        n = len(self.helpers[t.text])
                        self.fail(f"{t.text}() takes {n} argument(s) (as its def says)")
                    return ("helper", t.text, tuple(args))
                if t.text in BARE_CALLS:
                    return self.general_call(t.text, "")
                if t.text in BARE or t.text == "len":
                    args, kwargs = self.arguments()
                    if len(args) != 1 or kwargs:
                        self.fail(f"{t.text}() takes one argument")
                    return ("bare", t.text, args[0])
                allowed = ", ".join([*BARE, "len", *BARE_CALLS])
                self.fail(
                    f"function {t.text!r} is not allowed (use np.exp, np.tanh, ... or {allowed})"
                )
            if t.text in ("True", "False", "None"):
                self.fail(f"{t.text} is not a value here")
            return ("name", t.text)
        found = repr(t.text) if t.kind != "end" else "the end of the line"
        self.fail(f"unexpected {found}")

    def np_attribute(self) -> tuple:
        """``np.NAME...`` after ``np`` (the ``.`` next): a function, a constant, or
        ``np.lib.stride_tricks.sliding_window_view``."""
        self.take()
        fn = self.take()
        if fn.kind != "name":
            self.fail("expected a function name after 'np.'")
        if fn.text == "inf" and self.peek().text != "(":
            return ("const", "np.inf")
        if fn.text == "lib" and self.peek().text == ".":  # np.lib.stride_tricks...
            path = [fn.text]
            while self.peek().text == "." and len(path) < 3:
                self.take()
                path.append(self.take().text)
            if path != ["lib", "stride_tricks", "sliding_window_view"]:
                self.fail(f"np.{'.'.join(path)} is not allowed")
            return self.general_call("sliding_window_view", "np.lib.stride_tricks.")
        if fn.text in NP_OPERATORS and self.peek().text == "(":
            args, kwargs = self.arguments()
            if len(args) != 2 or kwargs:
                self.fail(f"np.{fn.text}() takes two arrays")
            return ("bin", NP_OPERATORS[fn.text], args[0], args[1])
        if fn.text in NP_CALLS and fn.text not in NP_REDUCE:
            return self.general_call(fn.text, "np.")
        return self.np_call(fn.text)

    def general_call(self, fn: str, prefix: str) -> tuple:
        """``einsum("ab,ab->a", a, b)``, ``sum(e, axis=2)``, ``np.reshape(e, (N, 4))``, a
        conv helper ...: ("call", name, args, keywords, prefix as written)."""
        args, kwargs = self.arguments(general=True)
        return ("call", fn, tuple(args), kwargs, prefix)

    def np_call(self, fn: str) -> tuple:
        allowed = sorted([*NP_UNARY, *NP_BINARY, *NP_REDUCE, *NP_CALLS, "where"])
        if fn not in allowed:
            self.fail(f"np.{fn} is not allowed (allowed: {', '.join(allowed)})")
        if self.peek().text != "(":
            self.fail(f"np.{fn} must be called")
        args, kwargs = self.arguments()
        want = 1 if fn in NP_UNARY or fn in NP_REDUCE else 2 if fn in NP_BINARY else 3
        if len(args) != want:
            self.fail(f"np.{fn}() takes {want} argument(s), got {len(args)}")
        if fn in NP_REDUCE:
            return ("reduce", fn, args[0], kwargs)
        if kwargs:
            self.fail(f"np.{fn}() takes no keyword arguments")
        return ("np", fn, tuple(args))


def _number(e: tuple) -> float | None:
    """The value of a constant exponent: a number, or one built with + - * / from numbers
    (``(-1/2)`` as symgrad prints a square root's inverse)."""
    if e[0] == "num":
        return float(e[1])
    if e[0] == "neg":
        v = _number(e[1])
        return None if v is None else -v
    if e[0] == "bin" and e[1] in ("+", "-", "*", "/"):
        a, b = _number(e[2]), _number(e[3])
        if a is None or b is None or (e[1] == "/" and b == 0):
            return None
        return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else 0.0}[e[1]]
    return None


def _constant(e: tuple) -> bool:
    """A number, or a list / tuple of constants."""
    if e[0] == "num" or (e[0] == "neg" and e[1][0] == "num"):
        return True
    return e[0] == "tuple" and all(_constant(c) for c in e[1])
