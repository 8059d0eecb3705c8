"""Reading a steps file: its lines, helpers and assignments.

The file is never executed. Assignments ``NAME = EXPR`` (and ``+=`` ...) in the NumPy
subset become :class:`LearnerLine` trees of tuples (each expression read by
:mod:`~symgrad.learn.steps.expression`); :func:`unparse` prints a tree back.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from symgrad.learn.steps.expression import StepsInputError, _Parser, line_tokens

MAX_CHARS = 20_000
MAX_LINES = 200


# -- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LearnerLine:
    """One assignment: ``target op= expr`` read from ``line`` (1-based) of the file."""

    line: int
    target: str
    op: str  # "=", "+=", "-=", "*=", "/=", "@="
    expr: tuple
    text: str
    index: tuple | None = None  # d[range(n), Yb] = ...: the subscripts assigned to


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


#: What stays outside the subset, with what to write instead (the first word of a line).
_OUTSIDE = {
    "for": "loops are not read: unroll the loop (one line per layer or per step)",
    "while": "loops are not read: unroll the loop (one line per layer or per step)",
    "if": "conditions are not read: write the branch that applies, or np.where(c, a, b)",
    "class": "classes are not read: write the backward pass as plain assignments",
    "with": "'with' blocks are not read: write plain assignments",
    "lambda": "lambdas are not read: define a helper with def NAME(ARG): return EXPRESSION",
    "import": "only 'import numpy as np' is read",
    "from": "only 'import numpy as np' is read",
    "print": "print() is not read: remove it (symgrad shows every value it checks)",
    "assert": "assert is not read: remove it",
}
_NAME = r"[A-Za-z_]\w*"
_DEF = re.compile(rf"def\s+({_NAME})\s*\(\s*({_NAME}(?:\s*,\s*{_NAME})*)?\s*\)\s*:(.*)")


def parse_steps(text: str, *, file: str | None = None) -> list[LearnerLine]:
    """Read a steps file (never executing it).

    Raises:
        StepsInputError: anything that is not an assignment in the NumPy subset.
    """
    text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark, as some editors save
    if len(text) > MAX_CHARS:
        raise StepsInputError(f"file is too long (at most {MAX_CHARS} characters)", file=file)
    out: list[LearnerLine] = []
    helpers: dict[str, tuple[str, ...]] = {}
    lines = list(_logical_lines(text))
    k = 0
    while k < len(lines):
        n, line = lines[k]
        k += 1
        where = f"line {n}"
        if line in ("import numpy as np", "import numpy") or _docstring(line):
            continue
        if len(out) >= MAX_LINES:
            raise StepsInputError(f"more than {MAX_LINES} statements", file=file)
        if line.startswith("def "):
            body = _DEF.fullmatch(line)
            rest = body.group(3).strip() if body else ""
            while body and not rest and k < len(lines):
                rest = "" if _docstring(lines[k][1]) else lines[k][1]
                k += 1
            if body is None or not rest.startswith("return "):
                raise StepsInputError(
                    f"{where}: a helper is one line, def NAME(ARG): return EXPRESSION",
                    file=file,
                )
            params = tuple(a.strip() for a in (body.group(2) or "").split(",") if a.strip())
            toks = line_tokens(rest[len("return ") :], file, where)
            expr = _Parser(toks, file, where, helpers).parse()
            helpers[body.group(1)] = params
            out.append(LearnerLine(n, body.group(1), "def", ("def", params, expr), line))
            continue
        out.append(_assignment(n, line, file, helpers))
    if not any(s.op != "def" for s in out):
        raise StepsInputError("no assignments found", file=file)
    return out


def _docstring(line: str) -> bool:
    return len(line) >= 6 and line[:3] in ('"""', "'''") and line.endswith(line[:3])


def _assignment(n: int, line: str, file: str | None, helpers: Mapping) -> LearnerLine:
    """``NAME op= EXPR`` or ``NAME[subscripts] op= EXPR`` read from logical line ``n``."""
    where = f"line {n}"
    word = re.match(r"[A-Za-z_]\w*", line)
    if word and word.group() in _OUTSIDE and not re.match(r"\w+\s*[-+*/@]?=[^=]", line):
        raise StepsInputError(f"{where}: {_OUTSIDE[word.group()]}", file=file)
    toks = line_tokens(line, file, where)
    index: tuple | None = None
    at = 1
    if len(toks) > 2 and toks[0].kind == "name" and toks[1].text == "[":
        parser = _Parser(toks[2:], file, where, helpers)
        index = parser.subscripts()
        at = 2 + parser.pos
    if len(toks) < at + 2 or toks[0].kind != "name" or toks[at].text not in _ASSIGN:
        if "," in line.split("=", 1)[0]:
            raise StepsInputError(
                f"{where}: assign one name per line (a, b = ... is not read)", file=file
            )
        raise StepsInputError(
            f"{where}: expected an assignment NAME = EXPRESSION, got {line[:40]!r}",
            file=file,
        )
    expr = _Parser(toks[at + 1 :], file, where, helpers).parse()
    return LearnerLine(n, toks[0].text, toks[at].text, expr, line, index)


_ASSIGN = ("=", "+=", "-=", "*=", "/=", "@=")
