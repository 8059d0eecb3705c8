"""Reads of part of an axis, marked before the matrix form.

A user's map may read part of an array's axis (``a[i]`` for ``i < h`` of ``a``'s ``2h``,
GLU's first half). The matrix form reads whole vectors (``a``), and the batched lowering
places an array on an index's axis whole: neither is right for such a read. This pass
finds them (an index whose range differs from the extent of the axis it subscripts) and
marks the subscript ``At(i)``; an expression with a marked read keeps its component form
(``Comp``), whose lowering reads the marked positions as a gather (``calculus/einsum.py``).
Component forms shown to readers are left as they are.
"""

from __future__ import annotations

from collections.abc import Mapping

import sympy as sp

from symgrad.ir.reductions import ReduceMax, ReduceMin


class At(sp.Function):
    """The subscript ``i`` of a read of part of an axis (prints as ``i``)."""

    nargs = 1
    is_integer = True

    def _sympystr(self, printer):
        return printer._print(self.args[0])

    def _latex(self, printer):
        return printer._print(self.args[0])


def unmark(e: sp.Expr) -> sp.Expr:
    """``e`` with every ``At(i)`` replaced by ``i``."""
    if not e.has(At):
        return e
    return e.replace(lambda x: isinstance(x, At), lambda x: x.args[0])


def extents(d) -> dict[str, tuple[sp.Expr, ...]]:
    """The extent of every quantity of derivation ``d`` by name (concrete where known)."""
    net = d.network
    out: dict[str, tuple[sp.Expr, ...]] = {}
    out[str(net.input)] = tuple(net.input_shape) or (net.input_width,)
    out[str(net.loss.target)] = (net.output_width,)
    for s in net.stages:
        out[s.name] = tuple(s.shape) or (s.width,)
        for p in s.params:
            out[p.name] = tuple(p.shape)
    for st in d.steps:
        out[st.grad] = tuple(st.shape)
    vals = {k: sp.Integer(v) for k, v in net.sizes.items()}
    return {k: tuple(sp.sympify(x).xreplace(vals) for x in v) for k, v in out.items()}


def mark(
    expr: sp.Expr,
    free: tuple[sp.Symbol, ...],
    shape: tuple[sp.Expr, ...],
    ext: Mapping[str, tuple[sp.Expr, ...]],
    sizes: Mapping[sp.Symbol, int],
) -> tuple[sp.Expr, bool]:
    """``expr`` with its partial reads marked, and whether there was one."""
    # (sizes already SymPy integers, as the matrix pass keeps them, are used as they are)
    ints = all(isinstance(v, sp.Integer) for v in sizes.values())
    vals = sizes if ints else {k: sp.Integer(v) for k, v in sizes.items()}
    found = False

    def walk(e: sp.Basic, rng: dict) -> sp.Basic:
        nonlocal found
        if isinstance(e, sp.Sum):
            inner = dict(rng)
            for v, lo, hi in e.limits:
                inner[v] = sp.sympify(hi - lo + 1).xreplace(vals)
            body = walk(e.function, inner)
            return e if body is e.function else sp.Sum(body, *e.limits)
        if isinstance(e, ReduceMax | ReduceMin):
            b, v, hi = e.args
            nb = walk(b, {**rng, v: sp.sympify(hi + 1).xreplace(vals)})
            return e if nb is b else e.func(nb, v, hi)
        if isinstance(e, sp.Indexed):
            dims = ext.get(str(e.base.label))
            if dims is None or len(dims) != len(e.indices):
                return e
            new = []
            for ix, dim in zip(e.indices, dims, strict=True):
                if ix in rng and rng[ix] != dim:
                    found = True
                    new.append(At(ix))
                else:
                    new.append(ix)
            return e.base[tuple(new)] if found else e
        if not e.args:
            return e
        args = [walk(a, rng) for a in e.args]
        # an unchanged subtree is kept as it is (no partial read below it: nothing to mark)
        return e if all(n is a for n, a in zip(args, e.args, strict=True)) else e.func(*args)

    start = {f: sp.sympify(w).xreplace(vals) for f, w in zip(free, shape, strict=True)}
    out = walk(expr, start)
    return out, found
