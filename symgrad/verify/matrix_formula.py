"""Check-my-derivation input, matrix notation: read and evaluate ``delta2 a1^T``-style formulas.

People write gradients in matrix form as often as in components: ``dL/dW2 = delta2 a1^T``,
``delta1 = (W2^T delta2) * a1 * (1 - a1)``. This module reads such text with the one
tokenizer (matrix dialect) and parser core of :mod:`symgrad.frontend` (no eval, no
sympify) and evaluates it directly with NumPy on per-sample values, vectors being columns:

- names of the network's quantities (``a1``, ``z1``, ``delta2``, ``da1``, ``W2``, ``b1``,
  ``x``, ``y``) and numbers;
- ``+ - / **`` and ``*`` or ``⊙`` elementwise (shapes must match; a scalar broadcasts);
- ``@`` or juxtaposition (``W2^T delta2``) for the matrix product; ``^T`` or ``.T`` transposes;
  two columns side by side (``a1(1 - a1)``, an implicit product) multiply elementwise, the
  only product that fits them;
- the op registry's functions elementwise (``exp log sqrt abs tanh sigmoid relu softplus
  leaky_relu elu step sign`` ...), Iverson brackets ``[z1 > 0]`` or ``(z1 > 0)`` (1 where
  true, else 0), and
  ``outer(u, v)``, ``dot(u, v)``, ``sum(v)``, ``diag(v)``.

Shape slips are answered as such: ``a1^T delta2`` for ``dL/dW2`` is "a 1 x 1, expected 2 x 4".
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import NoReturn

import numpy as np

from symgrad.errors import SpecError
from symgrad.frontend.parser_core import ADJACENT, ParserCore, level
from symgrad.frontend.tokens import MATRIX, Token, tokenize
from symgrad.ir.ops import OPS

MAX_CHARS = 2000
MAX_TOKENS = MATRIX.max_tokens
MAX_DEPTH = 40
MAX_EXPONENT = 64.0


#: Elementwise functions: every one-argument op of the registry (``relu``, ``leaky_relu``,
#: ``elu``, ``softplus``, ``sigmoid``, ``step`` as symgrad prints relu' ...).
ELEMENTWISE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    op.name: op.numeric for op in OPS.values() if op.arity == 1
}
SPECIAL = ("outer", "dot", "sum", "diag")


class FormulaShapeError(Exception):
    """The formula is well-formed but its shapes do not fit (a mistake in the math)."""


# The formula's tree: ("num", value) ("name", name) ("neg", x) ("T", x) ("pow", x, exponent)
# ("call", fn, args) ("ew", op, a, b) for + - * / elementwise, ("mm", op, a, b) for @ and
# juxtaposition (op "@" or " ").
Node = tuple


class _Parser(ParserCore[Node]):
    """The matrix dialect: the core's levels build a small tree; :func:`_eval` evaluates
    it, :func:`show` prints it.

    ``juxtaposition_first`` reads juxtaposition (and ``@``) as binding tighter than ``*``
    (so ``a1 * (1 - a1) * W2^T delta2`` is ``a1 * (1 - a1) * (W2^T delta2)``); by default
    ``*``, ``/``, ``@`` and juxtaposition share one level and group left to right.
    """

    max_depth = MAX_DEPTH

    def __init__(
        self,
        toks: list[Token],
        names: Collection[str],
        field: str | None,
        juxtaposition_first: bool = False,
    ):
        super().__init__(toks)
        self.names = names
        self.field = field
        self.tight = juxtaposition_first
        self.juxtaposed = False  # whether the formula uses juxtaposition at all
        self.products: set[str] = set()  # "*" and "@" where they share a level
        if juxtaposition_first:
            self.levels = (level("+", "-"), level("*", "⊙", "/"), level("@", adjacent=True))
        else:
            self.levels = (level("+", "-"), level("*", "⊙", "/", "@", adjacent=True))

    # -- the dialect -----------------------------------------------------------------
    def fail(self, message: str) -> NoReturn:
        raise SpecError(message, field=self.field)

    def expected(self, tok: Token, text: str) -> NoReturn:
        found = repr(tok.text) if tok.kind != "end" else "the end"
        self.fail(f"expected {text!r} at position {tok.pos}, found {found}")

    def too_deep(self, tok: Token) -> str:
        return f"formula nested deeper than {MAX_DEPTH}"

    def adjacent(self, tok: Token) -> bool:
        return tok.kind in ("num", "name") or tok.text == "("

    def operand(self) -> Node:
        return self.unary()

    def combine(self, op: Token, left: Node, right: Node) -> Node:
        if op.text == ADJACENT:  # juxtaposition: W2^T delta2
            self.juxtaposed = True
            return ("mm", " ", left, right)
        if op.text in ("+", "-"):
            return ("ew", op.text, left, right)
        if op.text == "@":
            if not self.tight:
                self.products.add("@")
            return ("mm", "@", left, right)
        self.products.add("*")
        return ("ew", "/" if op.text == "/" else "*", left, right)

    def expr(self) -> Node:
        return self.binary()

    # -- grammar ---------------------------------------------------------------------
    def parse(self) -> Node:
        value = self.expr()
        t = self.peek()
        if t.kind != "end":
            self.fail(f"unexpected {t.text!r} at position {t.pos}")
        return value

    def unary(self) -> Node:
        if self.peek().text in ("-", "+"):
            op = self.take().text
            self.nest()
            v = self.unary()
            self.leave()
            return ("neg", v) if op == "-" else v
        return self.power()

    def power(self) -> Node:
        base = self.postfix()
        if self.peek().text != "**":
            return base
        self.take()
        sign = 1.0
        if self.peek().text == "-":
            self.take()
            sign = -1.0
        t = self.take()
        if t.kind != "num":
            self.fail(f"the exponent at position {t.pos} must be a number")
        e = sign * float(t.text)
        if abs(e) > MAX_EXPONENT:
            self.fail(f"exponent {e:g} is too large (at most {MAX_EXPONENT:g})")
        return ("pow", base, e)

    def postfix(self) -> Node:
        value = self.primary()
        while self.peek().text in ("^T", ".T"):
            self.take()
            value = ("T", value)
        return value

    def primary(self) -> Node:
        t = self.take()
        if t.kind == "num":
            v = float(t.text)
            if not np.isfinite(v):
                self.fail(f"number {t.text} at position {t.pos} is not finite")
            return ("num", v)
        if t.text == "(":
            self.nest()
            inner = self.expr()
            if self.peek().text in (">", "<", ">=", "<="):  # (z1 > 0): an Iverson bracket
                compare = self.take().text
                inner = ("cmp", compare, inner, self.expr())
            self.expect(")")
            self.leave()
            return inner
        if t.text == "[":  # an Iverson bracket, as symgrad prints relu': [z1 > 0]
            self.nest()
            left = self.expr()
            op = self.take()
            if op.text not in (">", "<", ">=", "<="):
                found = repr(op.text) if op.kind != "end" else "the end"
                self.fail(f"expected a comparison (>, <, >=, <=) in [...], found {found}")
            right = self.expr()
            self.expect("]")
            self.leave()
            return ("cmp", op.text, left, right)
        if t.kind == "name":
            # a1(1 - a1): a quantity before a parenthesis is an implicit product, not a call
            if self.peek().text == "(" and t.text not in self.names:
                return self.call(t)
            if t.text in self.names:
                return ("name", t.text)
            allowed = ", ".join(sorted(self.names))
            self.fail(f"unknown name {t.text!r} at position {t.pos} (allowed: {allowed})")
        found = repr(t.text) if t.kind != "end" else "the end of the formula"
        self.fail(f"unexpected {found} at position {t.pos}")

    def call(self, name: Token) -> Node:
        fn = name.text
        if fn not in ELEMENTWISE and fn not in SPECIAL:
            allowed = ", ".join([*ELEMENTWISE, *SPECIAL])
            self.fail(f"function {fn!r} is not allowed (allowed: {allowed})")
        self.expect("(")
        self.nest()
        args = [self.expr()]
        while self.peek().text == ",":
            self.take()
            args.append(self.expr())
        self.expect(")")
        self.leave()
        want = 2 if fn in ("outer", "dot") else 1
        if len(args) != want:
            self.fail(f"{fn}() takes {want} argument(s), got {len(args)}")
        return ("call", fn, tuple(args))


def _eval(node: Node, env: Mapping[str, np.ndarray]) -> np.ndarray:
    kind = node[0]
    if kind == "num":
        return np.array([[node[1]]])
    if kind == "name":
        arr = np.asarray(env[node[1]], dtype=float)
        return arr.reshape(-1, 1) if arr.ndim == 1 else arr.reshape(1, 1) if arr.ndim == 0 else arr
    if kind == "neg":
        return -_eval(node[1], env)
    if kind == "T":
        return _eval(node[1], env).T
    if kind == "pow":
        with np.errstate(all="ignore"):
            return np.power(_eval(node[1], env), node[2])
    if kind == "cmp":
        fns_cmp = {">": np.greater, "<": np.less, ">=": np.greater_equal, "<=": np.less_equal}
        a, b = _eval(node[2], env), _eval(node[3], env)
        _elementwise(a, b, np.subtract, node[1])  # the shapes must fit as for '-'
        return fns_cmp[node[1]](a, b).astype(float)
    if kind == "ew":
        fns = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}
        return _elementwise(_eval(node[2], env), _eval(node[3], env), fns[node[1]], node[1])
    if kind == "mm":
        a, b = _eval(node[2], env), _eval(node[3], env)
        if node[1] == " " and a.shape == b.shape and a.ndim == 2 and a.shape[1] == 1:
            # a1(1 - a1), two columns side by side: only the elementwise product fits
            return _elementwise(a, b, np.multiply, "*")
        return _matmul(a, b)
    fn, args = node[1], [_eval(a, env) for a in node[2]]
    with np.errstate(all="ignore"):
        if fn in ELEMENTWISE:
            return ELEMENTWISE[fn](args[0])
    if fn == "outer":
        return _matmul(_column(args[0], "outer"), _column(args[1], "outer").T)
    if fn == "dot":
        return _matmul(_column(args[0], "dot").T, _column(args[1], "dot"))
    if fn == "sum":
        return np.array([[float(np.sum(args[0]))]])
    return np.diagflat(_column(args[0], "diag"))


_LEVEL = {"ew+": 1, "ew-": 1, "ew*": 2, "ew/": 2, "mm@": 2, "mm ": 2}


def show(node: Node, *, explicit: bool = True) -> str:
    """The tree as text; with ``explicit`` every product is parenthesised (shows a reading)."""
    kind = node[0]
    if kind == "num":
        v = node[1]
        return str(int(v)) if v == int(v) and abs(v) < 1e15 else f"{v:g}"
    if kind == "name":
        return node[1]
    if kind == "neg":
        return f"-{_wrap(node[1], explicit)}"
    if kind == "T":
        return f"{_wrap(node[1], explicit)}^T"
    if kind == "pow":
        return f"{_wrap(node[1], explicit)}**{show(('num', node[2]))}"
    if kind == "call":
        return f"{node[1]}({', '.join(show(a, explicit=explicit) for a in node[2])})"
    if kind == "cmp":
        return f"[{show(node[2], explicit=explicit)} {node[1]} {show(node[3], explicit=explicit)}]"
    op = " " if node[1] == " " else f" {node[1]} "
    left, right = node[2], node[3]
    lt, rt = show(left, explicit=explicit), show(right, explicit=explicit)
    level = _LEVEL[f"{kind}{node[1]}"]
    if _is_binary(left) and (explicit and level == 2 or _level(left) < level):
        lt = f"({lt})"
    if _is_binary(right) and (explicit and level == 2 or _level(right) <= level):
        rt = f"({rt})"
    return f"{lt}{op}{rt}"


def _is_binary(node: Node) -> bool:
    return node[0] in ("ew", "mm")


def _level(node: Node) -> int:
    return _LEVEL[f"{node[0]}{node[1]}"]


def _wrap(node: Node, explicit: bool) -> str:
    text = show(node, explicit=explicit)
    return f"({text})" if _is_binary(node) or node[0] == "neg" else text


def _shape(a: np.ndarray) -> str:
    return " x ".join(str(s) for s in a.shape)


def _is_scalar(a: np.ndarray) -> bool:
    return a.size == 1


def _column(a: np.ndarray, what: str) -> np.ndarray:
    if a.ndim == 2 and a.shape[1] == 1:
        return a
    if a.ndim == 2 and a.shape[0] == 1:
        return a.T
    raise FormulaShapeError(f"{what}() needs vectors, got a {_shape(a)} matrix")


def _elementwise(a: np.ndarray, b: np.ndarray, fn, op: str) -> np.ndarray:
    if a.shape != b.shape and not (_is_scalar(a) or _is_scalar(b)):
        raise FormulaShapeError(
            f"'{op}' needs equal shapes (or a scalar), got {_shape(a)} and {_shape(b)}"
        )
    if _is_scalar(a) and not _is_scalar(b):
        a = a.reshape(())
    if _is_scalar(b) and not _is_scalar(a):
        b = b.reshape(())
    with np.errstate(all="ignore"):
        return np.asarray(fn(a, b))


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if _is_scalar(a) or _is_scalar(b):  # a number times a matrix
        return _elementwise(a, b, np.multiply, "*")
    if a.shape[1] != b.shape[0]:
        raise FormulaShapeError(
            f"matrix product of a {_shape(a)} and a {_shape(b)}: inner sizes differ"
        )
    return a @ b


def parse(
    text: str,
    names: Collection[str],
    *,
    field: str | None = None,
    juxtaposition_first: bool = False,
) -> tuple[Node, bool]:
    """Parse a formula; returns the tree and whether another reading exists: it uses
    juxtaposition, or mixes ``*`` and ``@`` (Python reads ``a * W.T @ d`` as
    ``(a * W.T) @ d``; a person often means ``a * (W.T @ d)``).

    Raises:
        SpecError: the text is not a formula (bad token, unknown name, ...).
    """

    def fail(message: str) -> NoReturn:
        raise SpecError(message, field=field)

    if not isinstance(text, str):
        fail("expected a formula string")
    if len(text) > MAX_CHARS:
        fail(f"formula longer than {MAX_CHARS} characters")
    toks = tokenize(text, fail, MATRIX)
    if len(toks) == 1:
        fail("empty formula")
    p = _Parser(toks, names, field, juxtaposition_first)
    tree = p.parse()
    return tree, p.juxtaposed or p.products == {"*", "@"}


def evaluate_tree(node: Node, env: Mapping[str, np.ndarray]) -> np.ndarray:
    """The value of a parsed formula (raises FormulaShapeError when shapes do not fit)."""
    return _eval(node, env)


def evaluate(
    text: str,
    env: Mapping[str, np.ndarray],
    *,
    field: str | None = None,
    juxtaposition_first: bool = False,
) -> np.ndarray:
    """The value of a matrix-notation formula (vectors as columns).

    Raises:
        SpecError: the text is not a formula (bad token, unknown name, ...).
        FormulaShapeError: the shapes of the formula's terms do not fit together.
    """
    tree, _ = parse(text, env, field=field, juxtaposition_first=juxtaposition_first)
    return _eval(tree, env)
