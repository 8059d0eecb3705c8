"""A map's named sub-expressions: ``let = { mu = "sum(a[j], j)/n", v = "..." }``.

Each definition is a spec expression (the whitelist parser, never ``eval``) in everything
the map's ``expr`` may use plus the names defined before it, in the table's order; ``expr``
may use them all. A name is a Python identifier that names nothing else in the map (not an
index, a size, a parameter, an array, a function or a reserved name), and each must be
used by ``expr`` or a later definition. The body is differentiated with every name
substituted, so a map with lets derives exactly as the same map written out; the documents
write its steps in the names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NoReturn

import sympy as sp

from symgrad.ir.lets import Lets, substitute

#: Most definitions in one ``let`` table.
MAX_LETS = 16

#: ``(text, field, scalars) -> expression``: the map's expression parser.
Parse = Callable[[object, str, Mapping[str, sp.Expr]], sp.Expr]
#: ``(field, message)``: raises the spec's one-line error.
Fail = Callable[[str, str], NoReturn]


def parse_lets(
    value: object,
    field: str,
    *,
    check_name: Callable[[object, str], str],
    taken: Mapping[str, str],
    scalars: Mapping[str, sp.Expr],
    parse: Parse,
    fail: Fail,
) -> Lets:
    """The ``let`` table of a map at ``field``: ``(Symbol, expression)`` in order, each
    expression in the earlier names (not yet substituted). ``taken`` maps the names a let
    may not take to what they are ("an index name")."""
    if not isinstance(value, dict):
        fail(field, 'must be a table of named expressions, e.g. let = { mu = "sum(a[j], j)/n" }')
    if len(value) > MAX_LETS:
        fail(field, f"too many definitions: {len(value)} (at most {MAX_LETS})")
    known = dict(scalars)
    out: list[tuple[sp.Symbol, sp.Expr]] = []
    for key, text in value.items():
        where = f"{field}.{key}" if key.isidentifier() else field
        name = check_name(key, where)
        if name in taken or name in scalars:
            what = taken.get(name, "a name the expression already has")
            fail(where, f"let name {name!r} is {what}: choose another name")
        expr = parse(text, where, known)
        sym = sp.Symbol(name, real=True)
        known[name] = sym
        out.append((sym, expr))
    return tuple(out)


def check_used(lets: Lets, body: sp.Expr, field: str, fail: Fail) -> None:
    """Every name is read by the body or a later definition."""
    for pos, (sym, _) in enumerate(lets):
        later = [e for _, e in lets[pos + 1 :]]
        if not any(e.has(sym) for e in (body, *later)):
            fail(f"{field}.{sym.name}", f"{sym.name!r} is defined but not used in expr")


def substituted(lets: Lets, body: sp.Expr) -> sp.Expr:
    """``body`` with every name replaced by its (expanded) definition."""
    return substitute(lets, body)
