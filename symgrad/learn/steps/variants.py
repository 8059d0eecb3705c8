"""The classic slips as edits of the learner's own line: each edit undoes one slip."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import sympy as sp

from symgrad.ir.naming import split
from symgrad.ir.network import Network
from symgrad.ir.ops import OPS, X
from symgrad.learn.steps.ops import BARE
from symgrad.learn.steps.parse import LearnerLine
from symgrad.learn.steps.printer import unparse
from symgrad.verify.stages import is_elementwise


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


def _function_slips(e: tuple, made: Mapping[str, str]) -> Iterator[tuple[tuple, str]]:
    """An activation applied twice (``sigmoid(a2)``, ``a2`` already ``sigmoid(z2)``), or a
    function where its derivative belongs (``relu(z1)`` for ``relu'(z1)``)."""
    if e[0] not in ("bare", "helper"):
        return
    fn, args = e[1], (e[2],) if e[0] == "bare" else e[2]
    if len(args) != 1:
        return
    arg = args[0]
    inner = made.get(arg[1]) if arg[0] == "name" else None
    if inner is not None:
        yield arg, f"{fn} applied twice: {arg[1]} is already {inner}, use {arg[1]} itself"
    else:
        yield arg, f"an extra {fn}(): {unparse(e)} should be {unparse(arg)}"
    deriv = derivative_tree(fn, arg)
    if deriv is not None:
        yield (
            deriv,
            (
                f"{unparse(e)} where its derivative belongs: {fn}'({unparse(arg)}) = "
                f"{unparse(deriv)}"
            ),
        )


def derivative_tree(fn: str, arg: tuple) -> tuple | None:
    """The derivative of the registry function ``fn`` at ``arg``, as a steps-file tree
    (``relu`` -> ``(z1 > 0)``, ``tanh`` -> ``1 - tanh(z1)**2``), from the op's own rule."""
    op = next((o for o in OPS.values() if o.name == fn), None)
    if op is None or fn in ("max", "min"):
        return None
    try:
        d = sp.diff(op.func(X), X)
    except (TypeError, ValueError):
        return None
    return _tree(d, arg)


def _tree(e: sp.Expr, arg: tuple) -> tuple | None:
    if e == X:
        return arg
    if e.is_Number:
        return ("num", float(e))
    op = next((o for o in OPS.values() if o.func is e.func), None)
    if op is not None and len(e.args) == 1:
        inner = _tree(e.args[0], arg)
        if inner is None:
            return None
        if op.name == "step":  # the Iverson bracket, as symgrad prints relu'
            return ("bin", ">", inner, ("num", 0.0))
        return ("bare", op.name, inner) if op.name in BARE else None
    if isinstance(e, (sp.Add, sp.Mul)):
        found = [_tree(a, arg) for a in e.args]
        parts = [p for p in found if p is not None]
        if len(parts) != len(found):
            return None
        out = parts[0]
        for p in parts[1:]:
            if isinstance(e, sp.Add) and p[0] == "neg":
                out = ("bin", "-", out, p[1])
            else:
                out = ("bin", "+" if isinstance(e, sp.Add) else "*", out, p)
        return _neg_first(out)
    if isinstance(e, sp.Pow) and e.exp.is_Number:
        base = _tree(e.base, arg)
        return None if base is None else ("bin", "**", base, ("num", float(e.exp)))
    return None


def _neg_first(t: tuple) -> tuple:
    """``-1 * x`` as ``-x``."""
    if t[0] == "bin" and t[1] == "*" and t[2] == ("num", -1.0):
        return ("neg", t[3])
    return t


def _variants(
    e: tuple, names: Mapping[str, list[tuple[str, str]]], made: Mapping[str, str] | None = None
) -> Iterator[tuple[tuple, str]]:
    """Single edits of the tree, each with the slip it would undo (``made`` maps a name to
    the activation it is the output of: ``a2 -> sigmoid(z2)``)."""
    made = made or {}
    kind = e[0]
    yield from _function_slips(e, made)
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
    if kind == "bin" and e[1] == "**" and e[3][0] == "num":
        p = e[3][1]
        for q in (p - 1, p + 1):
            yield (
                ("bin", "**", e[2], ("num", q)),
                f"the power rule: d/dx x**n = n*x**(n - 1), so the exponent here is {_num(q)}",
            )
    for k, child in enumerate(e):
        if isinstance(child, tuple) and child and isinstance(child[0], str):
            for v, why in _variants(child, names, made):
                yield (*e[:k], v, *e[k + 1 :]), why
        elif isinstance(child, tuple) and child and isinstance(child[0], tuple):
            for j, arg in enumerate(child):
                for v, why in _variants(arg, names, made):
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
            out.setdefault(A, []).append(
                (
                    Z,
                    f"{A} where {Z} belongs (a for z): the activation's derivative is taken "
                    f"at {Z}, and {A} is already the activation of {Z}",
                )
            )
    forward = [str(net.input), *(s.name for s in net.stages)]
    params = {p.name for p in net.params}
    for name in forward:
        for other in forward:
            if other != name:
                for case in (str.lower, str.upper):
                    used, right = case(name), case(other)
                    if used in params or right in params:  # bilinear's A2 is no batch of a2
                        continue
                    out.setdefault(used, []).append(
                        (right, f"the wrong layer's value: {used} where {right} belongs")
                    )
    for p in net.params:  # another layer's parameter of the same kind: W1 for W2
        base, layer = split(p.name)
        for q in net.params:
            if q.name != p.name and split(q.name)[0] == base:
                why = f"the wrong layer's weights: {p.name} where {q.name} belongs"
                out.setdefault(p.name, []).append((q.name, why))
    out.setdefault("Y", []).append(("yhat", "Y where yhat belongs"))
    out.setdefault("y", []).append(("yhat", "y where yhat belongs"))
    return out


def _edits(
    group: list[LearnerLine], st, swaps, made: Mapping[str, str]
) -> Iterator[tuple[list[LearnerLine], str]]:
    """The step's lines with one classic slip undone, each with the slip's name."""
    top = group[0].expr
    if len(group) == 1 and top[0] == "bin" and top[1] == "@":
        for variant, why in _variants(top, {}):
            if why.startswith("transposes in the product"):
                yield [replace(group[0], op="=", expr=variant)], why
    if len(group) == 1:
        whole = [replace(group[0], expr=("T", group[0].expr))]
        yield whole, f"a transpose: yours is the transpose of {st.grad}"
        summed = ("reduce", "sum", group[0].expr, {"axis": 0})
        yield (
            [replace(group[0], expr=summed)],
            (
                "a missing sum over the samples: the parameter is broadcast over the rows of the "
                "batch, so its gradient adds them up (.sum(axis=0))"
            ),
        )

    for k, s in enumerate(group):  # a function's slips first: they say the most
        for variant, why in _variants(s.expr, {}, made):
            if "applied twice" in why or "where its derivative belongs" in why:
                yield [*group[:k], replace(s, expr=variant), *group[k + 1 :]], why
    used = {n for s in group for n in _names(s.expr)}
    for old in sorted(used):  # a name swapped everywhere in the step (z1*(1 - z1))
        for other, why in swaps.get(old, []):
            yield [replace(s, expr=_rename(s.expr, old, other)) for s in group], why
    for k, s in enumerate(group):
        for variant, why in _variants(s.expr, swaps, made):
            yield [*group[:k], replace(s, expr=variant), *group[k + 1 :]], why


def column_sum_edits(group: list[LearnerLine]) -> Iterator[tuple[list[LearnerLine], str]]:
    """A parameter's gradient left per sample where the samples are columns (tried last:
    in rows, the other axes say more)."""
    if len(group) == 1:
        summed = ("reduce", "sum", group[0].expr, {"axis": 1, "keepdims": True})
        yield (
            [replace(group[0], expr=summed)],
            (
                "a missing sum over the samples: the parameter is broadcast over the columns "
                "of the batch, so its gradient adds them up (.sum(axis=1, keepdims=True))"
            ),
        )


def _names(e: Any) -> set[str]:
    if isinstance(e, tuple):
        if e and e[0] == "name":
            return {e[1]}
        return set().union(*(_names(c) for c in e)) if e else set()
    return set()


def _rename(e: Any, old: str, new: str) -> Any:
    """``e`` with every use of the name ``old`` replaced by ``new``."""
    if isinstance(e, tuple):
        if e[:2] == ("name", old):
            return ("name", new)
        return tuple(_rename(c, old, new) for c in e)
    return e
