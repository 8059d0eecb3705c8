"""Printing helper: lay out printed Python expressions the way ``ruff format`` does.

SymPy's printers write ``a*b**2``; ruff writes ``a * b**2``. Generated modules must pass
``ruff format --check``, so the code generator re-spaces every printed expression with
this token-level formatter (binary operators spaced, unary minus hugged, ``**`` hugged
only between simple operands, a space after commas) instead of depending on ruff.
"""

from __future__ import annotations

import io
import tokenize

_BINARY = {"+", "-", "*", "/", "//", "%", "@", "<", ">", "<=", ">=", "==", "!=", "=", "|", "&"}
_OPENERS = {"(", "[", "{"}
_CLOSERS = {")", "]", "}"}


def _is_unary(prev: tokenize.TokenInfo | None) -> bool:
    if prev is None:
        return True
    if prev.type == tokenize.OP and (prev.string in _BINARY or prev.string in _OPENERS):
        return True
    return prev.type == tokenize.OP and prev.string in {",", "**", ":"}


def _simple_left(toks: list[str], kinds: list[int]) -> bool:
    """Whether the operand ending the token list is simple (name, number, attribute chain)."""
    if not toks:
        return False
    i = len(toks) - 1
    if kinds[i] not in (tokenize.NAME, tokenize.NUMBER):
        return False
    while i >= 2 and toks[i - 1] == "." and kinds[i - 2] == tokenize.NAME:
        i -= 2
    return True


def _simple_right(tokens: list[tokenize.TokenInfo], j: int) -> bool:
    t = tokens[j]
    if t.type == tokenize.OP and t.string == "-":
        j += 1
        t = tokens[j]
    if t.type not in (tokenize.NAME, tokenize.NUMBER):
        return False
    k = j + 1
    while k + 1 < len(tokens) and tokens[k].string == "." and tokens[k + 1].type == tokenize.NAME:
        k += 2
    return not (k < len(tokens) and tokens[k].string in ("(", "["))


def respace(expr: str) -> str:
    """Re-space one Python expression (no newlines) in ruff's style."""
    raw = [
        t
        for t in tokenize.generate_tokens(io.StringIO(expr).readline)
        if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT)
    ]
    out: list[str] = []
    kinds: list[int] = []
    prev: tokenize.TokenInfo | None = None
    depth = 0

    def emit(text: str, kind: int) -> None:
        out.append(text)
        kinds.append(kind)

    for idx, t in enumerate(raw):
        s = t.string
        if t.type == tokenize.OP and s in _OPENERS:
            depth += 1
        elif t.type == tokenize.OP and s in _CLOSERS:
            depth -= 1
        if t.type == tokenize.OP and s == "**":
            hug = _simple_left(out, kinds) and _simple_right(raw, idx + 1)
            emit("**" if hug else " ** ", tokenize.OP)
        elif t.type == tokenize.OP and s == "=" and depth > 0:
            emit("=", tokenize.OP)
        elif t.type == tokenize.OP and s in _BINARY and not (s in "+-" and _is_unary(prev)):
            emit(f" {s} ", tokenize.OP)
        elif t.type == tokenize.OP and s == ",":
            emit(", ", tokenize.OP)
        else:
            if (
                prev is not None
                and prev.type in (tokenize.NAME, tokenize.NUMBER)
                and t.type in (tokenize.NAME, tokenize.NUMBER)
            ):
                emit(" ", -1)
            emit(s, t.type)
        prev = t
    return "".join(out).strip()
