"""Names from the user, validated once for TOML specs and the Python API alike.

Every name a user chooses ends up in generated Python code, LaTeX, Markdown, HTML and
Graphviz files: the network's name, layer and loss names, parameter and size names, and
every symbol, array (``IndexedBase``) and function name inside an expression. A name is
accepted only if it is a plain ASCII identifier that is not a Python keyword; names the
user *declares* (network, layer, loss, parameter, size) must also start with a letter,
be at most :data:`MAX_NAME` characters long and, for parameters and sizes, not be one of
the :data:`RESERVED` names that expressions give a meaning of their own.

A refused name is a :class:`BadName`: a :class:`~symgrad.errors.SpecError` (one line,
exit code 2 on the command line) that is also a :class:`ValueError` for Python callers.
The outputs escape every user string for their format anyway (:mod:`symgrad.escape`).
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import sympy as sp
from sympy.core.function import AppliedUndef

from symgrad.errors import SpecError

if TYPE_CHECKING:
    from symgrad.ir.network import Network

#: Longest declared name (network, layer, loss, parameter, size, custom function).
MAX_NAME = 64
#: Names an expression gives a meaning of its own: not usable for sizes or parameters.
RESERVED = ("a", "x", "y", "yhat", "i", "j", "k", "n", "m", "p", "q", "r", "s", "N", "sum")
#: A declared name: ASCII letters, digits and '_', starting with a letter.
DECLARED = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
#: A name inside an expression (symbols may be internal and start with '_').
SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Names of the network's own arrays: ``a2`` (an output), ``z2`` (a pre-activation).
LAYER_OUTPUT = re.compile(r"[az]([1-9][0-9]*)")


class BadName(SpecError, ValueError):
    """A name that is not a plain identifier, a keyword, too long or reserved."""


def shown(text: object, limit: int = 40) -> str:
    """``text`` quoted for a one-line message: control characters escaped, shortened."""
    s = str(text)
    r = repr(s if len(s) <= limit else s[:limit] + "...")
    return r if r.isprintable() else ascii(r)


def check_name(
    text: object,
    what: str,
    *,
    declared: bool = True,
    reserved: bool = False,
    field: str | None = None,
    file: str | None = None,
) -> str:
    """``text`` if it is an acceptable name, else :class:`BadName` naming ``what``.

    Args:
        text: the name.
        what: what it names, for the message ("the network name", "parameter name").
        declared: a name the user declares (starts with a letter, at most MAX_NAME long);
            False for a symbol inside an expression (may start with '_').
        reserved: also refuse :data:`RESERVED` names and the network's array names.
    """

    def fail(message: str) -> BadName:
        return BadName(message, field=field, file=file)

    if not isinstance(text, str):
        raise fail(f"{what} must be a string, got {type(text).__name__}")
    if not text:
        raise fail(f"{what} must not be empty")
    if len(text) > MAX_NAME and (declared or len(text) > 4 * MAX_NAME):
        raise fail(f"{what} is too long ({len(text)} characters, at most {MAX_NAME})")
    if declared and text.startswith("_"):
        raise fail(f"{what} {shown(text)} must not start with '_'")
    if not (DECLARED if declared else SYMBOL).fullmatch(text):
        raise fail(
            f"{what} {shown(text)} is not a Python identifier "
            "(ASCII letters, digits and '_', starting with a letter)"
        )
    if keyword.iskeyword(text):
        raise fail(f"{what} {shown(text)} is a Python keyword")
    if reserved and (text in RESERVED or LAYER_OUTPUT.fullmatch(text)):
        raise fail(f"{what} {shown(text)} is reserved in expressions")
    return text


def expression_names(expr: sp.Basic) -> set[tuple[str, str]]:
    """Every ``(kind, name)`` inside ``expr``: symbols, arrays and undefined functions."""
    out: set[tuple[str, str]] = set()
    for atom in sp.preorder_traversal(expr):
        if isinstance(atom, sp.IndexedBase):
            out.add(("array", str(atom.label)))
        elif isinstance(atom, sp.Symbol):  # Dummy and Idx's labels too
            out.add(("symbol", atom.name))
        elif isinstance(atom, AppliedUndef):
            out.add(("function", type(atom).__name__))
    return out


def check_expression(expr: object, where: str) -> None:
    """Every name inside ``expr`` (a SymPy expression) is an identifier, not a keyword."""
    if not isinstance(expr, sp.Basic):
        return
    for kind, name in sorted(expression_names(expr)):
        check_name(name, f"{where}: {kind} name", declared=False)


def check_sizes(sizes: Mapping[object, object] | None) -> None:
    """The keys of ``sizes={...}`` (strings or Symbols): declared, not reserved."""
    for key in sizes or {}:
        name = key.name if isinstance(key, sp.Symbol) else key
        if isinstance(name, str) and re.fullmatch(r"n_[0-9]+", name):
            continue  # a layer's own width symbol (symgrad's naming)
        check_name(name, "size name", reserved=True)


def check_network(net: Network) -> Network:
    """Every name of a built network (see the module's docstring); returns ``net``."""
    check_name(net.name, "the network name")
    check_name(net.loss.name, "loss name")
    arrays = {str(net.input.label)}
    for st in net.stages:
        where = f"layer {st.layer}"
        check_name(st.label, f"{where}: layer name")
        arrays.add(str(st.out.label))
        check_expression(st.body, where)
    seen: set[str] = set()
    for st in net.stages:
        for p in st.params:
            where = f"layer {st.layer}"
            check_name(p.name, f"{where}: parameter name")
            stem = p.name.rstrip("0123456789")
            if stem in RESERVED or p.name in arrays or p.name in seen:
                raise BadName(
                    f"{where}: parameter name {shown(p.name)} is reserved or already "
                    "names an array of the network"
                )
            seen.add(p.name)
    check_expression(net.loss.body, "loss")
    if net.loss.elementwise is not None:
        check_expression(net.loss.elementwise, "loss")
    if net.penalty is not None:
        check_expression(net.penalty, "penalty")
    for key in net.sizes:
        check_name(getattr(key, "name", key), "size name", declared=False)
    return net


def check_names(names: Iterable[str], what: str) -> None:
    """Each of ``names`` is an acceptable declared name."""
    for name in names:
        check_name(name, what)


__all__ = [
    "MAX_NAME",
    "RESERVED",
    "BadName",
    "check_expression",
    "check_name",
    "check_names",
    "check_network",
    "check_sizes",
    "expression_names",
    "shown",
]
