"""Stage 1, parse: a network spec (TOML file or Python object) -> the component-form IR.

A spec is either a ``.toml`` file (docs/reference/spec.md) or ``path/to/file.py:NAME``
naming a :class:`~symgrad.network.Network` built with the Python API. TOML specs are
data only: they are validated strictly against a fixed schema, every expression in
them goes through the whitelist parser (:mod:`symgrad.frontend.expr_parser`), and the result is
handed to :func:`symgrad.layers.build`. No code from a TOML spec is ever executed.

Every problem is a :class:`~symgrad.errors.SpecError` whose ``line()`` is one line,
``FILE: FIELD: PROBLEM``, with fields such as ``name``, ``layer[2].activation`` (layers
numbered from 1) or ``loss.expr``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib.util
import re
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import sympy as sp

from symgrad import names
from symgrad.errors import SpecError
from symgrad.frontend import lets as let_syntax
from symgrad.frontend.expr_parser import parse_expression
from symgrad.ir import conv as C
from symgrad.ir import layers as L
from symgrad.ir.map_checks import AUTO, PADDINGS
from symgrad.ir.network import Network
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


class _Checker:
    """Validates one parsed TOML document; every failure names the file and field."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.targets = "auto"

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
    def document(self, doc: Mapping[str, Any]) -> tuple[str, int | tuple[int, ...], list[Any], Any]:
        self.keys(doc, TOP_KEYS, None)
        for key in REQUIRED_KEYS:
            self.required(doc, key, None, _REQUIRED_HINTS[key])
        self.targets = "auto"
        if "targets" in doc:
            text = self.string(doc["targets"], "targets", "targets")
            if text not in TARGET_DOMAINS:
                self.fail(
                    "targets",
                    f"unknown target domain {_show(text)} "
                    f"(choose from {', '.join(TARGET_DOMAINS)})",
                )
            self.targets = text
        name = self.name(doc["name"], "name", "the network name")
        width = self.input(doc["input"])
        self.sizes = self.size_table(doc.get("sizes", {}))
        raw_layers = doc["layer"]
        if isinstance(raw_layers, dict):
            self.fail("layer", "must be an array of tables: write [[layer]], not [layer]")
        if not isinstance(raw_layers, list):
            self.fail(
                "layer", f"must be an array of [[layer]] tables, got {_type_name(raw_layers)}"
            )
        if not raw_layers:
            self.fail("layer", "a network needs at least one layer (the layer list is empty)")
        if len(raw_layers) > MAX_LAYERS:
            self.fail("layer", f"too many layers: {len(raw_layers)} (at most {MAX_LAYERS})")
        # Arrays a later map may read: the input and every earlier layer's output; and
        # every parameter by name (for the penalty).
        self.outputs: dict[str, int] = {"x": 0}
        # the number of axes of each output a later map may read (1 unless said here)
        self.axes: dict[str, int] = {"x": len(width) if isinstance(width, tuple) else 1}
        self.param_names: dict[str, int] = {}
        built = [self.layer(raw, number) for number, raw in enumerate(raw_layers, start=1)]
        loss = self.loss(doc["loss"], raw_layers)
        self.penalty = self.penalty_expr(doc["penalty"]) if "penalty" in doc else None
        return name, width, built, loss

    def size_table(self, value: object) -> dict[str, sp.Symbol]:
        """``sizes = { h = 16 }``: named widths (Symbols with concrete values)."""
        if not isinstance(value, dict):
            self.fail("sizes", f"must be a table {{ name = width }}, got {_type_name(value)}")
        out: dict[str, sp.Symbol] = {}
        self.size_values: dict[sp.Symbol, int] = {}
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

    def layer(self, raw: object, number: int) -> Any:
        field = f"layer[{number}]"
        if not isinstance(raw, dict):
            self.fail(field, f"each layer must be a table, got {_type_name(raw)}")
        kind = raw.get("type", "dense")
        if not isinstance(kind, str):
            self.fail(f"{field}.type", f"type must be a string, got {_type_name(kind)}")
        if kind not in LAYER_TYPES:
            close = difflib.get_close_matches(kind, LAYER_TYPES, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            self.fail(
                f"{field}.type",
                f"unknown layer type {_show(kind)} ({hint}known: {', '.join(LAYER_TYPES)})",
            )
        if kind == "map":
            built: Any = self.map_layer(raw, field, number)
        elif kind in NORM_TYPES:
            self.keys(raw, ("type",), field)
            norms = {"layernorm": L.LayerNorm, "rmsnorm": L.RMSNorm, "batchnorm": L.BatchNorm}
            built = norms[kind]()
            self.param_names[f"gamma{number}"] = 1
            if kind != "rmsnorm":
                self.param_names[f"beta{number}"] = 1
        elif kind in C.CONV_TYPES + C.POOL_TYPES or kind == "flatten":
            built = self.conv_layer(raw, field, kind)
            if kind in C.CONV_TYPES:
                self.param_names[f"W{number}"] = 2 + int(kind[-2])
                if built.bias:
                    self.param_names[f"b{number}"] = 1
            return built
        else:
            built = self.dense_layer(raw, field)
            self.param_names[f"W{number}"] = 2
            if built.bias:
                self.param_names[f"b{number}"] = 1
            if built.activation != "identity":
                self.outputs[f"z{number}"] = number
        self.outputs[f"a{number}"] = number
        return built

    # -- conv nets (input = [channels, height, width]) ------------------------------------
    def input(self, value: object) -> int | tuple[int, ...]:
        """``input = 3`` (features) or ``input = [1, 8, 8]`` ((channels, [height,] width))."""
        if isinstance(value, list):
            if not 2 <= len(value) <= 3:
                self.fail(
                    "input",
                    "an input shape is [channels, width] or [channels, height, width], "
                    f"got {len(value)} entries",
                )
            for n, v in enumerate(value):
                self.positive_int(v, f"input[{n}]", "each input shape entry")
            return tuple(value)
        return self.positive_int(value, "input", "input")

    def window(self, value: object, field: str, what: str, nd: int, low: int) -> tuple[int, ...]:
        """An int or ``nd`` ints (a kernel, stride or padding), each at least ``low``."""
        vals = value if isinstance(value, list) else [value]
        if isinstance(value, list) and len(value) != nd:
            self.fail(field, f"{what} must be an integer or a list of {nd}, got {len(value)}")
        for v in vals:
            if isinstance(v, bool) or not isinstance(v, int):
                self.fail(field, f"{what} must be an integer, got {_type_name(v)} ({_show(v)})")
            if v < low:
                self.fail(field, f"{what} must be at least {low}, got {v}")
            if v > MAX_UNITS:
                self.fail(field, f"{what} is too large: {v}")
        return tuple(vals) * (nd if len(vals) == 1 else 1)

    def conv_layer(self, raw: Mapping[str, Any], field: str, kind: str) -> Any:
        if kind == "flatten":
            self.keys(raw, ("type",), field)
            return C.Flatten()
        nd = int(kind[-2])
        if kind in C.CONV_TYPES:
            self.keys(raw, CONV_KEYS, field)
            channels = self.positive_int(
                self.required(raw, "channels", field, "the output channels, e.g. channels = 8"),
                f"{field}.channels",
                "channels",
            )
            kernel = self.window(
                self.required(raw, "kernel", field, "the kernel size, e.g. kernel = 3"),
                f"{field}.kernel",
                "kernel",
                nd,
                1,
            )
            bias = raw.get("bias", True)
            if not isinstance(bias, bool):
                self.fail(f"{field}.bias", f"bias must be true or false, got {_show(bias)}")
            return C.Conv(
                channels,
                kernel,
                self.window(raw.get("stride", 1), f"{field}.stride", "stride", nd, 1),
                self.window(raw.get("padding", 0), f"{field}.padding", "padding", nd, 0),
                self.activation(raw.get("activation", "identity"), f"{field}.activation"),
                bias,
                nd,
                self.window(raw.get("dilation", 1), f"{field}.dilation", "dilation", nd, 1),
            )
        self.keys(raw, POOL_KEYS, field)
        kernel = self.window(
            self.required(raw, "kernel", field, "the window size, e.g. kernel = 2"),
            f"{field}.kernel",
            "kernel",
            nd,
            1,
        )
        stride = raw.get("stride")
        return C.Pool(
            kind[:3],
            kernel,
            None if stride is None else self.window(stride, f"{field}.stride", "stride", nd, 1),
            self.window(raw.get("padding", 0), f"{field}.padding", "padding", nd, 0),
            nd,
        )

    def dense_layer(self, raw: Mapping[str, Any], field: str) -> L.Dense:
        elsewhere = {
            "expr": "key 'expr' is only allowed on a map layer (add type = \"map\")",
            "name": "key 'name' is only allowed on a map layer",
        }
        self.keys(raw, DENSE_KEYS, field, elsewhere)
        units = self.units(
            self.required(raw, "units", field, "the layer's width, e.g. units = 4"),
            f"{field}.units",
        )
        bias = raw.get("bias", True)
        if not isinstance(bias, bool):
            self.fail(
                f"{field}.bias",
                f"bias must be true or false, got {_type_name(bias)} ({_show(bias)})",
            )
        activation = self.activation(raw.get("activation", "identity"), f"{field}.activation")
        return L.Dense(units, activation, bias)

    def activation(self, value: object, field: str) -> str | L.Activation:
        if isinstance(value, str):
            if value not in L.activation_names():
                close = difflib.get_close_matches(value, L.activation_names(), n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.fail(
                    field,
                    f"unknown activation {_show(value)} "
                    f"({hint}known: {', '.join(L.activation_names())}; or a table "
                    '{ name = "...", expr = "..." } in x)',
                )
            return value
        if isinstance(value, dict):
            name, text = self.custom(value, field, "activation", L.activation_names())
            expr = self.expression(text, f"{field}.expr", scalars={"x": L.x})
            return L.Activation(name, expr)
        self.fail(
            field,
            f"activation must be a name or a {{ name, expr }} table, got {_type_name(value)}",
        )

    def map_layer(self, raw: Mapping[str, Any], field: str, number: int) -> L.Map:
        elsewhere = {
            key: f"key {key!r} is not allowed on a map layer ({why})"
            for key, why in _MAP_ONLY_HINTS.items()
        }
        self.keys(raw, MAP_KEYS, field, elsewhere)
        name = "map"
        if "name" in raw:
            name = self.name(raw["name"], f"{field}.name", "map layer name")
        units = self.units(raw["units"], f"{field}.units") if "units" in raw else None
        params = self.map_params(raw.get("params", {}), f"{field}.params", number)
        text = self.required(raw, "expr", field, 'the component form, e.g. expr = "tanh(a[i])"')
        shaped, plain, scalars = self.map_arrays(params)
        padding = "none"
        if "padding" in raw:
            padding = self.string(raw["padding"], f"{field}.padding", "padding")
            if padding not in PADDINGS:
                self.fail(f"{field}.padding", f"padding must be one of {', '.join(PADDINGS)}")
        names = [nm for nm in INDEX_NAMES if nm not in self.sizes]
        # a reduction's range comes from the axes its index subscripts (AUTO until then)
        indices = {nm: (sp.Symbol(nm, integer=True), AUTO) for nm in names}
        free, shape = self.map_indices(raw, field, names)
        if free and units is not None:
            self.fail(f"{field}.units", "a map with indices takes shape, not units")

        def parse(text: object, where: str, known: Mapping[str, sp.Expr]) -> sp.Expr:
            return self.expression(
                text,
                where,
                arrays=shaped,
                scalars=known,
                indices=indices,
                free_indices=free or ("i",),
                index_arithmetic=True,
            )

        lets = self.map_lets(raw, field, params, shaped, scalars, parse)
        named = {**scalars, **{sym.name: sym for sym, _ in lets}}
        expr = parse(text, f"{field}.expr", named).xreplace(plain)
        lets = tuple((sym, e.xreplace(plain)) for sym, e in lets)
        let_syntax.check_used(lets, expr, f"{field}.let", self.fail)
        written = let_syntax.substituted(lets, expr)
        for pname, (base, _) in params.items():
            if not written.has(base):
                self.fail(f"{field}.params.{pname}", f"parameter {pname!r} is not used in expr")
            self.param_names[f"{pname}{number}"] = len(params[pname][1])
        self.axes[f"a{number}"] = len(free) or 1
        return L.Map(
            expr,
            name=name,
            units=units,
            params=dict(params.values()),
            padding=padding,
            indices=tuple(indices[nm][0] for nm in free),
            shape=shape,
            lets=lets,
        )

    def map_lets(self, raw, field, params, shaped, scalars, parse) -> let_syntax.Lets:
        """The map's ``let`` table (named sub-expressions), if any."""
        if "let" not in raw:
            return ()
        taken = {nm: "a reserved name" for nm in RESERVED}
        taken.update({nm: "a function name" for nm in PARAM_RESERVED if nm not in RESERVED})
        taken.update({nm: "an index name" for nm in INDEX_NAMES})
        taken.update({nm: "an array of the network" for nm in (*shaped, *self.outputs)})
        taken.update({nm: "a size" for nm in self.sizes})
        taken.update({nm: "a parameter of this map" for nm in params})
        return let_syntax.parse_lets(
            raw["let"],
            f"{field}.let",
            check_name=lambda key, where: self.name(key, where, "a let name"),
            taken=taken,
            scalars=scalars,
            parse=parse,
            fail=self.fail,
        )

    def map_arrays(self, params: Mapping[str, Any]) -> tuple[dict, dict, dict[str, sp.Expr]]:
        """The arrays and scalars a map's expression may name: the previous output ``a``, the
        input ``x`` and earlier outputs ``a<l>``/``z<l>`` (their number of axes), earlier
        layers' parameters (shared) and the map's own parameters."""
        shaped: dict[str, sp.IndexedBase] = {"a": L.a}
        plain: dict[sp.Basic, sp.Basic] = {}
        for out in self.outputs:
            shaped[out] = sp.IndexedBase(out, shape=(1,) * self.axes.get(out, 1))
            plain[shaped[out]] = sp.IndexedBase(out, real=True)
        scalars: dict[str, sp.Expr] = {"n": L.n, **self.sizes}
        for pname, axes in self.param_names.items():
            if axes:
                shaped[pname] = sp.IndexedBase(pname, shape=(1,) * axes)
                plain[shaped[pname]] = sp.IndexedBase(pname, real=True)
            else:
                scalars[pname] = sp.Symbol(pname, real=True)
        for pname, (base, shape) in params.items():
            if isinstance(base, sp.Symbol):
                scalars[pname] = base
            else:
                shaped[pname] = sp.IndexedBase(pname, shape=(1,) * len(shape))
                plain[shaped[pname]] = base
        return shaped, plain, scalars

    def map_indices(
        self, raw: Mapping[str, Any], field: str, names: list[str]
    ) -> tuple[tuple[str, ...], tuple[sp.Expr | int, ...]]:
        """``indices = ["t", "e"]`` and ``shape = ["T", "d"]`` of a tensor map (both or
        neither; ``()`` for a vector map over ``i``)."""
        if ("indices" in raw) != ("shape" in raw):
            self.fail(field, "a tensor map needs both indices and shape")
        if "indices" not in raw:
            return (), ()
        idx, shp = raw["indices"], raw["shape"]
        if not isinstance(idx, list) or not 1 <= len(idx) <= 3:
            self.fail(f"{field}.indices", "must be a list of 1 to 3 index names")
        if not isinstance(shp, list) or len(shp) != len(idx):
            self.fail(f"{field}.shape", f"must be a list of {len(idx)} extents (one per index)")
        for pos, nm in enumerate(idx):
            if not isinstance(nm, str) or nm not in names:
                self.fail(
                    f"{field}.indices[{pos}]", f"unknown index {_show(nm)} (use {', '.join(names)})"
                )
        if len(set(idx)) != len(idx):
            self.fail(f"{field}.indices", "index names must be distinct")
        dims: list[sp.Expr | int] = []
        for pos, dim in enumerate(shp):
            where = f"{field}.shape[{pos}]"
            if dim == "n":
                dims.append(L.n)
            elif isinstance(dim, str) and dim in self.sizes:
                dims.append(self.sizes[dim])
            elif isinstance(dim, str):
                known = ", ".join(["n", *sorted(self.sizes)])
                self.fail(where, f"unknown size {_show(dim)} (use {known} or an integer)")
            else:
                dims.append(self.positive_int(dim, where, "an extent"))
        return tuple(idx), tuple(dims)

    def map_params(
        self, value: object, field: str, number: int
    ) -> dict[str, tuple[sp.IndexedBase | sp.Symbol, tuple[sp.Expr | int, ...]]]:
        """``params = { g = ["n"], T = [] }``: name -> shape ("n", a size name or ints)."""
        if not isinstance(value, dict):
            self.fail(field, f"must be a table {{ name = [shape] }}, got {_type_name(value)}")
        out: dict[str, tuple[sp.IndexedBase | sp.Symbol, tuple[sp.Expr | int, ...]]] = {}
        for key, shape in value.items():
            f = _key_field(field, key)
            nm = self.name(key, f, "a parameter name")
            if nm in PARAM_RESERVED or nm in self.sizes or _LAYER_OUT.fullmatch(nm):
                self.fail(
                    f,
                    f"parameter name {nm!r} is reserved or names a size (reserved: index "
                    "names, n, N, sizes and function names)",
                )
            if not isinstance(shape, list):
                self.fail(
                    f, f'a shape must be an array such as ["n"] or [], got {_type_name(shape)}'
                )
            if len(shape) > MAX_PARAM_AXES:
                self.fail(f, f"at most {MAX_PARAM_AXES} axes, got {len(shape)}")
            dims: list[sp.Expr | int] = []
            for pos, dim in enumerate(shape):
                where = f"{f}[{pos}]"
                if isinstance(dim, str):
                    if dim == "n":
                        dims.append(L.n)
                    elif dim in self.sizes:
                        dims.append(self.sizes[dim])
                    else:
                        known = ", ".join(["n", *sorted(self.sizes)])
                        self.fail(where, f"unknown width {_show(dim)} (use {known} or an integer)")
                else:
                    dims.append(self.positive_int(dim, where, "a dimension"))
            base: sp.IndexedBase | sp.Symbol = (
                sp.IndexedBase(nm, real=True) if dims else sp.Symbol(nm, real=True)
            )
            out[nm] = (base, tuple(dims))
        return out

    def penalty_expr(self, value: object) -> sp.Expr:
        """``penalty = "1e-4 * W1[p, q]**2"``: each term summed over its free indices."""
        arrays = {
            nm: sp.IndexedBase(nm, shape=(1,) * axes)
            for nm, axes in self.param_names.items()
            if axes
        }
        scalars: dict[str, sp.Expr] = {
            nm: sp.Symbol(nm, real=True) for nm, axes in self.param_names.items() if not axes
        }
        scalars.update(self.sizes)
        names = ("p", "q", "r", "s", "i", "j", "k")
        indices = {nm: (sp.Symbol(nm, integer=True), sp.Symbol("_w")) for nm in names}
        expr = self.expression(
            value, "penalty", arrays=arrays, scalars=scalars, indices=indices, free_indices=names
        )
        return expr.xreplace({b: sp.IndexedBase(b.label, real=True) for b in arrays.values()})

    def loss(self, value: object, raw_layers: list[Any]) -> str | tuple[str, sp.Expr]:
        if isinstance(value, str):
            if value not in L.LOSS_NAMES:
                close = difflib.get_close_matches(value, L.LOSS_NAMES, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.fail(
                    "loss",
                    f"unknown loss {_show(value)} ({hint}known: {', '.join(L.LOSS_NAMES)}; "
                    'or a table { name = "...", expr = "..." } in yhat and y)',
                )
            if value == "cross_entropy":
                last = raw_layers[-1]
                number = len(raw_layers)
                if last.get("type", "dense") == "map":
                    return value  # a map that is a softmax by structure (checked when built)
                if last.get("type", "dense") != "dense":
                    self.fail(
                        "loss",
                        "loss 'cross_entropy' needs a softmax activation on the last layer "
                        f"(layer[{number}] is a map layer)",
                    )
                act = last.get("activation", "identity")
                if act != "softmax":
                    shown = _show(act) if isinstance(act, str) else "a custom activation"
                    self.fail(
                        "loss",
                        "loss 'cross_entropy' needs a softmax activation on the last layer "
                        f"(layer[{number}].activation is {shown})",
                    )
            return value
        if isinstance(value, dict):
            name, text = self.custom(value, "loss", "loss", L.LOSS_NAMES)
            expr = self.expression(text, "loss.expr", scalars={"yhat": L.yhat_s, "y": L.y_s})
            return name, expr
        self.fail(
            "loss", f"loss must be a name or a {{ name, expr }} table, got {_type_name(value)}"
        )


# -- entry points ----------------------------------------------------------------------


def _located(exc: SpecError, file: str) -> SpecError:
    """Place an error from :func:`symgrad.build` at the best field of the spec."""
    if exc.file or exc.field:
        return exc.at(file=file)
    m = re.match(r"layer (\d+): (.*)", exc.message)
    if m:
        field = "expr" if "index" in m.group(2) or "takes" in m.group(2) else None
        where = f"layer[{m.group(1)}]" + (f".{field}" if field else "")
        return SpecError(m.group(2), file=file, field=where)
    m = re.match(r"penalty: (.*)", exc.message)
    if m:
        return SpecError(m.group(1), file=file, field="penalty")
    field = "loss" if "loss" in exc.message else None
    return SpecError(exc.message, file=file, field=field)


def spec_from_dict(doc: Mapping[str, Any], *, file: str = "<spec>") -> Network:
    """Validate a parsed TOML document and build its :class:`Network`.

    Args:
        doc: the mapping ``tomllib`` returns.
        file: the name used in messages and stored as ``Network.source``.
    """
    shown = _display_path(file)
    checker = _Checker(shown)
    name, width, layers, loss = checker.document(doc)
    try:
        net = L.build(
            name,
            width,
            layers,
            loss,
            source=file,
            sizes=checker.size_values,
            penalty=checker.penalty,
        )
    except SpecError as exc:
        raise _located(exc, shown) from None
    return dataclasses.replace(net, targets=checker.targets)


def loads_spec(text: str, *, file: str = "<string>") -> Network:
    """Parse TOML spec ``text`` (the contents of a spec file) into a :class:`Network`."""
    shown = _display_path(file)
    if len(text) > MAX_FILE_BYTES:
        raise SpecError(f"spec is too large (more than {MAX_FILE_BYTES:_} characters)", file=shown)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        reason = " ".join(str(exc).split())
        raise SpecError(f"invalid TOML: {reason}", file=shown) from None
    except RecursionError:
        raise SpecError("invalid TOML: values are nested too deeply", file=shown) from None
    return spec_from_dict(doc, file=file)


def _read_toml(path: str) -> Network:
    shown = _display_path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SpecError(f"cannot read spec file: {reason}", file=shown) from None
    if len(data) > MAX_FILE_BYTES:
        raise SpecError(f"spec file is too large (more than {MAX_FILE_BYTES:_} bytes)", file=shown)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        raise SpecError(
            f"not a UTF-8 text file (byte 0x{bad} at offset {exc.start}); "
            "a spec must be a TOML file",
            file=shown,
        ) from None
    return loads_spec(text, file=path)


def _load_python(path: str, attr: str) -> Network:
    """Import ``path`` (the user's own code) and return its Network named ``attr``."""
    shown = _display_path(path)
    if not attr.isidentifier():
        raise SpecError(f"{_show(attr)} is not a Python name (write FILE.py:NAME)", file=shown)
    file = Path(path)
    if not file.is_file():
        raise SpecError("cannot read spec file: No such file", file=shown)
    module_name = f"_symgrad_spec_{abs(hash(str(file.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(module_name, file)
    if module_spec is None or module_spec.loader is None:
        raise SpecError("cannot import this file as a Python module", file=shown)
    module = importlib.util.module_from_spec(module_spec)
    folder = str(file.resolve().parent)
    sys.modules[module_name] = module
    sys.path.insert(0, folder)
    try:
        module_spec.loader.exec_module(module)
    except SpecError as exc:
        sys.modules.pop(module_name, None)
        raise exc.at(file=shown) from None
    except (Exception, SystemExit) as exc:
        sys.modules.pop(module_name, None)
        text = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        detail = _plain(text)
        where = f" (line {exc.lineno})" if isinstance(exc, SyntaxError) and exc.lineno else ""
        raise SpecError(
            f"error while importing{where}: {type(exc).__name__}"
            + (f": {detail}" if detail else ""),
            file=shown,
        ) from None
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)
    if not hasattr(module, attr):
        found = sorted(k for k, v in vars(module).items() if isinstance(v, Network))
        hint = f" (networks in this file: {', '.join(found)})" if found else ""
        raise SpecError(f"no object named {attr!r} in this file{hint}", file=shown)
    obj = getattr(module, attr)
    if not isinstance(obj, Network):
        raise SpecError(
            f"{attr!r} is {_type_name(obj)}, not a symgrad.Network "
            "(build one with symgrad.build(...))",
            file=shown,
        )
    try:  # however it was built: every name is checked as a spec file's would be
        return names.check_network(obj)
    except SpecError as exc:
        raise exc.at(file=shown) from None


def load_spec(spec: str) -> Network:
    """Load a network from a spec: a ``.toml`` file or ``path/to/file.py:NAME``.

    The ``.py`` form imports that file (the user's own Python code) and returns its
    module-level :class:`Network` called ``NAME``. Everything else is read as a TOML
    spec and validated strictly.

    Raises:
        SpecError: for any problem, with the file and field in its one-line message.
    """
    if not isinstance(spec, str | Path):
        raise SpecError(f"a spec must be a path, got {type(spec).__name__}")
    spec = str(spec)
    if not spec:
        raise SpecError("empty spec path")
    head, sep, tail = spec.rpartition(":")
    if sep and head.endswith(".py"):
        return _load_python(head, tail)
    if spec.endswith(".py"):
        raise SpecError(
            "name the network inside the Python file: FILE.py:NAME", file=_display_path(spec)
        )
    return _read_toml(spec)


__all__ = ["MAX_FILE_BYTES", "MAX_LAYERS", "MAX_UNITS", "load_spec", "loads_spec", "spec_from_dict"]
