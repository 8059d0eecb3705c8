"""Reading a component formula for ``check --formula`` (index ranges, implicit products).

The formula is read by the spec-expression parser in its formula dialect: it may call every
op of the registry by name (``relu(z1[i])``, ``step(z1[i])``), compare (``(z1[i] > 0)``,
``[z1[i] > 0]``: the step of the difference) and juxtapose factors (``a1[i](1 - a1[i])``).
"""

from __future__ import annotations

import re

import sympy as sp

from symgrad.errors import SpecError
from symgrad.frontend.expr_parser import parse_expression
from symgrad.ir.indices import SAMPLE_NAMES, idx
from symgrad.ir.network import Network
from symgrad.verify.check_result import SUM_INDICES, TENSOR_INDICES
from symgrad.verify.check_targets import _Target


def _parse(
    text: str,
    target: _Target,
    shapes: dict[str, tuple[int, ...]],
    net: Network,
    samples: bool = False,
):
    arrays = {nm: sp.IndexedBase(nm, shape=shp) for nm, shp in shapes.items() if shp}
    scalars: dict[str, sp.Expr] = {str(s): sp.Integer(v) for s, v in net.sizes.items()}
    # 0-dim parameters (a learnable temperature) are written bare
    scalars.update({nm: sp.Symbol(nm, real=True) for nm, shp in shapes.items() if not shp})
    free_names = [str(f) for f in target.free]
    if target.accept_i and "i" not in free_names:
        free_names.append("i")
    placeholders = {}
    indices: dict[str, tuple[sp.Symbol, sp.Expr]] = {}
    for nm in free_names:
        indices[nm] = (idx(nm), sp.Integer(1))
    tensor = bool(net.input_shape)
    extra = (TENSOR_INDICES if tensor else ()) + (SAMPLE_NAMES if samples else ())
    for nm in SUM_INDICES + extra:
        if nm in indices:
            continue
        ph = sp.Symbol(f"_range_{nm}", integer=True, positive=True)
        placeholders[ph] = nm
        indices[nm] = (idx(nm), ph)
    expr = parse_expression(
        text,
        scalars=scalars,
        arrays=arrays,
        indices=indices,
        free_indices=free_names,
        field="--formula",
        index_arithmetic=tensor,
        formula=True,
    )
    if target.accept_i:
        used = {s.name for s in _free_symbols(expr)}
        if {"i", "p"} <= used:
            raise SpecError(
                f"{target.name} has one free index: use p (or i), not both", field="--formula"
            )
        expr = expr.xreplace({idx("i"): target.free[0]})
    return expr, placeholders


_SUBSCRIPT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\s*\[")


def _free_symbols(expr: sp.Expr) -> set[sp.Symbol]:
    return {s for s in expr.free_symbols if s.is_integer and not s.is_positive}


def _bind_ranges(expr: sp.Expr, placeholders, shapes) -> tuple[sp.Expr, list[str]]:
    """Give each ``sum(., k)`` the length of the array dimension ``k`` subscripts."""
    problems: list[str] = []

    def walk(e):
        if isinstance(e, sp.Sum):
            body = walk(e.function)
            limits = []
            for var, lo, hi in e.limits:
                ph = next((p for p in hi.free_symbols if p in placeholders), None)
                if ph is None:
                    limits.append((var, lo, hi))
                    continue
                uses = [
                    (str(t.base.label), pos, shapes[str(t.base.label)][pos])
                    for t in body.atoms(sp.Indexed)
                    for pos, s in enumerate(t.indices)
                    if s == var
                ]
                if not uses:
                    raise SpecError(
                        f"sum over {var}: {var} subscripts no array, so its range is unknown",
                        field="--formula",
                    )
                widths = sorted({u[2] for u in uses})
                if len(widths) > 1:
                    what = ", ".join(f"{a} (axis {p}: length {w})" for a, p, w in uses)
                    problems.append(
                        f"shapes do not match: the sum over {var} runs over arrays of "
                        f"different lengths: {what}"
                    )
                limits.append((var, 0, uses[0][2] - 1))
            return sp.Sum(body, *limits)
        if not e.args or not e.has(sp.Sum):  # rebuilding re-evaluates: only where needed
            return e
        return e.func(*[walk(a) for a in e.args])

    return walk(expr), problems


def _free_index_problems(expr, target: _Target, shapes) -> list[str]:
    out = []
    for t in expr.atoms(sp.Indexed):
        for pos, s in enumerate(t.indices):
            if s in target.ranges and shapes[str(t.base.label)][pos] != target.ranges[s]:
                out.append(
                    f"shapes do not match: {t} uses {s} (0..{target.ranges[s] - 1}) on axis "
                    f"{pos} of {t.base.label}, which has length {shapes[str(t.base.label)][pos]}"
                )
    return out
