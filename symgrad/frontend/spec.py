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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sympy as sp

from symgrad import names
from symgrad.errors import SpecError

#: Largest spec file read, in bytes.
from symgrad.frontend.spec_layers import LayerChecker
from symgrad.frontend.spec_schema import (
    _REQUIRED_HINTS,
    MAX_FILE_BYTES,
    MAX_LAYERS,
    MAX_UNITS,
    REQUIRED_KEYS,
    TARGET_DOMAINS,
    TOP_KEYS,
    _display_path,
    _plain,
    _show,
    _type_name,
)
from symgrad.ir import layers as L
from symgrad.ir.network import Network


class _Checker(LayerChecker):
    """Validates one parsed TOML document; every failure names the file and field."""

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
