"""A printed statement: what every backend's printer produces and its template formats."""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"\b[A-Za-z_]\w*\b")


@dataclass(frozen=True)
class Statement:
    """One printed assignment ``target = code`` with the formula it computes."""

    target: str
    code: str
    comment: tuple[str, ...] = ()
    inplace: tuple[str, ...] = ()  # follow-up in-place updates: "*= a1", "+= b1"
    uses: frozenset[str] = frozenset()  # the variables the statement reads


def reads(stmts: list[Statement]) -> set[str]:
    """Every name the statements read (their ``uses`` and the names in their printed code)."""
    out: set[str] = set()
    for st in stmts:
        out |= st.uses | set(_NAME.findall(" ".join((st.code, *st.inplace))))
    return out


def dead_code(stmts: list[Statement], outputs: set[str]) -> list[Statement]:
    """Drop statements whose value nothing reads (a program shared between passes, e.g. a
    loss-gradient step that the tangent program only needs the tangent of)."""
    live = set(outputs)
    kept: list[Statement] = []
    for st in reversed(stmts):
        if st.target in live:
            kept.append(st)
            # The printed code, not only ``uses``: split statements read their own temporaries.
            live |= st.uses | set(_NAME.findall(" ".join((st.code, *st.inplace))))
    return kept[::-1]
