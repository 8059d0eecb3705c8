"""Stage 1, parse: the spec schema (keys, limits, names) and the checker's basics.

The constants a TOML spec is validated against and :class:`BaseChecker`, whose methods
check one value each (an integer, a name, an expression through the whitelist parser)
and fail with one line naming the file and field. ``spec_layers.py`` checks the layer
tables, ``spec.py`` the whole document.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import sympy as sp

from symgrad import names
from symgrad.errors import SpecError
from symgrad.frontend.expr_parser import parse_expression
from symgrad.ir import conv as C
from symgrad.ir import layers as L
from symgrad.ir.ops import SPEC_FUNCTIONS

#: Largest spec file read, in bytes.
MAX_FILE_BYTES = 1_000_000
#: Most layers a spec may declare.
MAX_LAYERS = L.MAX_LAYERS  # derive + codegen stay within seconds (bench/time_bounds.py)
#: Largest width (input features or units) of one layer.
MAX_UNITS = 1_000_000
#: Longest name (network, custom activation, loss or map layer).
MAX_NAME = names.MAX_NAME

TOP_KEYS = ("name", "input", "loss", "layer", "sizes", "penalty", "targets")
#: Required top-level keys (``targets`` is optional).
REQUIRED_KEYS = ("name", "input", "loss", "layer")
#: ``targets = "..."``: the domain verify draws targets from (for custom losses).
TARGET_DOMAINS = ("real", "positive", "unit", "onehot", "probabilities")
DENSE_KEYS = ("type", "units", "activation", "bias")
MAP_KEYS = ("type", "expr", "name", "params", "units", "indices", "shape", "padding", "let")
#: Index names a map's expression may use (free ones listed in ``indices``; the rest are
#: summed over). A size of the same name is a size there, not an index.
INDEX_NAMES = ("i", "j", "k", "p", "q", "r", "t", "u", "v", "e", "c", "h", "w", "s")
#: Most axes of a map parameter.
MAX_PARAM_AXES = 4
#: Names an expression gives a meaning of its own (not usable in ``sizes`` or ``params``).
RESERVED = names.RESERVED
#: Names a map parameter may not take: the above, every index name, function names.
PARAM_RESERVED = frozenset((*RESERVED, *INDEX_NAMES, *SPEC_FUNCTIONS, "max", "min", "softmax"))
CUSTOM_KEYS = ("name", "expr")
NORM_TYPES = ("layernorm", "rmsnorm", "batchnorm")
LAYER_TYPES = ("dense", "map", *C.CONV_TYPES, *C.POOL_TYPES, "flatten", *NORM_TYPES)
CONV_KEYS = ("type", "channels", "kernel", "stride", "padding", "dilation", "activation", "bias")
POOL_KEYS = ("type", "kernel", "stride", "padding")

_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_SIMPLE_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,40}")

_REQUIRED_HINTS = {
    "name": 'the network\'s name, e.g. name = "my_net"',
    "input": "the number of input features, e.g. input = 3",
    "loss": 'the loss, e.g. loss = "mse"',
    "layer": "at least one [[layer]] table",
}
_MAP_ONLY_HINTS = {
    "activation": "add a dense layer for an activation, or write it into the map's expr",
    "bias": 'declare its own parameters with params = { b = ["n"] }',
}
_LAYER_OUT = re.compile(r"[az]([1-9][0-9]*)")


# -- small helpers ---------------------------------------------------------------------


def _show(value: object, limit: int = 40) -> str:
    """A short, one-line rendering of a user value for messages."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = repr(value if len(value) <= limit else value[:limit] + "...")
    else:
        text = repr(value)
        if len(text) > limit:
            text = text[:limit] + "..."
    return text if text.isprintable() else ascii(text)


def _plain(text: str, limit: int = 200) -> str:
    """The first line of ``text``, shortened and printable, without quotes."""
    lines = text.strip().splitlines()
    first = lines[0] if lines else ""
    if len(first) > limit:
        first = first[:limit] + "..."
    return first if first.isprintable() else ascii(first)[1:-1]


def _type_name(value: object) -> str:
    """The TOML name of a value's type, with an article."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    kind = type(value).__name__
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"  # datetime, function, ...


def _display_path(path: str) -> str:
    """The file name as shown in messages (kept on one line)."""
    return path if path.isprintable() else ascii(path)


def _key_field(prefix: str | None, key: str) -> str:
    """The field of ``key`` inside ``prefix`` (``layer[1].units``)."""
    part = key if _SIMPLE_KEY_RE.fullmatch(key) else f"[{_show(key)}]"
    if prefix is None:
        return part
    return f"{prefix}{part}" if part.startswith("[") else f"{prefix}.{part}"


class BaseChecker:
    """Validates one parsed TOML document; every failure names the file and field."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.targets = "auto"
        self.sizes: dict[str, sp.Symbol] = {}
        self.size_values: dict[sp.Symbol, int] = {}
        self.outputs: dict[str, int] = {"x": 0}
        self.axes: dict[str, int] = {}
        self.param_names: dict[str, int] = {}

    def fail(self, field: str | None, message: str) -> NoReturn:
        raise SpecError(message, file=self.file, field=field)

    # -- generic checks -----------------------------------------------------------------
    def keys(
        self,
        table: Mapping[str, Any],
        allowed: Sequence[str],
        prefix: str | None,
        elsewhere: Mapping[str, str] | None = None,
    ) -> None:
        """Reject keys not in ``allowed`` (suggesting a close match)."""
        for key in table:
            if key in allowed:
                continue
            field = _key_field(prefix, key)
            if elsewhere and key in elsewhere:
                self.fail(field, elsewhere[key])
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = (
                f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(allowed)})"
            )
            self.fail(field, f"unknown key {_show(key)}{hint}")

    def required(self, table: Mapping[str, Any], key: str, prefix: str | None, hint: str) -> Any:
        if key not in table:
            self.fail(_key_field(prefix, key), f"missing required key {key!r} ({hint})")
        return table[key]

    def positive_int(self, value: object, field: str, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(
                field,
                f"{what} must be a positive integer, got {_type_name(value)} ({_show(value)})",
            )
        if value < 1:
            self.fail(field, f"{what} must be a positive integer, got {value}")
        if value > MAX_UNITS:
            self.fail(field, f"{what} is too large: {value} (at most {MAX_UNITS:_})")
        return value

    def string(self, value: object, field: str, what: str) -> str:
        if not isinstance(value, str):
            self.fail(field, f"{what} must be a string, got {_type_name(value)} ({_show(value)})")
        return value

    def name(self, value: object, field: str, what: str) -> str:
        """A Python identifier: ASCII, not a keyword, not starting with '_' (the rule every
        front end shares: :func:`symgrad.names.check_name`)."""
        text = self.string(value, field, what)
        return names.check_name(text, what, field=field, file=self.file)

    def expression(self, value: object, field: str, **env: Any) -> sp.Expr:
        text = self.string(value, field, "an expression")
        try:
            return parse_expression(text, file=self.file, field=field, **env)
        except SpecError as exc:
            message = exc.message
            if message.startswith("unknown index"):
                message = "undeclared index" + message[len("unknown index") :]
            raise SpecError(message, file=self.file, field=exc.field or field) from None

    def custom(
        self, value: Mapping[str, Any], field: str, what: str, builtin: Sequence[str]
    ) -> tuple[str, object]:
        """A ``{ name = ..., expr = ... }`` table: returns (name, expr text)."""
        self.keys(value, CUSTOM_KEYS, field)
        name = self.name(
            self.required(value, "name", field, f"a name for the custom {what}"),
            f"{field}.name",
            f"custom {what} name",
        )
        if name in builtin:
            self.fail(
                f"{field}.name",
                f"custom {what} name {name!r} clashes with the built-in {what} of that name",
            )
        expr = self.required(value, "expr", field, f"the {what}'s formula")
        return name, expr

    # -- the schema ----------------------------------------------------------------------
    def size_table(self, value: object) -> dict[str, sp.Symbol]:
        """``sizes = { h = 16 }``: named widths (Symbols with concrete values)."""
        if not isinstance(value, dict):
            self.fail("sizes", f"must be a table {{ name = width }}, got {_type_name(value)}")
        out: dict[str, sp.Symbol] = {}
        self.size_values = {}
        for key, width in value.items():
            field = _key_field("sizes", key)
            nm = self.name(key, field, "a size name")
            if nm in RESERVED or _LAYER_OUT.fullmatch(nm):
                self.fail(field, f"size name {nm!r} is reserved in expressions")
            sym = sp.Symbol(nm, integer=True, positive=True)
            self.size_values[sym] = self.positive_int(width, field, "a size")
            out[nm] = sym
        return out

    def units(self, value: object, field: str) -> int | sp.Symbol:
        """A positive integer or the name of a size."""
        if isinstance(value, str):
            if value not in self.sizes:
                known = ", ".join(sorted(self.sizes)) or "none declared in sizes"
                self.fail(field, f"unknown size {_show(value)} (sizes: {known})")
            return self.sizes[value]
        return self.positive_int(value, field, "units")
