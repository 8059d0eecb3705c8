"""Check a learner's whole backward pass, line by line (``symgrad check SPEC --steps FILE``).

The learner writes the backward pass as a Python file of assignments in NumPy notation,
in the batched row-major form of the generated code (samples are rows)::

    delta2 = 2 * (a2 - Y) * a2 * (1 - a2) / (N * n_2)
    dW2 = delta2.T @ a1
    db2 = delta2.sum(axis=0)
    da1 = delta2 @ W2
    delta1 = da1 * a1 * (1 - a1)

The file is never executed: a whitelist tokenizer and a recursive-descent parser read it
(assignments ``NAME = EXPR`` and ``NAME += EXPR`` ..., comments, ``import numpy as np``),
and a small evaluator runs the parsed tree on random batches whose forward values
(``X, Y, z1, a1, ...``) and derived gradients come from the derivation. Each line that
assigns a gradient symgrad knows (``delta2``/``dz2``, ``da1``, ``dW2``, ``db2``, ``dyhat``,
``dx``) is compared with the derived one once the learner has finished with it (a run
of in-place updates ``delta2 *= a2`` counts as one step). Other names are the learner's
own intermediates.

Conventions: ``N`` (or ``n``, ``len(X)``, ``X.shape[0]``) is the batch size; the loss is the
batch mean, so parameter gradients carry 1/N. Adjoints (``delta``, ``da``) are accepted
with the 1/N (as the generated code has them) or without it (per-sample scale), provided
the parameter gradients get it in the end.

A wrong line is answered with what it should be, the likely slip (found by trying the
classic slips on the line itself: a transpose, the product's order, z where a belongs, the
sign, a missing or doubled 1/N, a missing or wrong activation-derivative factor, a sum
over the wrong axis, the wrong layer's value) and a numeric counterexample.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from symgrad.errors import SpecError
from symgrad.ir.naming import adjoint_name, split
from symgrad.ir.network import Network
from symgrad.templating import conv_helpers

MAX_CHARS = 20_000
MAX_LINES = 200
MAX_TOKENS = 400  # per statement
MAX_DEPTH = 40
MAX_ELEMENTS = 10_000_000  # the largest array a file's call may make
BATCH = 7  # a prime that is rarely a layer width, so a missing 1/N shows as a factor 7
POINTS = 2
RTOL = 1e-7
#: Absolute agreement that always suffices: the random batches have O(1) values, so a
#: derived value below this is a cancellation to zero (a bias before batch norm).
ATOL = 1e-12

_TOKEN = re.compile(
    r"(?P<ws>[ \t]+)"
    r"|(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<str>\"[A-Za-z,.>\- ]{0,80}\"|'[A-Za-z,.>\- ]{0,80}')"  # einsum subscripts
    r"|(?P<op>\*\*|>=|<=|==|\.\.\.|[-+*/@]=|[-+*/@(),.:\[\]=<>])"
)

#: np.<name>(x): elementwise functions of one array.
NP_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "tanh": np.tanh,
    "cosh": np.cosh,
    "sinh": np.sinh,
    "sin": np.sin,
    "cos": np.cos,
    "sign": np.sign,
    "ones_like": np.ones_like,
    "zeros_like": np.zeros_like,
    "square": np.square,
}
NP_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "maximum": np.maximum,
    "minimum": np.minimum,
    "outer": np.outer,
    "dot": np.dot,
}
NP_REDUCE = ("sum", "mean", "max", "min")
REDUCERS: dict[str, Callable[..., Any]] = {
    "sum": np.sum,
    "mean": np.mean,
    "max": np.max,
    "min": np.min,
}
#: Functions a learner may call bare, as symgrad's documents print them (a helper's
#: definition in the file is not read: these are the meanings).
BARE: dict[str, Callable[[np.ndarray], Any]] = {
    "sigmoid": lambda v: 0.5 + 0.5 * np.tanh(0.5 * v),
    "step": lambda v: (v > 0).astype(float),
    "rowsum": lambda v: np.sum(v, axis=-1, keepdims=True),
    "colsum": lambda v: np.sum(v, axis=0),
    **{k: f for k, f in NP_UNARY.items() if k not in ("ones_like", "zeros_like", "square")},
}


def _share(v: np.ndarray, axis: int, pick: Callable[..., np.ndarray]) -> np.ndarray:
    # the arg-max (arg-min) indicator along an axis, ties sharing it (symgrad's share_max)
    hit = (v == pick(v, axis=axis, keepdims=True)).astype(float)
    return hit / hit.sum(axis=axis, keepdims=True)


def _einsum(spec: str, *ops: np.ndarray) -> np.ndarray:
    if not isinstance(spec, str) or not re.fullmatch(r"[A-Za-z,.]*(->[A-Za-z.]*)?", spec):
        raise ValueError('einsum takes its subscripts first, as in einsum("ij,ij->i", a, b)')
    return np.einsum(spec, *[np.asarray(o, dtype=float) for o in ops])


def _reduce_fn(fn: Callable[..., Any]) -> Callable[..., Any]:
    def reduce(v: Any, axis: Any = None, keepdims: bool = False) -> Any:
        return fn(np.asarray(v, dtype=float), axis=axis, keepdims=keepdims)

    return reduce


def _reshape(v: Any, *shape: Any) -> np.ndarray:
    dims = shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape
    return np.reshape(np.asarray(v, dtype=float), tuple(int(d) for d in dims))


#: The generated module's helpers a line may call (as ``derive --form matrix`` and the
#: generated code spell a conv net's steps).
CONV_HELPER_NAMES = (
    "_windows",
    "_correlate",
    "_correlate_weight_grad",
    "_correlate_input_grad",
    "_sum_pool",
    "_sum_pool_grad",
    "_max_pool",
    "_max_pool_grad",
)

#: Functions of several arguments (and keywords), callable bare as symgrad prints its
#: component fallbacks (``einsum("ab,ab->a", a3, da3)``, ``sum(e, axis=2)``,
#: ``share_max(a1, axis=1)``) or as ``np.<name>``.
CALLS: dict[str, Callable[..., Any]] = {
    "einsum": _einsum,
    "sum": _reduce_fn(np.sum),
    "max": _reduce_fn(np.max),
    "min": _reduce_fn(np.min),
    "share_max": lambda v, axis: _share(np.asarray(v, dtype=float), axis, np.max),
    "share_min": lambda v, axis: _share(np.asarray(v, dtype=float), axis, np.min),
    "broadcast_to": lambda v, shape: np.broadcast_to(v, shape),
    "transpose": lambda v, axes=None: np.transpose(v, axes),
    "reshape": _reshape,
    "moveaxis": lambda v, a, b: np.moveaxis(v, a, b),
    "pad": lambda v, widths: np.pad(np.asarray(v, dtype=float), widths),
    "repeat": lambda v, k, axis=None: np.repeat(v, k, axis=axis),
    "tensordot": lambda a, b, axes=2: np.tensordot(a, b, axes=axes),
    "sliding_window_view": lambda v, shape, axis=None: np.lib.stride_tricks.sliding_window_view(
        v, shape, axis=axis
    ),
}
NP_CALLS = (
    "einsum",
    "broadcast_to",
    "transpose",
    "reshape",
    "moveaxis",
    "pad",
    "repeat",
    "tensordot",
    "max",
    "min",
)
BARE_CALLS: tuple[str, ...] = (
    "einsum",
    "sum",
    "max",
    "min",
    "share_max",
    "share_min",
    "broadcast_to",
    "transpose",
    "sliding_window_view",
    *CONV_HELPER_NAMES,
)
#: Keyword arguments the general calls take.
CALL_KEYWORDS = ("axis", "keepdims", "dilation", "axes")


class StepsInputError(SpecError):
    """The steps file cannot be read (a one-line error naming the file and line)."""


class _Shape(Exception):
    """A shape or domain problem while evaluating the learner's line (their mistake)."""


# -- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    """One assignment: ``target op= expr`` read from ``line`` (1-based) of the file."""

    line: int
    target: str
    op: str  # "=", "+=", "-=", "*=", "/=", "@="
    expr: tuple
    text: str


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    pos: int


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, text) of each statement: comments dropped, lines inside open
    parentheses or ending in a backslash joined."""
    buf, start, depth = "", 0, 0
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].rstrip()
        if not buf:
            start = n
        cont = line.endswith("\\")
        if cont:
            line = line[:-1]
        buf += " " + line if buf else line
        depth += line.count("(") + line.count("[") - line.count(")") - line.count("]")
        if depth > 0 or cont:
            continue
        depth = 0
        if buf.strip():
            yield start, buf.strip()
        buf = ""
    if buf.strip():
        yield start, buf.strip()


def parse_steps(text: str, *, file: str | None = None) -> list[Statement]:
    """Read a steps file (never executing it).

    Raises:
        StepsInputError: anything that is not an assignment in the NumPy subset.
    """
    if len(text) > MAX_CHARS:
        raise StepsInputError(f"file is too long (at most {MAX_CHARS} characters)", file=file)
    out: list[Statement] = []
    for n, line in _logical_lines(text):
        where = f"line {n}"
        if line in ("import numpy as np", "import numpy"):
            continue
        if len(out) >= MAX_LINES:
            raise StepsInputError(f"more than {MAX_LINES} statements", file=file)
        toks = _tokenize(line, file, where)
        if len(toks) < 3 or toks[0].kind != "name" or toks[1].text not in _ASSIGN:
            raise StepsInputError(
                f"{where}: expected an assignment NAME = EXPRESSION, got {line[:40]!r}",
                file=file,
            )
        expr = _Parser(toks[2:], file, where).parse()
        out.append(Statement(n, toks[0].text, toks[1].text, expr, line))
    if not out:
        raise StepsInputError("no assignments found", file=file)
    return out


_ASSIGN = ("=", "+=", "-=", "*=", "/=", "@=")


def _tokenize(line: str, file: str | None, where: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(line):
        m = _TOKEN.match(line, pos)
        if m is None:
            ch = line[pos]
            raise StepsInputError(f"{where}: unexpected character {ch!r}", file=file)
        kind = m.lastgroup or "op"
        if kind != "ws":
            toks.append(_Tok(kind, m.group(), pos))
            if len(toks) > MAX_TOKENS:
                raise StepsInputError(f"{where}: statement too long", file=file)
        pos = m.end()
    toks.append(_Tok("end", "", len(line)))
    return toks


class _Parser:
    """NumPy-subset expressions -> a tree of tuples (Python precedence)."""

    def __init__(self, toks: list[_Tok], file: str | None, where: str):
        self.toks, self.i, self.file, self.where, self.depth = toks, 0, file, where, 0

    def fail(self, msg: str) -> StepsInputError:
        return StepsInputError(f"{self.where}: {msg}", file=self.file)

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        t = self.toks[self.i]
        self.i = min(self.i + 1, len(self.toks) - 1)
        return t

    def expect(self, text: str) -> None:
        t = self.take()
        if t.text != text:
            found = repr(t.text) if t.kind != "end" else "the end of the line"
            raise self.fail(f"expected {text!r}, found {found}")

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail("expression nested too deeply")

    def parse(self) -> tuple:
        e = self.compare()
        if self.peek().kind != "end":
            raise self.fail(f"unexpected {self.peek().text!r}")
        self.strings_only_in_einsum(e)
        return e

    def strings_only_in_einsum(self, e: Any) -> None:
        """A quoted string is einsum's subscripts and nothing else."""
        if not isinstance(e, tuple) or not e:
            return
        if e[0] == "str":
            raise self.fail("a quoted string is allowed only as einsum's subscripts")
        if e[0] == "call" and e[1] == "einsum":
            if not e[2] or e[2][0][0] != "str":
                raise self.fail('einsum takes its subscripts first: einsum("ij,ij->i", a, b)')
            for a in e[2][1:]:
                self.strings_only_in_einsum(a)
            return
        for c in e:
            if isinstance(c, dict):
                for v in c.values():
                    self.strings_only_in_einsum(v)
            else:
                self.strings_only_in_einsum(c)

    def compare(self) -> tuple:
        e = self.arith()
        if self.peek().text in (">", "<", ">=", "<=", "=="):
            op = self.take().text
            e = ("bin", op, e, self.arith())
        return e

    def arith(self) -> tuple:
        e = self.term()
        while self.peek().text in ("+", "-"):
            op = self.take().text
            e = ("bin", op, e, self.term())
        return e

    def term(self) -> tuple:
        e = self.unary()
        while self.peek().text in ("*", "/", "@"):
            op = self.take().text
            e = ("bin", op, e, self.unary())
        return e

    def unary(self) -> tuple:
        if self.peek().text in ("-", "+"):
            op = self.take().text
            self.nest()
            e = self.unary()
            self.depth -= 1
            return ("neg", e) if op == "-" else e
        return self.power()

    def power(self) -> tuple:
        base = self.postfix()
        if self.peek().text == "**":
            self.take()
            self.nest()
            exp = self.unary()
            self.depth -= 1
            if exp[0] != "num" and not (exp[0] == "neg" and exp[1][0] == "num"):
                raise self.fail("an exponent must be a number")
            value = exp[1] if exp[0] == "num" else -exp[1][1]
            if abs(value) > 64:
                raise self.fail("exponent too large (at most 64)")
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
                raise self.fail("expected a name after '.'")
            if t.text == "T":
                e = ("T", e)
            elif t.text == "shape":
                self.expect("[")
                k = self.take()
                if k.kind != "num" or not k.text.isdigit():
                    raise self.fail("shape[...] takes an integer")
                self.expect("]")
                e = ("shape", e, int(k.text))
            elif t.text in NP_REDUCE and self.peek().text == "(":
                args, kwargs = self.arguments()
                if args:  # .sum(0): the axis given positionally
                    if len(args) > 1 or args[0][0] != "num" or "axis" in kwargs:
                        raise self.fail(f".{t.text}() takes one axis: .{t.text}(axis=0)")
                    kwargs = {"axis": int(args[0][1]), **kwargs}
                e = ("reduce", t.text, e, kwargs)
            elif t.text in ("reshape", "transpose") and self.peek().text == "(":
                args, kwargs = self.arguments(general=True)
                if kwargs:
                    raise self.fail(f".{t.text}() takes no keyword arguments")
                e = ("call", t.text, (e, *args), {}, "method")
            else:
                raise self.fail(
                    f"attribute .{t.text} is not allowed (allowed: .T, .shape[k], .sum(), "
                    ".mean(), .max(), .min(), .reshape(), .transpose())"
                )
        return e

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
                            raise self.fail("a slice is start:stop:step")
                        continue
                    cur = self.arith()
                if len(parts) == 1:
                    if parts[0] is None:
                        raise self.fail("empty subscript")
                    items.append(("at", parts[0]))
                else:
                    items.append(("slice", *(parts + [None] * (3 - len(parts)))))
            t = self.take()
            if t.text == "]":
                break
            if t.text != ",":
                raise self.fail(f"expected ',' or ']' in a subscript, found {t.text!r}")
        self.depth -= 1
        return tuple(items)

    def arguments(self, general: bool = False) -> tuple[list[tuple], dict[str, Any]]:
        self.expect("(")
        self.nest()
        args: list[tuple] = []
        kwargs: dict[str, Any] = {}
        while self.peek().text != ")":
            t = self.peek()
            if t.kind == "name" and self.toks[self.i + 1].text == "=":
                self.take()
                self.take()
                if general and t.text not in CALL_KEYWORDS:
                    raise self.fail(
                        f"keyword argument {t.text}= is not allowed "
                        f"(allowed: {', '.join(CALL_KEYWORDS)})"
                    )
                if general and t.text == "keepdims":
                    kwargs[t.text] = ("bool", self.keyword(t.text))
                elif general:
                    kwargs[t.text] = self.compare()
                else:
                    kwargs[t.text] = self.keyword(t.text)
            else:
                if kwargs:
                    raise self.fail("positional argument after a keyword argument")
                args.append(self.compare())
            if self.peek().text == ",":
                self.take()
            elif self.peek().text != ")":
                raise self.fail(f"expected ',' or ')', found {self.peek().text!r}")
        self.take()
        self.depth -= 1
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
                raise self.fail("axis= takes an integer")
            return -int(t.text) if neg else int(t.text)
        if name == "keepdims":
            t = self.take()
            if t.text not in ("True", "False"):
                raise self.fail("keepdims= takes True or False")
            return t.text == "True"
        raise self.fail(f"keyword argument {name}= is not allowed (allowed: axis, keepdims)")

    def primary(self) -> tuple:
        t = self.take()
        if t.kind == "num":
            v = float(t.text)
            if not np.isfinite(v):
                raise self.fail(f"number {t.text} is not finite")
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
            self.depth -= 1
            return e
        if t.text == "[":  # an Iverson bracket, as symgrad prints relu': [z1 > 0]
            self.nest()
            e = self.compare()
            if e[0] != "bin" or e[1] not in (">", "<", ">=", "<=", "=="):
                raise self.fail("[...] holds a comparison, as in [z1 > 0] (lists are not allowed)")
            self.expect("]")
            self.depth -= 1
            return e
        if t.kind == "name":
            if t.text == "np" and self.peek().text == ".":
                self.take()
                fn = self.take()
                if fn.kind != "name":
                    raise self.fail("expected a function name after 'np.'")
                if fn.text == "inf" and self.peek().text != "(":
                    return ("const", "np.inf")
                if fn.text == "lib" and self.peek().text == ".":  # np.lib.stride_tricks...
                    path = [fn.text]
                    while self.peek().text == "." and len(path) < 3:
                        self.take()
                        path.append(self.take().text)
                    if path != ["lib", "stride_tricks", "sliding_window_view"]:
                        raise self.fail(f"np.{'.'.join(path)} is not allowed")
                    return self.general_call("sliding_window_view", "np.lib.stride_tricks.")
                if fn.text in NP_CALLS and fn.text not in NP_REDUCE:
                    return self.general_call(fn.text, "np.")
                return self.np_call(fn.text)
            if self.peek().text == "(":
                if t.text in BARE_CALLS:
                    return self.general_call(t.text, "")
                if t.text in BARE or t.text == "len":
                    args, kwargs = self.arguments()
                    if len(args) != 1 or kwargs:
                        raise self.fail(f"{t.text}() takes one argument")
                    return ("bare", t.text, args[0])
                allowed = ", ".join([*BARE, "len", *BARE_CALLS])
                raise self.fail(
                    f"function {t.text!r} is not allowed (use np.exp, np.tanh, ... or {allowed})"
                )
            if t.text in ("True", "False", "None"):
                raise self.fail(f"{t.text} is not a value here")
            return ("name", t.text)
        found = repr(t.text) if t.kind != "end" else "the end of the line"
        raise self.fail(f"unexpected {found}")

    def general_call(self, fn: str, prefix: str) -> tuple:
        """``einsum("ab,ab->a", a, b)``, ``sum(e, axis=2)``, ``np.reshape(e, (N, 4))``, a
        conv helper ...: ("call", name, args, keywords, prefix as written)."""
        args, kwargs = self.arguments(general=True)
        return ("call", fn, tuple(args), kwargs, prefix)

    def np_call(self, fn: str) -> tuple:
        allowed = sorted([*NP_UNARY, *NP_BINARY, *NP_REDUCE, *NP_CALLS, "where"])
        if fn not in allowed:
            raise self.fail(f"np.{fn} is not allowed (allowed: {', '.join(allowed)})")
        if self.peek().text != "(":
            raise self.fail(f"np.{fn} must be called")
        args, kwargs = self.arguments()
        want = 1 if fn in NP_UNARY or fn in NP_REDUCE else 2 if fn in NP_BINARY else 3
        if len(args) != want:
            raise self.fail(f"np.{fn}() takes {want} argument(s), got {len(args)}")
        if fn in NP_REDUCE:
            return ("reduce", fn, args[0], kwargs)
        if kwargs:
            raise self.fail(f"np.{fn}() takes no keyword arguments")
        return ("np", fn, tuple(args))


# -- evaluating ----------------------------------------------------------------------------


def _eval(e: tuple, env: Mapping[str, Any]) -> Any:
    kind = e[0]
    if kind == "num":
        return e[1]
    if kind == "str":
        return e[1]
    if kind == "bool":
        return e[1]
    if kind == "const":
        return np.inf
    if kind == "tuple":
        return tuple(_intish(_eval(c, env)) for c in e[1])
    if kind == "call":
        fn = conv_helpers()[e[1]] if e[1] in CONV_HELPER_NAMES else CALLS[e[1]]
        args = [_intish(_eval(a, env)) for a in e[2]]
        kwargs = {k: _intish(_eval(v, env)) for k, v in e[3].items()}
        _check_size(e[1], args)
        out = fn(*args, **kwargs)
        if np.size(out) > MAX_ELEMENTS:
            raise _Shape(f"{e[1]}() gives {np.size(out)} elements (at most {MAX_ELEMENTS})")
        return out
    if kind == "index":
        return np.asarray(_eval(e[1], env))[tuple(_subscript(i, env) for i in e[2])]
    if kind == "name":
        if e[1] not in env:
            raise KeyError(e[1])
        return env[e[1]]
    if kind == "neg":
        return -_eval(e[1], env)
    if kind == "T":
        return np.asarray(_eval(e[1], env)).T
    if kind == "shape":
        shape = np.shape(_eval(e[1], env))
        if e[2] >= len(shape):
            raise _Shape(f"shape[{e[2]}] of an array with {len(shape)} axes")
        return shape[e[2]]
    if kind == "bare":
        v = _eval(e[2], env)
        if e[1] == "len":
            return len(v) if np.ndim(v) else 1
        return BARE[e[1]](np.asarray(v, dtype=float))
    if kind == "reduce":
        v = np.asarray(_eval(e[2], env), dtype=float)
        axis, keep = e[3].get("axis"), e[3].get("keepdims", False)
        if isinstance(axis, int) and not -v.ndim <= axis < v.ndim:
            raise _Shape(f"axis={axis} on an array with {v.ndim} axes")
        if isinstance(axis, tuple) and not all(-v.ndim <= a < v.ndim for a in axis):
            raise _Shape(f"axis={axis} on an array with {v.ndim} axes")
        red = REDUCERS[e[1]]
        return red(v, axis=axis, keepdims=keep)
    if kind == "np":
        args = [np.asarray(_eval(a, env), dtype=float) for a in e[2]]
        if e[1] in NP_UNARY:
            return NP_UNARY[e[1]](args[0])
        if e[1] == "where":
            return np.where(args[0] != 0, args[1], args[2])
        if e[1] in ("outer",) and (args[0].ndim > 1 or args[1].ndim > 1):
            raise _Shape("np.outer needs vectors")
        return _binary_np(e[1], args[0], args[1])
    op, a, b = e[1], _eval(e[2], env), _eval(e[3], env)
    return _binary(op, a, b)


def _check_size(fn: str, args: list[Any]) -> None:
    """Refuse, before computing it, work or an array a file would make unreasonably large."""
    n = 0
    if fn == "repeat" and len(args) > 1:
        n = int(np.size(args[0])) * int(np.max(np.abs(np.asarray(args[1], dtype=float)), initial=1))
    elif fn == "pad" and len(args) > 1:
        grow = 1 + int(np.sum(np.abs(np.asarray(args[1], dtype=float))))
        n = int(np.size(args[0])) * grow * grow
    elif fn == "broadcast_to" and len(args) > 1:
        n = int(np.prod(np.asarray(args[1], dtype=float)))
    elif fn == "tensordot" and len(args) > 1:
        n = int(np.size(args[0])) * int(np.size(args[1]))
    elif fn == "einsum" and args and isinstance(args[0], str) and "." not in args[0]:
        dims: dict[str, int] = {}  # the work: one loop over every distinct index
        for sub, op in zip(args[0].split("->")[0].split(","), args[1:], strict=False):
            for letter, size in zip(sub, np.shape(op), strict=False):
                dims[letter] = max(dims.get(letter, 1), int(size))
        n = int(np.prod(list(dims.values()), dtype=float)) // 10
    if n > MAX_ELEMENTS:
        raise _Shape(f"{fn}() would make more than {MAX_ELEMENTS} elements")


def _intish(v: Any) -> Any:
    """Numbers are read as floats; a whole one is an int where a shape, axis or size is."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, tuple):
        return tuple(_intish(c) for c in v)
    return v


def _subscript(item: tuple, env: Mapping[str, Any]) -> Any:
    if item[0] == "none":
        return None
    if item[0] == "ellipsis":
        return Ellipsis
    if item[0] == "at":
        return _index_int(_eval(item[1], env))
    return slice(*[None if p is None else _index_int(_eval(p, env)) for p in item[1:]])


def _index_int(v: Any) -> int:
    if np.ndim(v) or float(v) != int(v):
        raise _Shape(f"an index must be an integer, got {v!r}")
    return int(v)


def _shape_text(v: Any) -> str:
    s = np.shape(v)
    return "a number" if not s else str(tuple(s))


def _binary_np(fn: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    try:
        return NP_BINARY[fn](a, b)
    except ValueError:
        raise _Shape(f"np.{fn} of {_shape_text(a)} and {_shape_text(b)}") from None


def _binary(op: str, a: Any, b: Any) -> Any:
    try:
        if op == "@":
            if np.ndim(a) == 0 or np.ndim(b) == 0:
                raise _Shape("@ needs arrays, not numbers (use *)")
            return np.asarray(a) @ np.asarray(b)
        if op in (">", "<", ">=", "<=", "=="):
            fns = {">": np.greater, "<": np.less, ">=": np.greater_equal}
            fns.update({"<=": np.less_equal, "==": np.equal})
            return fns[op](a, b).astype(float)
        if np.ndim(a) and np.ndim(b) and np.shape(a) != np.shape(b):
            # NumPy would broadcast; a (N, 4) * (4,) row is fine, (N, 4) * (N, 2) is not
            np.broadcast_shapes(np.shape(a), np.shape(b))
        fn = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "**": np.power}
        return fn[op](a, b)
    except ValueError:
        what = {"@": "matrix product"}.get(op, f"'{op}'")
        raise _Shape(
            f"{what} of {_shape_text(a)} and {_shape_text(b)}: shapes do not fit"
        ) from None


def unparse(e: tuple) -> str:
    """The tree as NumPy text (parenthesised where Python needs it)."""
    prec = {"**": 4, "*": 3, "/": 3, "@": 3, "+": 2, "-": 2, ">": 1, "<": 1, ">=": 1}
    prec.update({"<=": 1, "==": 1})

    def go(x: tuple, ctx: int = 0) -> str:
        kind = x[0]
        if kind == "num":
            v = x[1]
            return str(int(v)) if v == int(v) and abs(v) < 1e15 else repr(v)
        if kind == "name":
            return x[1]
        if kind == "neg":
            s = "-" + go(x[1], 3)
            return f"({s})" if ctx > 3 else s
        if kind == "T":
            return go(x[1], 5) + ".T"
        if kind == "shape":
            return f"{go(x[1], 5)}.shape[{x[2]}]"
        if kind == "bare":
            return f"{x[1]}({go(x[2])})"
        if kind == "reduce":
            kw = ", ".join(f"{k}={v}" for k, v in x[3].items())
            return f"{go(x[2], 5)}.{x[1]}({kw})"
        if kind == "np":
            return f"np.{x[1]}({', '.join(go(a) for a in x[2])})"
        if kind == "str":
            return f'"{x[1]}"'
        if kind == "bool":
            return str(x[1])
        if kind == "const":
            return x[1]
        if kind == "tuple":
            inner = ", ".join(go(c) for c in x[1])
            return f"({inner},)" if len(x[1]) == 1 else f"({inner})"
        if kind == "call":
            kws = [f"{k}={go(v)}" for k, v in x[3].items()]
            if x[4] == "method":
                rest = ", ".join([go(a) for a in x[2][1:]] + kws)
                return f"{go(x[2][0], 5)}.{x[1]}({rest})"
            return f"{x[4]}{x[1]}({', '.join([go(a) for a in x[2]] + kws)})"
        if kind == "index":
            return f"{go(x[1], 5)}[{', '.join(_unparse_item(i, go) for i in x[2])}]"
        p = prec[x[1]]
        right_ctx = p + 1 if x[1] != "**" else p
        s = f"{go(x[2], p if x[1] != '**' else p + 1)} {x[1]} {go(x[3], right_ctx)}"
        return f"({s})" if p < ctx else s

    return go(e)


def _unparse_item(item: tuple, go: Callable[[tuple], str]) -> str:
    if item[0] == "none":
        return "None"
    if item[0] == "ellipsis":
        return "..."
    if item[0] == "at":
        return go(item[1])
    a, b, c = ("" if p is None else go(p) for p in item[1:])
    return f"{a}:{b}" + (f":{c}" if c else "")


# -- the targets -----------------------------------------------------------------------------


def _aliases(grad: str, wrt: str, kind: str) -> list[str]:
    """The names a learner may give a derived gradient: symgrad's (``delta2``), ``dz2``, and
    the upper-case batch spelling ``dZ2`` (``dA1``, ``dX``); ``dyhat`` for the loss's."""
    base, layer = split(wrt)
    names = [grad, adjoint_name(wrt), "d" + wrt, "d" + base.upper() + layer]
    if kind == "loss":
        names += ["dyhat", "dYhat", "dy_hat"]
    return list(dict.fromkeys(names))


@dataclass
class _Point:
    env: dict[str, Any]  # what the learner's lines may read
    targets: dict[str, np.ndarray]  # derived gradient name -> batched value


def _points(net: Network, d, seed: int) -> list[_Point]:
    """Random batches: forward values stacked as rows, and every derived gradient batched
    (adjoints are the per-sample ones over N, parameter gradients their mean)."""
    from symgrad.calculus.program import program
    from symgrad.verify.evaluation import run_derivation, run_program_batch
    from symgrad.verify.verify import random_targets

    rng = np.random.default_rng(seed)
    points = []
    for _ in range(POINTS):
        params = {p.name: rng.uniform(-1.0, 1.0, net.shape(p)) for p in net.params}
        xs = rng.normal(0.0, 1.0, (BATCH, net.size(net.input_width)))
        ys = random_targets(net, BATCH, rng)
        coupled = any(s.sample is not None for s in net.stages)
        if coupled:  # batch statistics: the derivation's program run on the whole batch
            inputs = {**params, str(net.input): xs, str(net.loss.target): ys}
            whole, rowwise = run_program_batch(program(d), inputs, net.sizes, BATCH)
        else:
            rows = [run_derivation(d, params, x, y)[1] for x, y in zip(xs, ys, strict=True)]
        env: dict[str, Any] = dict(params)
        forward = [str(net.input), str(net.loss.target), *(s.name for s in net.stages)]
        for name in forward:
            env[name] = whole[name] if coupled else np.stack([r[name] for r in rows])
            # the upper-case batch spelling (A1 for a1), unless a parameter has that name
            # (bilinear's A2 is its matrix parameter, not the batch of a2)
            env.setdefault(name.upper(), env[name])
        env["yhat"] = env["Yhat"] = env[str(net.output)]
        env["N"] = env["n"] = BATCH
        for sym, value in net.sizes.items():
            env.setdefault(str(sym), int(value))
        targets = {}
        for st in d.steps:
            if coupled and st.grad not in rowwise:  # already a sum over the batch's samples
                targets[st.grad] = whole[st.grad] / BATCH
                continue
            vals = whole[st.grad] if coupled else np.stack([r[st.grad] for r in rows])
            targets[st.grad] = vals.sum(axis=0) / BATCH if st.kind == "param" else vals / BATCH
        points.append(_Point(env, targets))
    return points


#: Random batches of the last few derivations checked (building them runs the derivation
#: N times per batch; a class checking many files against one network builds them once).
_POINTS: dict[tuple[int, int], tuple[Any, list[_Point]]] = {}


def _should_be(st) -> str:
    """The step's batched formula, in the NumPy subset a steps file is read in."""
    import sympy as sp

    from symgrad.backends.numpy_printer import SymgradNumPyPrinter
    from symgrad.calculus.conv_form import TENSOR_OPS
    from symgrad.calculus.layout import batched_step
    from symgrad.documents.render import TextPrinter

    class _StepsPrinter(TextPrinter):
        """symgrad's text notation, with a conv net's array operations as the generated
        code calls them (``_correlate_weight_grad(delta1, _windows(x, ...))``)."""

        def _print(self, expr: Any, **kwargs: Any) -> str:
            if isinstance(expr, TENSOR_OPS):  # before the nodes' own _sympystr
                return SymgradNumPyPrinter()._print(expr)
            return super()._print(expr, **kwargs)

    e = batched_step(st)
    if st.kind == "param" and st.indices:  # a penalty's part, W1[p, q]: the whole W1
        e = e.replace(
            lambda a: isinstance(a, sp.Indexed) and tuple(a.indices) == tuple(st.indices),
            lambda a: sp.Symbol(str(a.base.label)),
        )
    text = _StepsPrinter().doprint(e)
    return re.sub(r"colsum\((\w+)\)", r"\1.sum(axis=0)", text)


# -- judging ---------------------------------------------------------------------------------


@dataclass
class LineVerdict:
    """The verdict on one step of the learner's file (one or more statements)."""

    lines: tuple[int, ...]
    name: str
    text: str
    status: str  # "right", "right (equivalent)", "right (per-sample scale)", "wrong", "yours"
    grad: str | None = None
    should_be: str | None = None
    slip: str | None = None
    fix: str | None = None
    problem: str | None = None
    counterexample: str | None = None

    @property
    def where(self) -> str:
        a, b = self.lines[0], self.lines[-1]
        return f"line {a}" if a == b else f"lines {a}-{b}"


@dataclass
class StepsReport:
    """The verdict on a whole backward pass; ``format()`` explains it."""

    file: str
    verdicts: list[LineVerdict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(v.status == "wrong" for v in self.verdicts)

    @property
    def first_wrong(self) -> LineVerdict | None:
        return next((v for v in self.verdicts if v.status == "wrong"), None)

    def format(self) -> str:
        out = [f"{self.file}: your backward pass, step by step (batched, rows are samples)"]
        first = self.first_wrong
        for v in self.verdicts:
            label = {"yours": "your intermediate (not checked)"}.get(v.status, v.status)
            if v.status == "wrong" and v is not first:
                label = "wrong too (checked with the right values before it)"
            out.append(f"  {v.where:<11} {v.text}")
            out.append(
                f"  {'':<11} -> {label}" + (f": {v.grad}" if v.grad and v.grad != v.name else "")
            )
            if v.status == "wrong":
                if v.problem:
                    out.append(f"  {'':<11}    {v.problem}")
                if v.should_be:
                    out.append(f"  {'':<11}    should be: {v.grad} = {v.should_be}")
                if v.slip:
                    out.append(f"  {'':<11}    likely slip: {v.slip}")
                if v.fix:
                    out.append(f"  {'':<11}    with that fixed: {v.fix}")
                if v.counterexample:
                    out.append(f"  {'':<11}    counterexample: {v.counterexample}")
        if self.missing:
            out.append(f"  not computed in your file: {', '.join(self.missing)}")
        if first is None:
            n = sum(v.status.startswith("right") for v in self.verdicts)
            out.append(f"OK: all {n} checked steps are right")
        else:
            out.append(f"WRONG: {first.where} ({first.name}) is the first wrong step")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.format()

    def _repr_markdown_(self) -> str:
        """The notebook display: the report as a code block."""
        return f"```\n{self.format()}\n```\n"


def _same(got: Any, want: np.ndarray) -> str | None:
    """ "exact" if got equals want, "keepdims" if only its shape differs (a kept axis),
    None otherwise."""
    g = np.asarray(got, dtype=float)
    if g.shape != want.shape:
        if g.size == want.size and g.squeeze().shape == want.squeeze().shape:
            g = g.reshape(want.shape)
            tag = "keepdims"
        else:
            return None
    else:
        tag = "exact"
    scale = max(float(np.max(np.abs(want), initial=0.0)), 1e-300)
    with np.errstate(invalid="ignore"):
        diff = np.abs(g - want)
    if not np.all(np.isfinite(diff)) or float(np.max(diff, initial=0.0)) > RTOL * scale + ATOL:
        return None
    return tag


def _run(stmts: list[Statement], env: dict[str, Any]) -> Any:
    """Run a group of statements (one target) in ``env``; returns the target's value.

    Raises:
        KeyError: a name that is not defined.
        _Shape: anything else NumPy objects to (shapes, types): the learner's mistake.
    """
    for s in stmts:
        try:
            with np.errstate(all="ignore"):
                value = _eval(s.expr, env)
                if s.op != "=":
                    value = _binary(s.op[0], env[s.target], value)
        except (KeyError, _Shape):
            raise
        except (ValueError, TypeError, IndexError, ArithmeticError) as exc:
            reason = " ".join(str(exc).split())[:120] or type(exc).__name__
            raise _Shape(f"line {s.line}: {reason}") from None
        env[s.target] = value
    return env[stmts[-1].target]


def check_steps(net: Network, text: str, *, file: str = "<steps>", seed: int = 0) -> StepsReport:
    """Check a whole hand-written backward pass (see the module docstring).

    Raises:
        SpecError: the file cannot be read, or it reads a name that is not defined.
    """
    from symgrad.verify.check import _derivation

    stmts = parse_steps(text, file=file)
    net, d = _derivation(net, seed)
    by_alias: dict[str, Any] = {}
    for step in d.steps:  # symgrad's own names first: dA2 of a parameter A2 beats da2's alias
        by_alias[step.grad] = step
    for step in d.steps:
        for a in _aliases(step.grad, step.wrt, step.kind):
            by_alias.setdefault(a, step)
    key = (id(d), seed)
    if key not in _POINTS or _POINTS[key][0] is not d:
        if len(_POINTS) >= 8:
            _POINTS.pop(next(iter(_POINTS)))
        _POINTS[key] = (d, _points(net, d, seed))
    points = _POINTS[key][1]
    envs = [dict(p.env) for p in points]
    groups: list[list[Statement]] = []
    for s in stmts:  # consecutive statements with one target are one step
        if groups and groups[-1][-1].target == s.target and s.op != "=":
            groups[-1].append(s)
        else:
            groups.append([s])
    report = StepsReport(file)
    yours: dict[str, str] = {}  # symgrad's name of a gradient -> the learner's (delta1 -> dz1)
    scales: dict[str, float] = {}  # adjoint -> the scale the learner uses (1, or N: no 1/N)
    for group in groups:
        name = group[0].target
        st: Any = by_alias.get(name)
        shown = "; ".join(s.text for s in group)
        lines = tuple(s.line for s in group)
        before = [dict(e) for e in envs]
        try:
            gots = [_run(group, env) for env in envs]
        except KeyError as exc:
            missing = exc.args[0]
            raise SpecError(
                f"line {group[0].line}: {missing!r} is not defined (known: forward values "
                f"x, y, z1, a1 ..., parameters, N, and your earlier assignments)",
                file=file,
            ) from None
        except _Shape as exc:
            if st is None:
                report.verdicts.append(
                    LineVerdict(
                        lines, name, shown, "wrong", problem=f"the shapes do not fit: {exc}"
                    )
                )
                for env, b in zip(envs, before, strict=True):
                    env.pop(name, None)
                    env.update({k: v for k, v in b.items() if k == name})
                continue
            gots = None
            shape_problem = str(exc)
        if st is None:
            report.verdicts.append(LineVerdict(lines, name, shown, "yours"))
            continue
        yours.setdefault(st.grad, name)
        wants = [p.targets[st.grad] for p in points]
        verdict = LineVerdict(lines, name, shown, "wrong", grad=st.grad)
        if gots is not None:
            tags = [_same(g, w) for g, w in zip(gots, wants, strict=True)]
            tags_n = (
                [_same(g, w * BATCH) for g, w in zip(gots, wants, strict=True)]
                if st.kind != "param"
                else [None]
            )
            if all(tags):
                verdict.status = "right" if _plain(group, st) else "right (equivalent)"
                if "keepdims" in tags:
                    verdict.status = "right (equivalent: the same values, with a kept axis)"
            if all(tags):
                scales[name] = 1.0
            elif all(tags_n):
                verdict.status = "right (per-sample scale: without the 1/N of the batch mean)"
                scales[name] = float(BATCH)
        if verdict.status == "wrong":
            verdict.should_be = _in_your_names(_should_be(st), yours)
            if gots is None:
                verdict.problem = f"the shapes do not fit: {shape_problem}"
            else:
                verdict.problem = _shape_note(gots[0], wants[0], st.grad)
                verdict.counterexample = _counterexample(gots, wants)
            verdict.slip, verdict.fix = _diagnose(group, before, wants, st, net, by_alias)
            # Later lines are checked with the right value of this one, at the scale the
            # learner seems to use (an adjoint with or without the batch's 1/N).
            # The scale of the adjoints it reads decides; failing those, its magnitude.
            factor = 1.0
            read = [scales[n] for s in group for n in _names(s.expr) if n in scales]
            if st.kind != "param" and read:
                factor = max(read)
            elif st.kind != "param" and gots is not None and _per_sample_scale(gots, wants):
                factor = float(BATCH)
            scales[name] = factor
            for env, want in zip(envs, wants, strict=True):
                env[name] = want * factor
        report.verdicts.append(verdict)
    done = {v.grad for v in report.verdicts if v.grad}
    report.missing = [s.grad for s in d.steps if s.kind == "param" and s.grad not in done]
    return report


def _in_your_names(text: str, yours: Mapping[str, str]) -> str:
    """symgrad's formula with the learner's names for the gradients (``delta1`` -> ``dz1``)."""
    for grad, name in yours.items():
        if grad != name:
            text = re.sub(rf"\b{re.escape(grad)}\b", name, text)
    return text


def _per_sample_scale(gots: list[Any], wants: list[np.ndarray]) -> bool:
    """Whether the learner's (wrong) adjoint is nearer N x the right one than the right one."""
    g = float(np.linalg.norm(np.asarray(gots[0], dtype=float)))
    w = float(np.linalg.norm(wants[0]))
    if not (np.isfinite(g) and g > 0 and w > 0):
        return False
    return abs(np.log(g / (w * BATCH))) < abs(np.log(g / w))


def _rename(e: Any, old: str, new: str) -> Any:
    """``e`` with every use of the name ``old`` replaced by ``new``."""
    if isinstance(e, tuple):
        if e[:2] == ("name", old):
            return ("name", new)
        return tuple(_rename(c, old, new) for c in e)
    return e


def _plain(group: list[Statement], st) -> bool:
    """Whether the learner wrote it as symgrad's batched formula does (up to spaces)."""
    # X and x, A1 and a1 name the same batch: compare without case
    mine = "".join(group[0].text.split("=", 1)[1].split()).lower()
    return len(group) == 1 and mine == "".join(_should_be(st).split()).lower()


def _shape_note(got: Any, want: np.ndarray, grad: str) -> str | None:
    g = np.shape(got)
    if g == want.shape or np.size(got) == want.size:
        return None
    have = "is a number" if not g else f"has shape {_shape_text(got)}"
    return f"yours {have}; {grad} has shape {_shape_text(want)}"


def _counterexample(gots: list[Any], wants: list[np.ndarray]) -> str | None:
    for k, (g, w) in enumerate(zip(gots, wants, strict=True), start=1):
        g = np.asarray(g, dtype=float)
        if g.shape != w.shape:
            if g.size != w.size:
                continue
            g = g.reshape(w.shape)
        with np.errstate(invalid="ignore"):
            diff = np.abs(g - w)
        diff = np.where(np.isfinite(diff), diff, np.inf)
        if diff.size and float(diff.max()) > 0:
            pos = np.unravel_index(int(np.argmax(diff)), w.shape)
            at = ", ".join(map(str, pos))
            return f"random batch {k}, entry [{at}]: yours = {g[pos]:.8g}, right = {w[pos]:.8g}"
    return None


# -- naming the slip: try the classic mistakes on the learner's own line ---------------------


def _variants(e: tuple, names: Mapping[str, list[tuple[str, str]]]) -> Iterator[tuple[tuple, str]]:
    """Single edits of the tree, each with the slip it would undo."""
    kind = e[0]
    if kind == "T":
        yield e[1], f"a transpose: {unparse(e)} should be {unparse(e[1])}"
    if kind == "name" and e[1] in names:
        for other, why in names[e[1]]:
            yield ("name", other), why
    if kind == "name":
        yield ("T", e), f"a missing transpose: {e[1]} should be {e[1]}.T"
    if kind == "bin" and e[1] == "@":
        for v in (("bin", "@", _t(e[2]), _t(e[3])), ("bin", "@", _t(e[3]), _t(e[2]))):
            yield v, f"transposes in the product: {unparse(e)} should be {unparse(v)}"
        yield (
            ("bin", "@", e[3], e[2]),
            (
                f"the order of the matrix product: {unparse(e)} should be "
                f"{unparse(('bin', '@', e[3], e[2]))}"
            ),
        )
        yield ("T", ("bin", "@", e[3], e[2])), "the product is transposed"
    if kind == "bin" and e[1] == "*":
        yield e[2], f"an extra factor {unparse(e[3])}"
        yield e[3], f"an extra factor {unparse(e[2])}"
    if kind == "bin" and e[1] in ("+", "-"):
        flip = "-" if e[1] == "+" else "+"
        yield ("bin", flip, e[2], e[3]), f"a sign: {e[1]} should be {flip}"
        yield ("bin", e[1], e[3], e[2]), f"the order of a difference: {unparse(e)} is reversed"
    if kind == "reduce":
        axis = e[3].get("axis")
        if axis is None:
            yield (
                ("reduce", e[1], e[2], {**e[3], "axis": 0}),
                ("a sum over everything: sum over the samples only, with axis=0"),
            )
        else:
            kw = {**e[3], "axis": 1 - axis if axis in (0, 1) else 0}
            yield (
                ("reduce", e[1], e[2], kw),
                (f"the wrong axis: sum over the samples with axis={kw['axis']}"),
            )
        if e[1] == "mean":
            yield ("reduce", "sum", e[2], e[3]), "mean where a sum belongs (an extra 1/N)"
    for k, child in enumerate(e):
        if isinstance(child, tuple) and child and isinstance(child[0], str):
            for v, why in _variants(child, names):
                yield (*e[:k], v, *e[k + 1 :]), why
        elif isinstance(child, tuple) and child and isinstance(child[0], tuple):
            for j, arg in enumerate(child):
                for v, why in _variants(arg, names):
                    args = (*child[:j], v, *child[j + 1 :])
                    yield (*e[:k], args, *e[k + 1 :]), why


def _t(e: tuple) -> tuple:
    """``e.T``, with a double transpose cancelled."""
    return e[1] if e[0] == "T" else ("T", e)


def _swaps(net: Network, env: Mapping[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """For each forward name, the names a slip may have put in its place."""
    out: dict[str, list[tuple[str, str]]] = {}
    pairs = [(s.name, str(s.inp)) for s in net.stages if s.kind == "elementwise"]
    for a, z in pairs:
        for case in (str.lower, str.upper):
            A, Z = case(a), case(z)
            out.setdefault(Z, []).append((A, f"{Z} where {A} = f({Z}) belongs (z for a)"))
            out.setdefault(A, []).append((Z, f"{A} where {Z} belongs (a for z)"))
    forward = [str(net.input), *(s.name for s in net.stages)]
    params = {p.name for p in net.params}
    for name in forward:
        for other in forward:
            if other != name and np.shape(env.get(name, 0.0)) == np.shape(env.get(other, 0.0)):
                for case in (str.lower, str.upper):
                    used, right = case(name), case(other)
                    if used in params or right in params:  # bilinear's A2 is no batch of a2
                        continue
                    out.setdefault(used, []).append(
                        (right, f"the wrong layer's value: {used} where {right} belongs")
                    )
    out.setdefault("Y", []).append(("yhat", "Y where yhat belongs"))
    out.setdefault("y", []).append(("yhat", "y where yhat belongs"))
    return out


def _diagnose(group, before, wants, st, net: Network, by_alias) -> tuple[str | None, str | None]:
    """(the likely slip, the corrected line) for a wrong step, or a factor description."""

    def right(new_group) -> bool:
        try:
            for env, want in zip(before, wants, strict=True):
                got = _run(new_group, dict(env))
                if _same(got, want) is None and (
                    st.kind == "param" or _same(got, want * BATCH) is None
                ):
                    return False
        except (_Shape, KeyError, ValueError, TypeError, ZeroDivisionError):
            return False
        return True

    def fixed(new_group) -> str:
        return "; ".join(f"{s.target} {s.op} {unparse(s.expr)}" for s in new_group)

    gots = []
    for env in before:
        try:
            gots.append(np.asarray(_run(group, dict(env)), dtype=float))
        except (_Shape, KeyError):
            gots = []
            break
    # a constant factor: 1/N, sign, or some other number
    if gots and all(g.shape == w.shape for g, w in zip(gots, wants, strict=True)):
        c = _factor(gots, wants)
        if c is not None:
            word = _factor_slip(c, st, net)
            if word:
                return word, None
        # a missing or doubled activation-derivative factor (a Hadamard factor)
        hint = _hadamard(gots, wants, st, net, before, alternatives=False)
        if hint:
            return hint, None
    swaps = _swaps(net, before[0])
    top = group[0].expr
    if len(group) == 1 and top[0] == "bin" and top[1] == "@":
        for variant, why in _variants(top, {}):
            if why.startswith("transposes in the product"):
                new = [Statement(group[0].line, group[0].target, "=", variant, group[0].text)]
                if right(new):
                    return why, fixed(new)
    whole = [Statement(s.line, s.target, s.op, ("T", s.expr), s.text) for s in group]
    if len(group) == 1 and right(whole):
        return f"a transpose: yours is the transpose of {st.grad}", fixed(whole)
    used = {n for s in group for n in _names(s.expr)}
    for old in sorted(used):  # a name swapped everywhere in the step (z1*(1 - z1))
        for other, why in swaps.get(old, []):
            new = [
                Statement(s.line, s.target, s.op, _rename(s.expr, old, other), s.text)
                for s in group
            ]
            if right(new):
                return why, fixed(new)
    for k, s in enumerate(group):
        for variant, why in _variants(s.expr, swaps):
            new = [*group[:k], Statement(s.line, s.target, s.op, variant, s.text), *group[k + 1 :]]
            if right(new):
                return why, fixed(new)
    if gots and all(g.shape == w.shape for g, w in zip(gots, wants, strict=True)):
        hint = _hadamard(gots, wants, st, net, before, alternatives=True)
        if hint:
            return hint, None
    return None, None


def _names(e: Any) -> set[str]:
    if isinstance(e, tuple):
        if e and e[0] == "name":
            return {e[1]}
        return set().union(*(_names(c) for c in e)) if e else set()
    return set()


def _factor(gots: list[np.ndarray], wants: list[np.ndarray]) -> float | None:
    ratios = []
    for g, w in zip(gots, wants, strict=True):
        scale = max(float(np.max(np.abs(w), initial=0.0)), 1e-300)
        mask = np.abs(w) > 1e-9 * scale
        if not mask.any() or not np.all(np.isfinite(g)) or np.any(np.abs(g[~mask]) > 1e-9 * scale):
            return None
        ratios.append(g[mask] / w[mask])
    r = np.concatenate(ratios)
    c = float(np.median(r))
    if c == 0 or not np.allclose(r, c, rtol=1e-7, atol=0):
        return None
    return c


def _factor_slip(c: float, st, net: Network) -> str | None:
    widths = {int(v): str(k) for k, v in net.sizes.items()}
    adjoint = st.kind != "param"
    if np.isclose(c, -1.0) or (adjoint and np.isclose(c, -BATCH)):
        return f"the sign: yours is -1 times {st.grad}"
    if st.kind == "param" and np.isclose(c, BATCH):
        return "a missing 1/N: the loss is the mean over the batch, so divide by N"
    if np.isclose(c, 1.0 / BATCH) or (adjoint and np.isclose(c, 1.0 / BATCH**2)):
        return "1/N twice: divide by N once (in the loss gradient or in the sums, not both)"
    for cc in (c, c / BATCH) if adjoint else (c,):
        r = round(cc)
        if abs(cc - r) < 1e-9 and r > 1 and r in widths:
            return f"a missing 1/{widths[r]}: the loss is the mean over the {r} outputs too"
        inv = 1 / cc
        if abs(inv - round(inv)) < 1e-9 and round(inv) in widths and round(inv) > 1:
            return f"1/{widths[round(inv)]} once too often"
        if np.isclose(cc, 2.0):
            return "a factor 2 too many"
        if np.isclose(cc, 0.5):
            return "a missing factor 2 (the derivative of the square)"
    return f"a constant factor: yours is {c:.6g} times {st.grad}"


def _hadamard(gots, wants, st, net: Network, before, *, alternatives: bool) -> str | None:
    """Is the learner's value the right one with an activation-derivative factor missing,
    doubled or replaced by another?"""
    from symgrad.verify.check import _local_target, formula_text
    from symgrad.verify.evaluation import eval_component

    if len(wants[0].shape) != 2 or wants[0].shape[0] != BATCH or st.kind == "param":
        return None  # an activation's derivative multiplies adjoints (rows are samples)
    found = None
    for s in net.stages:
        if s.kind != "elementwise" or net.size(s.width) != wants[0].shape[1]:
            continue
        local = _local_target(net, f"d{s.name}/d{s.inp}", s.name, str(s.inp))
        if len(local.free) != 1:
            continue
        shown = formula_text(local.expr).replace("[i]", "")
        facs = []
        for env in before:
            rows = [
                eval_component(
                    local.expr,
                    {
                        k: (v[r] if np.ndim(v) == 2 and np.shape(v)[0] == BATCH else v)
                        for k, v in env.items()
                    },
                    dict(net.sizes),
                    local.free,
                    local.ranges,
                )
                for r in range(BATCH)
            ]
            facs.append(np.stack(rows))
        for scale in (1.0, float(BATCH)) if not alternatives else ():
            if all(_same(g * f, w * scale) for g, f, w in zip(gots, facs, wants, strict=True)):
                return (
                    f"a missing Hadamard factor: the activation's derivative "
                    f"d{s.name}/d{s.inp} = {shown} (elementwise *)"
                )
            if all(_same(g, w * f * scale) for g, f, w in zip(gots, facs, wants, strict=True)):
                return f"an extra factor d{s.name}/d{s.inp} = {shown}: it is applied twice"
        if not alternatives:
            continue
        # another activation's derivative in its place
        zs = [env[str(s.inp)] for env in before]
        As = [env[s.name] for env in before]
        options = {
            f"{s.name}*(1 - {s.name})": [a * (1 - a) for a in As],
            f"1 - {s.name}**2": [1 - a**2 for a in As],
            f"({s.inp} > 0)": [(z > 0).astype(float) for z in zs],
            f"{s.inp}*(1 - {s.inp})": [z * (1 - z) for z in zs],
            f"1 - {s.inp}**2": [1 - z**2 for z in zs],
        }
        for text, alt in options.items():
            if "".join(text.split()) == "".join(shown.split()):
                continue
            ok = True
            for g, w, f, fa in zip(gots, wants, facs, alt, strict=True):
                with np.errstate(all="ignore"):
                    cand = w / f * fa
                if not np.all(np.isfinite(cand)) or not (
                    _same(g, cand) or (st.kind != "param" and _same(g, cand * BATCH))
                ):
                    ok = False
                    break
            if ok:
                found = (
                    f"the wrong activation derivative: you multiplied by {text} where "
                    f"d{s.name}/d{s.inp} = {shown} belongs"
                )
                return found
    return found


__all__ = ["LineVerdict", "Statement", "StepsReport", "check_steps", "parse_steps", "unparse"]
