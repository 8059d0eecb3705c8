"""Component formulas as people write them, rewritten into the spec-expression language.

``check --formula`` reads component formulas with the spec-expression parser, which calls
every op of the registry by name (``relu(z1[i])``, ``step(z1[i])``). People also write an
activation's derivative as a comparison, ``(z1[i] > 0)`` or ``[z1[i] > 0]``, which the
expression language lacks; a comparison is rewritten into allowed functions with the same
values (away from ties): ``(a > b)`` is ``(d + abs(d))/(2 abs(d) + 1e-300)`` with
``d = a - b`` (0 at a tie, as relu' is).
"""

from __future__ import annotations

import re

from symgrad.errors import SpecError

_COMPARE = re.compile(r"(>=|<=|>|<)")


def _close(text: str, start: int) -> int:
    """The index of the bracket closing the one at ``start``."""
    depth = 0
    for k in range(start, len(text)):
        if text[k] in "([":
            depth += 1
        elif text[k] in ")]":
            depth -= 1
            if depth == 0:
                return k
    raise SpecError("unbalanced parentheses", field="--formula")


def _comparisons(text: str) -> str:
    """``(a > b)`` and ``[a > b]`` (not a subscript) as the step of ``a - b``."""
    k = 0
    while k < len(text):
        ch = text[k]
        opens = ch == "(" or (ch == "[" and not re.search(r"[\w\]]\s*$", text[:k]))
        if opens:
            end = _close(text, k)
            inner = _comparisons(text[k + 1 : end])
            parts = _top_level_split(inner)
            if parts is not None:
                a, op, b = parts
                diff = f"({a}) - ({b})" if op in (">", ">=") else f"({b}) - ({a})"
                inner = f"(({diff}) + abs({diff}))/(2*abs({diff}) + 1e-300)"
                text = f"{text[:k]}({inner}){text[end + 1 :]}"
                k += len(inner) + 2
                continue
            text = f"{text[: k + 1]}{inner}{text[end:]}"
        k += 1
    return text


def _top_level_split(inner: str) -> tuple[str, str, str] | None:
    depth = 0
    for k, ch in enumerate(inner):
        depth += ch in "(["
        depth -= ch in ")]"
        if depth == 0:
            m = _COMPARE.match(inner, k)
            if m:
                return inner[:k], m.group(1), inner[m.end() :]
    return None


def rewrite_component(text: str) -> str:
    """``text`` with comparisons rewritten (as the step of their difference)."""
    if not isinstance(text, str):
        return text
    if "^" in text and "^T" not in text:
        raise SpecError(
            "unexpected character '^': write ** for a power, as in tanh(z1[i])**2",
            field="--formula",
        )
    return _comparisons(text) if _COMPARE.search(text) else text
