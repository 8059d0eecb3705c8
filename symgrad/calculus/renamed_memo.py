"""Memoising SymPy work up to the names of quantities: layer 7 is layer 3 renamed.

A deep network repeats the same few layer bodies, so the derivation asks the same
questions (is this gradient zero? what is its canonical form?) about expressions that
differ only in the names of their quantities (``W3``, ``delta4``, ``n_3``). Each answer
is computed once and renamed for the others:

- :func:`shape_key` is an expression's structure with every renameable atom (an
  ``IndexedBase``, a width symbol) replaced by its order of first appearance, kept with
  its assumptions; index symbols (``i``, ``k``, ``p_``), numbers and everything else are
  kept as they are. Two expressions with the same key are the same tree up to a
  one-to-one renaming of those atoms, which the key also returns.
- :func:`renamed` memoises an expression-valued function: the result for the first
  expression of a shape, with the new expression's atoms substituted for the old ones
  (one simultaneous ``xreplace``). :func:`renamed_fact` does the same for a value that
  does not mention names (a bool, ``None``).

The memo is bounded (least recently used entries dropped) and cleared with SymPy's cache
by :func:`clear`. A function memoised here must treat the renamed atoms as opaque names
and create no atoms named after them; those used here (assumption queries, the
canonical form, ``factor_terms``) do.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, cast

import sympy as sp

from symgrad.ir.indices import DUMMY_NAMES, FREE_NAMES, PARAM_NAMES, SAMPLE_NAMES

#: Symbol names that are never renamed: the display names of indices (a function may
#: choose among them by what an expression already uses).
KEPT_NAMES = frozenset((*DUMMY_NAMES, *FREE_NAMES, *PARAM_NAMES, *SAMPLE_NAMES))
_KEEP = KEPT_NAMES
_SIZE = 4096
_MEMO: OrderedDict[Hashable, tuple[Any, tuple[sp.Basic, ...]]] = OrderedDict()


def _assumptions(e: sp.Basic) -> tuple:
    return tuple(sorted(e.assumptions0.items()))


def _renameable(e: sp.Basic) -> bool:
    if isinstance(e, sp.IndexedBase):
        return e.label.name not in _KEEP
    if type(e) is sp.Symbol:
        # widths and scalar parameters; index symbols (integer, not positive) keep their names
        return e.name not in _KEEP and not (e.is_integer and not e.is_positive)
    return False


def _kind(e: sp.Basic) -> Hashable:
    return cast(Hashable, type(e))


def shape_key(expr: sp.Basic) -> tuple[Hashable, tuple[sp.Basic, ...]]:
    """``expr``'s structure up to renaming, and its renameable atoms in order."""
    atoms: dict[sp.Basic, int] = {}

    def walk(e: sp.Basic) -> Hashable:
        if _renameable(e):
            n = atoms.setdefault(e, len(atoms))
            return ("@", n, _kind(e), _assumptions(e), *(walk(a) for a in e.args[1:]))
        if not e.args:
            return (_kind(e), e)
        return (e.func, *(walk(a) for a in e.args))

    key = walk(expr)
    return key, tuple(atoms)


#: Results by the very expressions asked about: the calculus asks again about the same
#: placeholder-named expression for every layer of a shape (no structure walk for those).
_EXACT: dict[Hashable, Any] = {}


def _exact(key: Hashable, fn: Callable[[], Any]) -> Any:
    hit = _EXACT.get(key, _EXACT)
    if hit is _EXACT:
        hit = fn()
        if len(_EXACT) >= _SIZE:
            _EXACT.clear()
        _EXACT[key] = hit
    return hit


def _lookup(tag: Hashable, exprs: tuple[sp.Basic, ...]) -> tuple[Hashable, tuple, Any]:
    keys, atoms = [], []
    for e in exprs:
        k, a = shape_key(e)
        keys.append(k)
        atoms.append(a)
    key = (tag, tuple(keys))
    # atoms shared between the arguments are one atom: number them across all of them
    flat = tuple(dict.fromkeys(a for group in atoms for a in group))
    key = (key, tuple(flat.index(a) for group in atoms for a in group))
    hit = _MEMO.get(key)
    if hit is not None:
        _MEMO.move_to_end(key)
    return key, flat, hit


def _store(key: Hashable, value: Any, flat: tuple) -> None:
    _MEMO[key] = (value, flat)
    while len(_MEMO) > _SIZE:
        _MEMO.popitem(last=False)


def renamed(
    tag: Hashable, fn: Callable[..., sp.Basic], *exprs: sp.Basic, extra: Hashable = ()
) -> sp.Basic:
    """``fn(*exprs)``, computed once per shape of ``exprs`` (and ``extra``, the other
    arguments ``fn`` depends on, by value) and renamed for the rest."""
    return _exact(("renamed", tag, extra, exprs), lambda: _renamed(tag, fn, exprs, extra))


def _renamed(
    tag: Hashable, fn: Callable[..., sp.Basic], exprs: tuple[sp.Basic, ...], extra: Hashable
) -> sp.Basic:
    key, flat, hit = _lookup((tag, extra), exprs)
    if hit is None:
        out = fn(*exprs)
        _store(key, out, flat)
        return out
    value, old = hit
    if old == flat:
        return value
    return value.xreplace(dict(zip(old, flat, strict=True)))


def renamed_fact(tag: Hashable, fn: Callable[[sp.Basic], Any], expr: sp.Basic) -> Any:
    """``fn(expr)`` for a value that names no atom of ``expr`` (a bool or ``None``),
    computed once per shape of ``expr``."""
    return _exact(("fact", tag, expr), lambda: _renamed_fact(tag, fn, expr))


def _renamed_fact(tag: Hashable, fn: Callable[[sp.Basic], Any], expr: sp.Basic) -> Any:
    key, flat, hit = _lookup(tag, (expr,))
    if hit is None:
        out = fn(expr)
        _store(key, out, flat)
        return out
    return hit[0]


def is_zero(expr: sp.Expr) -> bool | None:
    """``expr.is_zero`` (SymPy's assumption query), asked once per shape."""
    if expr.is_Number or not expr.args:
        return expr.is_zero
    return renamed_fact("is_zero", lambda e: e.is_zero, expr)


def clear() -> None:
    """Forget every memoised result."""
    _MEMO.clear()
    _EXACT.clear()
