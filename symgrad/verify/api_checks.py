"""The module contract, checked before any number is compared: the names a module must
define, ``PARAM_NAMES`` and ``PARAM_SHAPES`` against the network, and the structure of the
gradients it returns (keys, shapes, real numbers, dtypes)."""

from __future__ import annotations

import numpy as np

from symgrad.ir.network import Network
from symgrad.verify.differences import show_value
from symgrad.verify.module_process import API, LocalModule, ModuleProcess
from symgrad.verify.report import VerifyReport


def check_api(mod: LocalModule | ModuleProcess, net: Network, report: VerifyReport) -> bool:
    missing = [a for a in API if a not in mod.attrs and a not in mod.funcs]
    if not report.check(
        "api", not missing, f"module lacks {', '.join(missing)} (the names every module defines)"
    ):
        return False
    not_callable = [a for a in API[2:] if a not in mod.funcs]
    if not report.check(
        "api callables", not not_callable, f"not callable: {', '.join(not_callable)}"
    ):
        return False
    raw_names = mod.attrs["PARAM_NAMES"]
    if not (isinstance(raw_names, tuple | list) and all(isinstance(n, str) for n in raw_names)):
        report.check(
            "PARAM_NAMES", False, f"PARAM_NAMES is {show_value(raw_names)}, not a tuple of str"
        )
        return False
    names = tuple(raw_names)
    want = net.param_names
    if set(names) != set(want):
        extra = sorted(set(names) - set(want))
        lack = sorted(set(want) - set(names))
        detail = "; ".join(
            s
            for s in (
                f"unexpected {', '.join(extra)}" if extra else "",
                f"missing {', '.join(lack)}" if lack else "",
            )
            if s
        )
        report.check(
            "PARAM_NAMES", False, f"PARAM_NAMES {names} do not match the network {want}: {detail}"
        )
        return False
    report.check("PARAM_NAMES", True)
    raw_shapes = mod.attrs["PARAM_SHAPES"]
    if not isinstance(raw_shapes, dict):
        report.check("PARAM_SHAPES", False, f"PARAM_SHAPES is {show_value(raw_shapes)}, not a dict")
        return False
    ok = True
    for p in net.params:
        got_raw = raw_shapes.get(p.name, ())
        try:
            got = tuple(int(v) for v in got_raw)
        except (TypeError, ValueError):
            got = None
        exp = net.shape(p)
        ok &= report.check(
            f"shape {p.name}",
            got == exp,
            f"PARAM_SHAPES[{p.name!r}] is {got_raw!r}, the network has {exp}",
        )
    return ok


def check_grads_structure(report: VerifyReport, net: Network, grads, dtype: np.dtype) -> bool:
    """Keys, shapes and real numbers (False stops the numeric checks); dtypes are reported."""
    if not report.check("grads dict", isinstance(grads, dict), "grads is not a dict"):
        return False
    want, got = set(net.param_names), set(grads)
    if not report.check(
        "grads keys",
        got == want,
        f"grads keys {sorted(map(str, got))} != PARAM_NAMES {sorted(want)}",
    ):
        return False
    ok = True
    for p in net.params:
        g = grads[p.name]
        if not (isinstance(g, np.ndarray | int | float) and np.asarray(g).dtype.kind in "biuf"):
            ok &= report.check(
                f"grad type {p.name}",
                False,
                f"{p.name}: gradient is {show_value(g)}, expected a real array",
            )
            continue
        g = np.asarray(g)
        exp = net.shape(p)
        ok &= report.check(
            f"grad shape {p.name}",
            g.shape == exp,
            f"{p.name}: gradient has shape {g.shape}, expected {exp}",
        )
        report.check(
            f"grad dtype {p.name}",
            g.dtype == dtype,
            f"{p.name}: gradient has dtype {g.dtype}, expected {dtype}",
        )
    return ok


__all__ = ["check_api", "check_grads_structure"]
