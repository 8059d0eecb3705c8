"""Printing helper: break long LaTeX equations across lines instead of running off the page.

``visual_width`` estimates how wide typeset math is (fractions stacked, scripts small);
``split_terms`` cuts an expression at its top-level ``+``/``-`` (never inside a group) and
``break_expression`` packs the pieces into lines that fit, descending into the largest
parenthesised group when one term alone is too wide.
"""

from __future__ import annotations

import re
from functools import lru_cache

_TOKEN = re.compile(r"\\[A-Za-z]+|\\.|[{}^_&]|\s+|.", re.S)
_SCRIPT = 0.65
_WIDTHS = {
    r"\quad": 2.0,
    r"\qquad": 4.0,
    r"\,": 0.3,
    r"\;": 0.4,
    r"\!": 0.0,
    r"\odot": 2.0,
    r"\cdot": 1.5,
    r"\top": 0.8,
    r"\sum": 1.6,
    r"\partial": 1.0,
}
_ARG1 = {
    r"\mathbf",
    r"\boldsymbol",
    r"\mathrm",
    r"\operatorname",
    r"\hat",
    r"\mathcal",
    r"\mathbb",
    r"\text",
    r"\textit",
    r"\mathit",
}
#: A ``\\left``/``\\right`` delimiter around a fraction or a root (display style), in glyphs.
_TALL_DELIMITER = 1.0
_ZERO = {r"\left", r"\right", r"\displaystyle", r"\limits", r"\nolimits"}


class _Width:
    """Estimate the printed width of LaTeX math in glyphs (fractions stacked, scripts small)."""

    def __init__(self, tex: str) -> None:
        self.toks = [t for t in _TOKEN.findall(tex)]
        self.pos = 0
        self.tall = 0  # fractions and roots met so far (a stretched delimiter grows round them)

    def _next(self) -> str | None:
        if self.pos >= len(self.toks):
            return None
        t = self.toks[self.pos]
        self.pos += 1
        return t

    def _arg(self) -> float:
        while self.pos < len(self.toks) and self.toks[self.pos].isspace():
            self.pos += 1
        t = self._next()
        if t is None:
            return 0.0
        if t == "{":
            return self.seq(until="}")
        return self._atom(t)

    def _atom(self, t: str) -> float:
        if t.isspace() or t in "&":
            return 0.0
        if t in "+-=<>":
            return 2.2
        if t == "{":
            return self.seq(until="}")
        if t in ("^", "_"):
            return _SCRIPT * self._arg()
        if t.startswith("\\") and len(t) > 1:
            if t in (r"\frac", r"\dfrac", r"\tfrac"):
                self.tall += 1
                return max(self._arg(), self._arg()) + 0.6
            if t == r"\sqrt":
                self.tall += 1
                return self._arg() + 1.2
            if t in _ARG1:
                return self._arg()
            if t == r"\left":
                return self._stretched()
            if t in _ZERO:
                return self._delimiter(self._next(), False)
            return _WIDTHS.get(t, 1.0)
        return 1.0

    @staticmethod
    def _delimiter(d: str | None, tall: bool) -> float:
        """A ``\\left``/``\\right`` delimiter: none for ``.``; wider around tall content."""
        if d is None or d == ".":
            return 0.0
        return _TALL_DELIMITER if tall else 0.6

    def _stretched(self) -> float:
        """``\\left( ... \\right)``: a delimiter grows around fractions and roots (in display
        style a fraction's parentheses are about a glyph wide, not the 0.6 of a plain one)."""
        opening = self._next()
        before = self.tall
        inner = self.seq(until=r"\right")
        closing = self._next()
        tall = self.tall > before
        return self._delimiter(opening, tall) + inner + self._delimiter(closing, tall)

    def seq(self, until: str | None = None) -> float:
        w = 0.0
        while True:
            t = self._next()
            if t is None or t == until:
                return w
            w += self._atom(t)


@lru_cache(maxsize=1 << 16)
def visual_width(tex: str) -> float:
    """An estimate of the width of displayed LaTeX math, in average glyph widths (memoised:
    the layout measures the same sides of equations again while it breaks lines)."""
    return _Width(tex).seq()


def _scan(tex: str) -> list[tuple[int, int]]:
    """(position, depth) of every token, depth counting ``{}``, ``()`` and ``\\left``."""
    out = []
    depth = 0
    pos = 0
    for t in _TOKEN.findall(tex):
        out.append((pos, depth))
        if t in ("{", "(", r"\left"):
            depth += 1
        elif t in ("}", ")", r"\right"):
            depth -= 1
        pos += len(t)
    return out


def split_terms(tex: str) -> list[str]:
    """Split LaTeX at top-level binary ``+``/``-``; later pieces start with the sign."""
    cuts = []
    for pos, depth in _scan(tex):
        binary = depth == 0 and pos > 0 and tex[pos] in "+-" and tex[pos - 1] == " "
        if binary and tex[pos + 1 : pos + 2] == " ":
            prev = tex[:pos].rstrip()
            if prev and prev[-1] not in "=(&{,":
                cuts.append(pos)
    pieces, last = [], 0
    for c in cuts:
        pieces.append(tex[last:c].strip())
        last = c
    pieces.append(tex[last:].strip())
    return [p for p in pieces if p]


#: The ``\\left``/``\\right`` pairs a line may be broken inside.
_PAIRS = {r"\left(": ")", r"\left[": "]"}


def _paren_groups(tex: str) -> list[tuple[int, int, int]]:
    """Top-level parenthesised (or ``\\left[``-bracketed) groups: (start, end, length of
    the opening delimiter)."""
    toks = _TOKEN.findall(tex)
    spans = []
    stack: list[tuple[str, int]] = []
    pos = 0
    n = 0
    while n < len(toks):
        t = toks[n]
        if t == r"\left" and n + 1 < len(toks):
            stack.append((r"\left" + toks[n + 1], pos))
            pos += len(t) + len(toks[n + 1])
            n += 2
            continue
        if t == r"\right" and n + 1 < len(toks):
            end = pos + len(t) + len(toks[n + 1])
            if stack:
                kind, start = stack.pop()
                if not stack and _PAIRS.get(kind) == toks[n + 1]:
                    spans.append((start, end, len(kind)))
            pos = end
            n += 2
            continue
        if t in ("(", "{"):
            stack.append((t, pos))
        elif t in (")", "}") and stack:
            kind, start = stack.pop()
            if not stack and kind == "(" and t == ")":
                spans.append((start, pos + 1, 1))
        pos += len(t)
        n += 1
    return spans


def _pack(pieces: list[str], avail: float) -> list[str]:
    chunks: list[str] = []
    cur = ""
    for p in pieces:
        cand = (cur + " " + p).strip()
        if cur and visual_width(cand) > avail:
            chunks.append(cur)
            cur = p
        else:
            cur = cand
    if cur:
        chunks.append(cur)
    return chunks


def break_expression(tex: str, avail: float, depth: int = 0) -> list[str]:
    """Break one right-hand side into lines no wider than ``avail`` where possible.

    First at top-level ``+``/``-``; a term still too wide is broken inside its widest pair
    of parentheses with ``\\right.``/``\\left.`` so every line balances on its own, and
    so on inwards (a few levels deep).
    """
    if visual_width(tex) <= avail:
        return [tex]
    lines: list[str] = []
    for chunk in _pack(split_terms(tex), avail):
        if visual_width(chunk) <= avail:
            lines.append(chunk)
            continue
        spans = _paren_groups(chunk)
        if not spans:
            lines.append(chunk)
            continue
        a, b, opening = max(spans, key=lambda s: visual_width(chunk[s[0] : s[1]]))
        inner = chunk[a + opening : b - (opening + 1 if opening > 1 else 1)]
        # recursively: a term of the group still too wide is broken inside its own group
        parts = break_expression(inner, avail - 2, depth + 1) if depth < 4 else [inner]
        if len(parts) < 2:
            lines.append(chunk)
            continue
        head, tail = chunk[:a], chunk[b:]
        opened = chunk[a : a + opening] if opening > 1 else r"\left("
        closed = r"\right" + _PAIRS[opened]
        for n, p in enumerate(parts):
            left = head + opened if n == 0 else r"\left."
            right = closed + tail if n == len(parts) - 1 else r"\right."
            lines.append(f"{left} {p} {right}".strip())
    return lines


_SUM_HEAD = re.compile(r"\\sum_\{[^{}]*\}\^\{[^{}]*\}$|\\sum_\{[^{}]*\}$")


def split_factors(tex: str) -> list[str]:
    """Split a product at its top-level spaces (between factors), never right after a sum's
    head (a sum keeps its body) or an operator."""
    cuts = []
    for pos, depth in _scan(tex):
        if depth or not tex[pos].isspace() or pos == 0:
            continue
        prev = tex[:pos].rstrip()
        if not prev or prev[-1] in "=+-(&{," or prev.endswith((r"\odot", r"\cdot")):
            continue
        if _SUM_HEAD.search(prev):
            continue
        cuts.append(pos)
    pieces, last = [], 0
    for c in cuts:
        pieces.append(tex[last:c].strip())
        last = c
    pieces.append(tex[last:].strip())
    return [p for p in pieces if p]


_OPEN = re.compile(r"^\\left[.(]\s*")
_CLOSE = re.compile(r"\s*\\right[.)]$")


def break_products(tex: str, avail: float) -> list[str]:
    """Lines of one unbreakable-by-sum term, cut between the factors of its products. A
    line already broken out of a group (``\\left. ... \\right.``) is cut inside it, each
    line closing and reopening the group so that it balances on its own."""
    head, tail = _OPEN.match(tex), _CLOSE.search(tex)
    if head and tail and head.end() < tail.start():
        inner = tex[head.end() : tail.start()]
        lines = _pack(split_factors(inner), avail - 2)
        if len(lines) > 1:
            opening, closing = head.group(0).strip(), tail.group(0).strip()
            out = []
            for n, line in enumerate(lines):
                left = opening if n == 0 else r"\left."
                right = closing if n == len(lines) - 1 else r"\right."
                out.append(f"{left} {line} {right}")
            return out
    return _pack(split_factors(tex), avail)
