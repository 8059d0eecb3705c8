"""The one tokenizer of every expression symgrad reads, with a dialect per kind of text.

Three kinds of text are read, never executed: spec expressions (and ``check --formula``
component formulas), ``check`` formulas in matrix notation and ``check --steps`` NumPy
files. They share one lexical core -- numbers, ASCII names, operators -- and differ in
which operators and literals a dialect admits:

============  =====================================================================
dialect       admits
============  =====================================================================
``SPEC``      ``+ - * / **``, ``( ) [ ] ,`` (no ``.``, no strings, no ``@``)
``FORMULA``   the above and ``> < >= <=`` (component formulas: ``(z1[i] > 0)``)
``MATRIX``    the above and ``@ ⊙ ^T .T > < >= <=``
``NUMPY``     the above (not ``^T``/``.T``: ``.`` is attribute access) and ``== ... : =``,
              ``+= -= *= /= @=``, quoted einsum subscripts (``"ij,ij->i"``)
============  =====================================================================

Each token is ``(kind, text, pos)`` with kind ``"num"``, ``"name"``, ``"op"``, ``"str"``
(NUMPY only) or ``"end"`` (the last token). Bounded: at most ``dialect.max_tokens``
tokens. A character outside the dialect is reported through the caller's ``fail`` with
a one-line message that the dialect words (the caller adds the file and field).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, NoReturn

NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
NAME = r"[A-Za-z_][A-Za-z0-9_]*"
#: einsum's subscripts, the only string a NumPy line may hold
EINSUM_STRING = r"\"[A-Za-z,.>\- ]{0,80}\"|'[A-Za-z,.>\- ]{0,80}'"


class Token(NamedTuple):
    kind: str  # "num", "name", "op", "str" or "end"
    text: str
    pos: int


@dataclass(frozen=True)
class Dialect:
    """What one kind of text admits, and how its lexical errors read.

    Attributes:
        name: the dialect's name (``spec``, ``matrix``, ``numpy``).
        operators: every operator and punctuation token (matched longest first).
        space: the characters skipped between tokens (a regex character class).
        strings: whether quoted einsum subscripts are tokens (kind ``"str"``).
        max_tokens: the most tokens one text may have.
        bad_char: ``(text, position) -> message`` for a character outside the dialect.
        too_many: the message when the text has more than ``max_tokens`` tokens.
    """

    name: str
    operators: tuple[str, ...]
    space: str
    strings: bool
    max_tokens: int
    bad_char: Callable[[str, int], str]
    too_many: str
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ops = "|".join(re.escape(o) for o in sorted(self.operators, key=len, reverse=True))
        strings = rf"|(?P<str>{EINSUM_STRING})" if self.strings else ""
        regex = (
            rf"(?P<ws>[{self.space}]+)|(?P<num>{NUMBER})|(?P<name>{NAME}){strings}|(?P<op>{ops})"
        )
        object.__setattr__(self, "pattern", re.compile(regex))


def tokenize(text: str, fail: Callable[[str], NoReturn], dialect: Dialect) -> list[Token]:
    """``text`` as tokens of ``dialect``, ending with an ``"end"`` token at ``len(text)``.

    Raises whatever ``fail`` raises, with the dialect's message: a character the dialect
    does not admit, or more than ``dialect.max_tokens`` tokens.
    """
    tokens: list[Token] = []
    pos, end, match, limit = 0, len(text), dialect.pattern.match, dialect.max_tokens
    while pos < end:
        m = match(text, pos)
        if m is None:
            fail(dialect.bad_char(text, pos))
        kind = m.lastgroup
        if kind != "ws":
            if len(tokens) >= limit:
                fail(dialect.too_many)
            tokens.append(Token(kind or "op", m.group(), pos))
        pos = m.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


# -- the dialects ---------------------------------------------------------------------------


def _spec_bad_char(text: str, pos: int) -> str:
    ch = text[pos]
    if ch == ".":
        return f"attribute access '.' is not allowed (position {pos})"
    if ch in "'\"":
        return f"string literals are not allowed ({ch!r} at position {pos})"
    return f"unexpected character {ch!r} at position {pos}"


def _formula_bad_char(text: str, pos: int) -> str:
    if text[pos] == "^" and "^T" not in text:
        return "unexpected character '^': write ** for a power, as in tanh(z1[i])**2"
    return _spec_bad_char(text, pos)


def _matrix_bad_char(text: str, pos: int) -> str:
    ch = text[pos]
    hint = " (write ** for a power: tanh(z1)**2; ^T is a transpose)" if ch == "^" else ""
    return f"unexpected character {ch!r} at position {pos}{hint}"


def _numpy_bad_char(text: str, pos: int) -> str:
    return f"unexpected character {text[pos]!r}"


_ARITHMETIC = ("**", "+", "-", "*", "/", "(", ")", "[", "]", ",")
_COMPARE = (">=", "<=", ">", "<")

#: Spec expressions and component formulas: arithmetic, calls, subscripts.
SPEC = Dialect(
    "spec",
    _ARITHMETIC,
    space=r" \t\r\n",
    strings=False,
    max_tokens=1000,
    bad_char=_spec_bad_char,
    too_many="expression has too many tokens (more than 1000)",
)
#: Component formulas (``check --formula``): also comparisons, ``(z1[i] > 0)``.
FORMULA = Dialect(
    "formula",
    (*_ARITHMETIC, *_COMPARE),
    space=SPEC.space,
    strings=False,
    max_tokens=SPEC.max_tokens,
    bad_char=_formula_bad_char,
    too_many=SPEC.too_many,
)
#: Matrix-notation formulas: also ``@``, ``⊙``, the transposes ``^T``/``.T``, comparisons.
MATRIX = Dialect(
    "matrix",
    (*_ARITHMETIC, "@", "⊙", "^T", ".T", *_COMPARE),
    space=r"\s",
    strings=False,
    max_tokens=500,
    bad_char=_matrix_bad_char,
    too_many="formula longer than 500 tokens",
)
#: NumPy lines: also attribute access, slices, keywords, assignments, einsum strings.
NUMPY = Dialect(
    "numpy",
    (*_ARITHMETIC, "@", *_COMPARE, "==", "...", ".", ":", "=", "+=", "-=", "*=", "/=", "@="),
    space=r" \t",
    strings=True,
    max_tokens=400,
    bad_char=_numpy_bad_char,
    too_many="statement too long",
)
