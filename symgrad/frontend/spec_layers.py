"""Stage 1, parse: the layer tables of a TOML spec (dense, map, conv, pool, norms).

:class:`LayerChecker` turns one ``[[layer]]`` table into a layer of the Python API
(``ir/layers.py``), checking every key; each failure names ``layer[N].FIELD``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import sympy as sp

from symgrad.frontend import lets as let_syntax

#: Largest spec file read, in bytes.
from symgrad.frontend.spec_schema import (
    _LAYER_OUT,
    _MAP_ONLY_HINTS,
    CONV_KEYS,
    DENSE_KEYS,
    INDEX_NAMES,
    LAYER_TYPES,
    MAP_KEYS,
    MAX_PARAM_AXES,
    MAX_UNITS,
    NORM_TYPES,
    PARAM_RESERVED,
    POOL_KEYS,
    RESERVED,
    BaseChecker,
    _key_field,
    _show,
    _type_name,
)
from symgrad.ir import conv as C
from symgrad.ir import layers as L
from symgrad.ir.map_checks import AUTO, PADDINGS


class LayerChecker(BaseChecker):
    """The checks of one layer table."""

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
