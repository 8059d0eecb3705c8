"""The document model: what a derivation document is made of, independent of its format.

A document is a list of :class:`Section`\\ s; a section holds :class:`Item`\\ s (paragraphs,
lead-ins, displays, numbered lists); a paragraph is a sequence of prose strings, :class:`T`
(prose with a plain-text alternative) and :class:`M` (a piece of math in its LaTeX and plain
text renderings). ``documents/layout.py`` prints the model for one format.

An :class:`M` made from an expression prints lazily and once: a text document never runs
the LaTeX printer, and an expression shown twice (the step and the summary) is printed once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import sympy as sp


class M:
    """One piece of math in its two renderings (LaTeX, plain text).

    Either string may be given as a function that makes it; it is called at most once.
    ``key`` identifies the math independently of its rendering (an expression and its
    notation), so that equal sides are recognised without printing them.
    """

    __slots__ = ("_tex", "_txt", "key")

    def __init__(
        self,
        tex: str | Callable[[], str],
        txt: str | Callable[[], str],
        key: object = None,
    ) -> None:
        self._tex = tex
        self._txt = txt
        self.key = key

    @property
    def tex(self) -> str:
        if not isinstance(self._tex, str):
            self._tex = self._tex()
        return self._tex

    @property
    def txt(self) -> str:
        if not isinstance(self._txt, str):
            self._txt = self._txt()
        return self._txt

    def same(self, other: M) -> bool:
        """Whether the two show the same math: by key when both have one, by their LaTeX
        when neither has (a name written out is never taken for a printed expression, so
        a text document never prints LaTeX to compare)."""
        if self.key is not None and other.key is not None:
            return bool(self.key == other.key)
        if self.key is None and other.key is None:
            return self.tex == other.tex
        return False

    def __repr__(self) -> str:
        return f"M({self.txt!r})"


@dataclass(frozen=True)
class Eq:
    """``sides[0] = sides[1] = ...``."""

    sides: tuple[M, ...]


@dataclass(frozen=True)
class T:
    """Prose with a plain-text alternative (``rich`` for LaTeX/Markdown, ``plain`` for text)."""

    rich: str
    plain: str


@dataclass(frozen=True)
class Code:
    """A command or a piece of code in the prose: ``\texttt`` in LaTeX, a code span in
    Markdown and HTML, between backticks in text."""

    text: str


Part = str | M | T | Code


@dataclass
class Item:
    """A paragraph (``para``), an emphasised lead-in (``label``), a display (``math``) or a
    numbered list (``list``)."""

    kind: str
    parts: tuple[Part, ...] = ()
    eqs: tuple[Eq, ...] = ()
    entries: tuple[tuple[Part, ...], ...] = ()


@dataclass
class Section:
    title: tuple[Part, ...]
    level: int
    items: list[Item] = field(default_factory=list)
    anchor: str = ""  # an id for links (the HTML page links code lines to steps)
    boxed: bool = False  # set off in a frame (the per-sample summary)


@dataclass(frozen=True)
class RenderedItem:
    kind: str
    text: str


@dataclass(frozen=True)
class RenderedSection:
    title: str
    level: int
    items: tuple[RenderedItem, ...]
    anchor: str = ""
    boxed: bool = False


def dedupe(sides: list[M]) -> list[M]:
    """The sides of an equation without a side equal to the one before it (no ``x = x``)."""
    out: list[M] = []
    for s in sides:
        if not out or not out[-1].same(s):
            out.append(s)
    return out


def expr_key(e: sp.Basic, notation: str, yhat: bool) -> tuple[sp.Basic, str, bool]:
    return (e, notation, yhat)


__all__ = [
    "Eq",
    "Item",
    "M",
    "Part",
    "RenderedItem",
    "RenderedSection",
    "Section",
    "T",
    "dedupe",
    "expr_key",
]
