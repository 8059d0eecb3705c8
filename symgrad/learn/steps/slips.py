"""Naming the slip: the classic mistakes tried on the learner's own line."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from symgrad.ir.network import Network
from symgrad.learn.steps.evaluate import _run, _Shape
from symgrad.learn.steps.parse import Statement, unparse
from symgrad.learn.steps.report import _same
from symgrad.learn.steps.targets import BATCH
from symgrad.verify.stages import is_elementwise

# -- naming the slip: try the classic mistakes on the learner's own line ---------------------


def _variants(e: tuple, names: Mapping[str, list[tuple[str, str]]]) -> Iterator[tuple[tuple, str]]:
    """Single edits of the tree, each with the slip it would undo."""
    kind = e[0]
    if kind == "T":
        yield e[1], f"a transpose: {unparse(e)} should be {unparse(e[1])}"
    if kind == "name" and e[1] in names:
        for other, why in names[e[1]]:
            yield ("name", other), why
    if kind == "name":
        yield ("T", e), f"a missing transpose: {e[1]} should be {e[1]}.T"
    if kind == "bin" and e[1] == "@":
        for v in (("bin", "@", _t(e[2]), _t(e[3])), ("bin", "@", _t(e[3]), _t(e[2]))):
            yield v, f"transposes in the product: {unparse(e)} should be {unparse(v)}"
        yield (
            ("bin", "@", e[3], e[2]),
            (
                f"the order of the matrix product: {unparse(e)} should be "
                f"{unparse(('bin', '@', e[3], e[2]))}"
            ),
        )
        yield ("T", ("bin", "@", e[3], e[2])), "the product is transposed"
    if kind == "bin" and e[1] == "*":
        yield e[2], f"an extra factor {unparse(e[3])}"
        yield e[3], f"an extra factor {unparse(e[2])}"
    if kind == "bin" and e[1] in ("+", "-"):
        flip = "-" if e[1] == "+" else "+"
        yield ("bin", flip, e[2], e[3]), f"a sign: {e[1]} should be {flip}"
        yield ("bin", e[1], e[3], e[2]), f"the order of a difference: {unparse(e)} is reversed"
    if kind == "reduce":
        axis = e[3].get("axis")
        if axis is None:
            yield (
                ("reduce", e[1], e[2], {**e[3], "axis": 0}),
                ("a sum over everything: sum over the samples only, with axis=0"),
            )
        else:
            kw = {**e[3], "axis": 1 - axis if axis in (0, 1) else 0}
            yield (
                ("reduce", e[1], e[2], kw),
                (f"the wrong axis: sum over the samples with axis={kw['axis']}"),
            )
        if e[1] == "mean":
            yield ("reduce", "sum", e[2], e[3]), "mean where a sum belongs (an extra 1/N)"
    for k, child in enumerate(e):
        if isinstance(child, tuple) and child and isinstance(child[0], str):
            for v, why in _variants(child, names):
                yield (*e[:k], v, *e[k + 1 :]), why
        elif isinstance(child, tuple) and child and isinstance(child[0], tuple):
            for j, arg in enumerate(child):
                for v, why in _variants(arg, names):
                    args = (*child[:j], v, *child[j + 1 :])
                    yield (*e[:k], args, *e[k + 1 :]), why


def _t(e: tuple) -> tuple:
    """``e.T``, with a double transpose cancelled."""
    return e[1] if e[0] == "T" else ("T", e)


def _swaps(net: Network, env: Mapping[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """For each forward name, the names a slip may have put in its place."""
    out: dict[str, list[tuple[str, str]]] = {}
    pairs = [(s.name, str(s.inp)) for s in net.stages if is_elementwise(s)]
    for a, z in pairs:
        for case in (str.lower, str.upper):
            A, Z = case(a), case(z)
            out.setdefault(Z, []).append((A, f"{Z} where {A} = f({Z}) belongs (z for a)"))
            out.setdefault(A, []).append((Z, f"{A} where {Z} belongs (a for z)"))
    forward = [str(net.input), *(s.name for s in net.stages)]
    params = {p.name for p in net.params}
    for name in forward:
        for other in forward:
            if other != name and np.shape(env.get(name, 0.0)) == np.shape(env.get(other, 0.0)):
                for case in (str.lower, str.upper):
                    used, right = case(name), case(other)
                    if used in params or right in params:  # bilinear's A2 is no batch of a2
                        continue
                    out.setdefault(used, []).append(
                        (right, f"the wrong layer's value: {used} where {right} belongs")
                    )
    out.setdefault("Y", []).append(("yhat", "Y where yhat belongs"))
    out.setdefault("y", []).append(("yhat", "y where yhat belongs"))
    return out


def _diagnose(span, before, wants, st, net: Network, by_alias) -> tuple[str | None, str | None]:
    """(the likely slip, the corrected lines) for a wrong step, or a factor description.

    ``span`` is the run of lines from the step's first assignment to its last (other lines
    between them included: they run as written); the edits are tried on the step's own."""
    name = span[-1].target
    mine = [k for k, s in enumerate(span) if s.target == name]
    group = [span[k] for k in mine]

    def edited(new_group: list[Statement]) -> list[Statement]:
        out = list(span)
        for k, s in zip(mine, new_group, strict=True):
            out[k] = s
        return out

    def right(new_group) -> bool:
        try:
            for env, want in zip(before, wants, strict=True):
                got = _run(edited(new_group), dict(env))
                if not any(_same(got, want * f, st.rtol, st.atol) for f in st.factors):
                    return False
        except (_Shape, KeyError, ValueError, TypeError, ZeroDivisionError):
            return False
        return True

    def fixed(new_group) -> str:
        return "; ".join(_line_text(s) for s in new_group)

    gots = []
    for env in before:
        try:
            gots.append(np.asarray(_run(span, dict(env)), dtype=float))
        except (_Shape, KeyError):
            gots = []
            break
    if gots and all(g.shape == w.shape for g, w in zip(gots, wants, strict=True)):
        hint = _factor_or_hadamard(gots, wants, st, net, before)
        if hint:
            return hint, None
    for new, why in _edits(group, st, _swaps(net, before[0])):
        if right(new):
            return why, fixed(new)
    if gots and all(g.shape == w.shape for g, w in zip(gots, wants, strict=True)):
        hint = _hadamard(gots, wants, st, net, before, alternatives=True)
        if hint:
            return hint, None
    return None, None


def _line_text(s: Statement) -> str:
    at = f"[{', '.join(_unparse_subscript(i) for i in s.index)}]" if s.index else ""
    return f"{s.target}{at} {s.op} {unparse(s.expr)}"


def _unparse_subscript(item: tuple) -> str:
    from symgrad.learn.steps.parse import _unparse_item

    return _unparse_item(item, unparse)


def _factor_or_hadamard(gots, wants, st, net: Network, before) -> str | None:
    """A constant factor (1/N, the sign, a width) or a missing / doubled activation
    derivative, read off the values."""
    c = _factor(gots, wants)
    if c is not None:
        word = _factor_slip(c, st, net)
        if word:
            return word
    if st.step is None:
        return None
    return _hadamard(gots, wants, st, net, before, alternatives=False)


def _edits(group: list[Statement], st, swaps) -> Iterator[tuple[list[Statement], str]]:
    """The step's lines with one classic slip undone, each with the slip's name."""
    top = group[0].expr
    if len(group) == 1 and top[0] == "bin" and top[1] == "@":
        for variant, why in _variants(top, {}):
            if why.startswith("transposes in the product"):
                yield [replace(group[0], op="=", expr=variant)], why
    if len(group) == 1:
        whole = [replace(group[0], expr=("T", group[0].expr))]
        yield whole, f"a transpose: yours is the transpose of {st.grad}"
    used = {n for s in group for n in _names(s.expr)}
    for old in sorted(used):  # a name swapped everywhere in the step (z1*(1 - z1))
        for other, why in swaps.get(old, []):
            yield [replace(s, expr=_rename(s.expr, old, other)) for s in group], why
    for k, s in enumerate(group):
        for variant, why in _variants(s.expr, swaps):
            yield [*group[:k], replace(s, expr=variant), *group[k + 1 :]], why


def _names(e: Any) -> set[str]:
    if isinstance(e, tuple):
        if e and e[0] == "name":
            return {e[1]}
        return set().union(*(_names(c) for c in e)) if e else set()
    return set()


def _factor(gots: list[np.ndarray], wants: list[np.ndarray]) -> float | None:
    ratios = []
    for g, w in zip(gots, wants, strict=True):
        scale = max(float(np.max(np.abs(w), initial=0.0)), 1e-300)
        mask = np.abs(w) > 1e-9 * scale
        if not mask.any() or not np.all(np.isfinite(g)) or np.any(np.abs(g[~mask]) > 1e-9 * scale):
            return None
        ratios.append(g[mask] / w[mask])
    r = np.concatenate(ratios)
    c = float(np.median(r))
    if c == 0 or not np.allclose(r, c, rtol=1e-7, atol=0):
        return None
    return c


def _factor_slip(c: float, st, net: Network) -> str | None:
    widths = {int(v): str(k) for k, v in net.sizes.items()}
    adjoint = st.kind != "param"
    if np.isclose(c, -1.0) or (adjoint and np.isclose(c, -BATCH)):
        return f"the sign: yours is -1 times {st.grad}"
    if st.kind == "param" and np.isclose(c, BATCH):
        return "a missing 1/N: the loss is the mean over the batch, so divide by N"
    if np.isclose(c, 1.0 / BATCH) or (adjoint and np.isclose(c, 1.0 / BATCH**2)):
        return "1/N twice: divide by N once (in the loss gradient or in the sums, not both)"
    for cc in (c, c / BATCH) if adjoint else (c,):
        r = round(cc)
        if abs(cc - r) < 1e-9 and r > 1 and r in widths:
            return f"a missing 1/{widths[r]}: the loss is the mean over the {r} outputs too"
        inv = 1 / cc
        if abs(inv - round(inv)) < 1e-9 and round(inv) in widths and round(inv) > 1:
            return f"1/{widths[round(inv)]} once too often"
        if np.isclose(cc, 2.0):
            return "a factor 2 too many"
        if np.isclose(cc, 0.5):
            return "a missing factor 2 (the derivative of the square)"
    return f"a constant factor: yours is {c:.6g} times {st.grad}"


def _hadamard(gots, wants, st, net: Network, before, *, alternatives: bool) -> str | None:
    """Is the learner's value the right one with an activation-derivative factor missing,
    doubled or replaced by another?"""
    from symgrad.verify.check import _local_target, formula_text
    from symgrad.verify.evaluation import eval_component

    if len(wants[0].shape) != 2 or wants[0].shape[0] != BATCH or st.kind == "param":
        return None  # an activation's derivative multiplies adjoints (rows are samples)
    found = None
    for s in net.stages:
        if not is_elementwise(s) or net.size(s.width) != wants[0].shape[1]:
            continue
        local = _local_target(net, f"d{s.name}/d{s.inp}", s.name, str(s.inp))
        if len(local.free) != 1:
            continue
        shown = formula_text(local.expr).replace("[i]", "")
        facs = []
        for env in before:
            rows = [
                eval_component(
                    local.expr,
                    {
                        k: (v[r] if np.ndim(v) == 2 and np.shape(v)[0] == BATCH else v)
                        for k, v in env.items()
                    },
                    dict(net.sizes),
                    local.free,
                    local.ranges,
                )
                for r in range(BATCH)
            ]
            facs.append(np.stack(rows))
        for scale in (1.0, float(BATCH)) if not alternatives else ():
            if all(
                _same(g * f, w * scale, st.rtol, st.atol)
                for g, f, w in zip(gots, facs, wants, strict=True)
            ):
                return (
                    f"a missing Hadamard factor: the activation's derivative "
                    f"d{s.name}/d{s.inp} = {shown} (elementwise *)"
                )
            if all(
                _same(g, w * f * scale, st.rtol, st.atol)
                for g, f, w in zip(gots, facs, wants, strict=True)
            ):
                return f"an extra factor d{s.name}/d{s.inp} = {shown}: it is applied twice"
        if not alternatives:
            continue
        # another activation's derivative in its place
        zs = [env[str(s.inp)] for env in before]
        As = [env[s.name] for env in before]
        options = {
            f"{s.name}*(1 - {s.name})": [a * (1 - a) for a in As],
            f"1 - {s.name}**2": [1 - a**2 for a in As],
            f"({s.inp} > 0)": [(z > 0).astype(float) for z in zs],
            f"{s.inp}*(1 - {s.inp})": [z * (1 - z) for z in zs],
            f"1 - {s.inp}**2": [1 - z**2 for z in zs],
        }
        for text, alt in options.items():
            if "".join(text.split()) == "".join(shown.split()):
                continue
            ok = True
            for g, w, f, fa in zip(gots, wants, facs, alt, strict=True):
                with np.errstate(all="ignore"):
                    cand = w / f * fa
                if not np.all(np.isfinite(cand)) or not (
                    any(_same(g, cand * f, st.rtol, st.atol) for f in st.factors)
                ):
                    ok = False
                    break
            if ok:
                found = (
                    f"the wrong activation derivative: you multiplied by {text} where "
                    f"d{s.name}/d{s.inp} = {shown} belongs"
                )
                return found
    return found


def _rename(e: Any, old: str, new: str) -> Any:
    """``e`` with every use of the name ``old`` replaced by ``new``."""
    if isinstance(e, tuple):
        if e[:2] == ("name", old):
            return ("name", new)
        return tuple(_rename(c, old, new) for c in e)
    return e
