"""Checks of a user's map at build time: summation ranges and the positions it reads.

A map's expression reads arrays (its input, earlier outputs, parameters) at subscripts
that are integer-affine in its indices (``a[i + h]``, ``a[2*i + 1]``, ``x[t, s*i + j - p]``).
Here, before any derivative is taken:

- a reduction written without a range (``sum(e, j)`` in a spec) gets the extent of the
  axes that ``j`` subscripts on its own; they must agree;
- every read is checked against the axis it subscripts: the smallest and the largest
  position over the ranges of its indices must lie inside the axis, unless the map
  declares zero padding (then a read outside is a zero, as conv padding reads).
"""

from __future__ import annotations

from collections.abc import Mapping

import sympy as sp

from symgrad.errors import SpecError
from symgrad.ir.reductions import ReduceMax, ReduceMin

#: The upper limit a spec's ``sum(e, j)`` gets before the map knows ``j``'s extent:
#: ``Sum(e, (j, 0, AUTO - 1))``; :func:`infer_ranges` replaces it.
AUTO = sp.Symbol("auto_extent", integer=True, positive=True)

#: What a map may pad with outside its arrays.
PADDINGS = ("none", "zeros")


def _limits(e: sp.Basic) -> list[tuple[sp.Symbol, sp.Expr, sp.Expr]]:
    if isinstance(e, sp.Sum):
        return [(v, lo, hi) for v, lo, hi in e.limits]
    if isinstance(e, ReduceMax | ReduceMin):
        return [(e.args[1], sp.S.Zero, e.args[2])]
    return []


def _value(e: sp.Expr, sizes: Mapping[sp.Symbol, int]) -> sp.Expr:
    return sp.sympify(e).xreplace({s: sp.Integer(v) for s, v in sizes.items()})


def infer_ranges(
    body: sp.Expr,
    dims: Mapping[sp.Basic, tuple[sp.Expr, ...]],
    sizes: Mapping[sp.Symbol, int],
    layer: int,
) -> sp.Expr:
    """Replace each reduction's ``AUTO`` extent by the extent of the axes its index
    subscripts alone (``W[e, j]``: axis 1 of W); those must agree."""
    if not body.has(AUTO):
        return body

    def extent(summand: sp.Expr, var: sp.Symbol) -> sp.Expr:
        found: dict[sp.Expr, tuple[sp.Expr, str]] = {}
        # in a fixed order: every copy of a summand (a softmax's shift repeats it) gets
        # the same spelling of its extent
        for ind in sorted(summand.atoms(sp.Indexed), key=sp.default_sort_key):
            shape = dims.get(ind.base)
            if shape is None or len(shape) != len(ind.indices):
                continue
            for pos, (ix, dim) in enumerate(zip(ind.indices, shape, strict=True)):
                if ix == var:
                    found.setdefault(_value(dim, sizes), (dim, f"axis {pos} of {ind.base}"))
        if not found:
            raise SpecError(
                f"layer {layer}: cannot infer the range of index {var} (it subscripts no "
                f"axis on its own); write sum(..., ({var}, 0, last))"
            )
        if len(found) > 1:
            said = ", ".join(f"{w} has size {v}" for v, (_, w) in found.items())
            raise SpecError(
                f"layer {layer}: index {var} subscripts axes of different sizes: {said}"
            )
        return next(iter(found.values()))[0]

    def walk(e: sp.Basic) -> sp.Basic:
        if not e.args:
            return e
        args = [walk(a) for a in e.args]
        e = e.func(*args) if args != list(e.args) else e
        if isinstance(e, sp.Sum) and any(hi.has(AUTO) for _, _, hi in e.limits):
            lims = []
            for v, lo, hi in e.limits:
                lims.append(
                    (v, lo, hi.xreplace({AUTO: extent(e.function, v)}) if hi.has(AUTO) else hi)
                )
            return sp.Sum(e.function, *lims)
        if isinstance(e, ReduceMax | ReduceMin) and e.args[2].has(AUTO):
            b, v, hi = e.args
            return e.func(b, v, hi.xreplace({AUTO: extent(b, v)}))
        return e

    return walk(body)


def _span(ix: sp.Expr, rng: Mapping[sp.Symbol, sp.Expr]) -> tuple[int, int] | None:
    """The smallest and largest value of the affine subscript ``ix`` over ``rng``."""
    ix = sp.expand(ix)
    lo = hi = sp.S.Zero
    rest = ix
    for v in ix.free_symbols:
        if v not in rng:
            return None
        c = ix.coeff(v, 1)
        if not c.is_Integer or not sp.sympify(rng[v]).is_Integer:
            return None  # a symbolic width: checked once the sizes are concrete
        top = c * (rng[v] - 1)
        lo, hi = lo + min(0, top), hi + max(0, top)
        rest = rest - c * v
    rest = sp.expand(rest)
    if not rest.is_Integer:
        return None
    lo, hi = lo + rest, hi + rest
    return (int(lo), int(hi)) if lo.is_Integer and hi.is_Integer else None


def check_reads(
    body: sp.Expr,
    dims: Mapping[sp.Basic, tuple[sp.Expr, ...]],
    ranges: Mapping[sp.Symbol, sp.Expr],
    sizes: Mapping[sp.Symbol, int],
    layer: int,
    padding: str = "none",
) -> None:
    """Every read of a known array takes one subscript per axis, and (without zero
    padding) each subscript stays inside its axis for every value of its indices."""

    def walk(e: sp.Basic, rng: dict[sp.Symbol, sp.Expr]) -> None:
        lims = _limits(e)
        if lims:
            inner = dict(rng)
            for var, lo, hi in lims:
                inner[var] = _value(hi - lo + 1, sizes)
            for arg in (e.function,) if isinstance(e, sp.Sum) else (e.args[0],):
                walk(arg, inner)
            return
        if isinstance(e, sp.Indexed):
            shape = dims.get(e.base)
            if shape is None:
                return
            if len(shape) != len(e.indices):
                raise SpecError(
                    f"layer {layer}: {e.base} takes {len(shape)} "
                    f"ind{'ex' if len(shape) == 1 else 'ices'}, got {len(e.indices)}"
                )
            for pos, (ix, dim) in enumerate(zip(e.indices, shape, strict=True)):
                _check_axis(e, pos, ix, _value(dim, sizes), rng, layer, padding)
            return
        for arg in e.args:
            walk(arg, rng)

    walk(body, {k: _value(v, sizes) for k, v in ranges.items()})


def _check_axis(e, pos: int, ix: sp.Expr, dim: sp.Expr, rng, layer: int, padding: str) -> None:
    span = _span(ix, rng)
    if padding == "zeros" or span is None or not dim.is_Integer:
        return
    if span[0] < 0 or span[1] > int(dim) - 1:
        what = (
            f"index {ix} runs 0..{span[1]}"
            if ix.is_Symbol
            else f"subscript {ix} reads {span[0]}..{span[1]}"
        )
        raise SpecError(
            f"layer {layer}: {what} but axis {pos} of {e.base} has positions 0..{int(dim) - 1}"
            ' (declare padding = "zeros" to read zeros outside)'
        )
