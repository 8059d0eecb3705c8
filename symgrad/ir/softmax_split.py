"""A tensor map whose expression is a softmax over one of its indices, split in two.

``softmax(e, u)`` in a map reads ``exp(e - m) / sum_u' exp(e[u -> u'] - m)`` (``m`` the
maximum over ``u``, see ``reductions.ShiftMax``). When that is the whole expression of a
map with several axes (attention weights), the map becomes two stages found by structure:
the scores ``z<l>[t, u] = e`` and the softmax ``a<l>[t, u]`` of ``z<l>`` over ``u``. The
backward pass then states the scores' adjoint once (``delta<l> = P * (dP - rowsum(P dP))``)
instead of differentiating the exponentials again for every input of ``e``.

A vector map that is a softmax over its index (``softmax(a1[i], i)``,
``softmax(sum(V[i, j] * a1[j], j), i)``) becomes the softmax stage of the built-in layer,
``exp(z[i]) / sum_j exp(z[j])`` (after a scores stage ``z[i] = e`` unless ``e`` reads the
input as it is): the same stable form and, before a cross-entropy loss, the same fused
delta ``yhat - y``, found by structure.
"""

from __future__ import annotations

from dataclasses import replace

import sympy as sp

from symgrad.ir.indices import idx
from symgrad.ir.network import Stage
from symgrad.ir.reductions import ShiftMax


def _parts(stage: Stage, indices: tuple) -> tuple[sp.Expr, sp.Symbol, sp.Expr] | None:
    """``(e, u, last)`` when ``stage.body`` is the softmax of ``e`` over an index ``u`` of
    ``indices``."""
    factors = sp.Mul.make_args(stage.body)
    if len(factors) != 2:
        return None
    num = [f for f in factors if isinstance(f, sp.exp)]
    den = [f for f in factors if f.is_Pow and f.exp == -1 and isinstance(f.base, sp.Sum)]
    if len(num) != 1 or len(den) != 1 or len(den[0].base.limits) != 1:
        return None
    arg = num[0].args[0]
    shifts = [t for t in sp.Add.make_args(arg) if isinstance(-t, ShiftMax)]
    if len(shifts) != 1:
        return None
    shift = -shifts[0]
    e = arg + shift
    body, over, last = shift.args
    for u in indices:
        if e.has(u) and body == e.xreplace({u: over}):
            s = den[0].base
            var, lo, hi = s.limits[0]
            if lo == 0 and hi == last and s.function == sp.exp(arg.xreplace({u: var})):
                return e, u, last
    return None


def split_softmax(stage: Stage) -> list[Stage]:
    """``[scores, softmax]`` for a tensor map that is a softmax over one of its indices,
    else ``[stage]``."""
    if not stage.indices:
        return _split_vector(stage)
    parts = _parts(stage, stage.indices)
    if parts is None:
        return [stage]
    e, u, last = parts
    z = sp.IndexedBase(f"z{stage.layer}", real=True)
    scores = replace(stage, out=z, body=e)
    zi = z[stage.indices]
    over, dummy = sp.Symbol(f"{u}__", integer=True), sp.Symbol(f"{u}_", integer=True)
    shifted = zi - ShiftMax(zi.xreplace({u: over}), over, last)
    body = sp.exp(shifted) / sp.Sum(sp.exp(shifted.xreplace({u: dummy})), (dummy, 0, last))
    soft = Stage(
        stage.out,
        z,
        stage.width,
        stage.width,
        body,
        stage.layer,
        "map",
        "softmax",
        indices=stage.indices,
        shape=stage.shape,
        in_shape=stage.shape,
        attrs=(("form", "component"),),
    )
    return [scores, soft]


def _split_vector(stage: Stage) -> list[Stage]:
    """``[scores?, softmax]`` for a vector map that is a softmax over its index, with the
    built-in softmax layer's body; else ``[stage]``."""
    parts = _parts(stage, (stage.index,))
    if parts is None or stage.sample is not None:
        return [stage]
    e, u, last = parts
    scores: list[Stage] = []
    z = stage.inp
    if e != stage.inp[u]:
        z = sp.IndexedBase(f"z{stage.layer}", real=True)
        scores = [replace(stage, out=z, body=e)]
    j = idx("j") if u != idx("j") else idx("k")
    body = sp.exp(z[u]) / sp.Sum(sp.exp(z[j]), (j, 0, last))
    soft = Stage(stage.out, z, stage.width, stage.width, body, stage.layer, "map", "softmax")
    return [*scores, soft]
