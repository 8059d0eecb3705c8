"""Printing memoised up to the names of quantities: layer 7's formulas are layer 3's renamed.

A deep network's document prints the same few formulas once per layer, differing only in
the names of their quantities (``W3[j, k]*a2[k]``, ``W7[j, k]*a6[k]``). :class:`RenamedPrinter`
prints each shape once, with every renameable atom (an ``IndexedBase``, a width symbol, a named
vector or matrix: :func:`print_key`) printed as a numbered slot, and fills the
slots with the printed names for each expression of that shape.

The printed text may depend on the names in two ways, both part of the memo's key, so
that two expressions share a printed form only where printing them from scratch gives the
same text up to the names:

- the order of terms and factors, which SymPy sorts by name: the key has the order of
  every name in the expression (the renamed ones and the kept index symbols);
- what a name says it is (the printers recognise an adjoint by its name, ``da1``,
  ``delta2``): the key has each renamed name with its digits blanked (``delta#``).

A printer that writes a renamed atom's name without printing the atom (``str(n_3)``
inside a custom node) would leave the first expression's name in the form: such a form
is not memoised (the expression is printed as it is).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from typing import Any

import sympy as sp

from symgrad.calculus.renamed_memo import KEPT_NAMES

_SLOT = "\x00%d\x01"
_SLOTS = re.compile("\x00(\\d+)\x01")
_DIGITS = re.compile(r"\d+")


def _name(atom: sp.Basic) -> str:
    return str(atom.label.name if isinstance(atom, sp.IndexedBase) else atom.name)


def _renameable(e: sp.Basic) -> bool:
    """An array, a width or a named vector or matrix (``Vec``, ``Mat``); not an index."""
    if isinstance(e, sp.IndexedBase):
        return e.label.name not in KEPT_NAMES
    if isinstance(e, sp.Symbol) and not isinstance(e, sp.Dummy):
        return e.name not in KEPT_NAMES and not (e.is_integer and not e.is_positive)
    return False


#: What :func:`print_key` knows of a leaf or an array: its renameable kind (type and
#: assumptions), or None where it is kept as it is (asked once per atom).
_ATOMS: dict[sp.Basic, Hashable | None] = {}


def _atom_info(e: sp.Basic) -> Hashable | None:
    if e not in _ATOMS:
        if len(_ATOMS) > 1 << 14:
            _ATOMS.clear()
        _ATOMS[e] = (type(e), tuple(sorted(e.assumptions0.items()))) if _renameable(e) else None
    return _ATOMS[e]


def print_key(e: sp.Basic) -> tuple[Hashable, tuple[sp.Basic, ...], set[str]]:
    """``e``'s structure up to renaming, its renameable atoms in order of first
    appearance, and the names of the symbols kept as they are."""
    atoms: dict[sp.Basic, int] = {}
    kept: set[str] = set()

    def walk(e: sp.Basic) -> Hashable:
        n = atoms.get(e)
        if n is not None:
            return ("@", n)
        args = e.args
        if not args or isinstance(e, sp.IndexedBase):
            info = _atom_info(e)
            if info is not None:
                atoms[e] = n = len(atoms)
                return ("@", n, info, *[walk(a) for a in args[1:]])
            if not args:
                if isinstance(e, sp.Symbol):
                    kept.add(e.name)
                return (type(e), e)
        return (e.func, *[walk(a) for a in args])

    return walk(e), tuple(atoms), kept


class RenamedPrinter:
    """``printer.doprint`` memoised up to the names of quantities (see the module)."""

    def __init__(self, printer: Any) -> None:
        self._printer = printer
        self._slots: dict[sp.Basic, int] = {}
        self._forms: dict[Hashable, str | None] = {}
        plain: Callable[..., str] = printer._print

        def slotted(expr: Any, **kwargs: Any) -> str:
            if self._slots and isinstance(expr, sp.Basic):
                n = self._slots.get(expr)
                if n is not None:
                    return _SLOT % n
            return plain(expr, **kwargs)

        printer._print = slotted

    def __call__(self, e: sp.Basic) -> str:
        if not e.args:
            return str(self._printer.doprint(e))
        structure, atoms, kept = print_key(e)
        if not atoms:
            return str(self._printer.doprint(e))
        names = [_name(a) for a in atoms]
        every = names + sorted(kept - set(names))
        order = tuple(sorted(range(len(every)), key=every.__getitem__))
        key = (structure, tuple(_DIGITS.sub("#", n) for n in names), order)
        if key not in self._forms:
            self._forms[key] = self._form(e, atoms, names)
        form = self._forms[key]
        if form is None:
            return str(self._printer.doprint(e))
        return _SLOTS.sub(lambda m: names[int(m.group(1))], form)

    def _form(self, e: sp.Basic, atoms: tuple[sp.Basic, ...], names: list[str]) -> str | None:
        """``e`` printed with its atoms as slots, or None where a name was written
        without its atom being printed."""
        self._slots = {a: n for n, a in enumerate(atoms)}
        try:
            form = str(self._printer.doprint(e))
        finally:
            self._slots = {}
        bare = _SLOTS.sub(" ", form)
        for name in names:
            if re.search(r"(?<![\w])" + re.escape(name) + r"(?![\w])", bare):
                return None
        return form


__all__ = ["RenamedPrinter"]
