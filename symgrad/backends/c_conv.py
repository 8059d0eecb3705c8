"""Stage 6 (print), C target, lowering: convolution, pooling and flattening -> helper calls.

The batched forms of ``calculus/conv_form.py`` (correlation with its weight and input
gradients, sum and max pooling with theirs, channel biases and sums, flatten) become
calls of loop helpers of the generated file (``templates/c/_conv.c.j2``), one for each
node class. Arrays are (n, channels, [height,] width), row-major; a 1-d layer is a 2-d
one of height 1. Flattening is a change of shape only (the buffer is already row-major).
"""

from __future__ import annotations

import sympy as sp

from symgrad.backends.c_lower import ONE, Buf, Lowerer, Ref, Val, dim
from symgrad.ir.conv import dilation_of


def _pair(values: tuple[int, ...], fill: int) -> tuple[int, int]:
    """Two per-axis values (height, width) of a 1-d or 2-d layer."""
    return (fill, values[0]) if len(values) == 1 else (values[0], values[1])


def _ints(t) -> tuple[int, ...]:
    return tuple(int(v) for v in t)


class ConvLowerer(Lowerer):
    """The convolution nodes; mixed into ``c_nodes.StatementLowerer``."""

    def lower(self, e: sp.Expr) -> Val:  # pragma: no cover - defined by the subclass
        raise NotImplementedError

    def buffer_of(self, e: sp.Expr) -> Buf:  # pragma: no cover - defined by the subclass
        raise NotImplementedError

    def call(self, helper: str, sizes: list[str], ins: list[Buf], out: Buf) -> None:
        raise NotImplementedError  # pragma: no cover - defined by the subclass

    def _geometry(self, a: Buf, k, s, p, d) -> tuple[list[str], tuple[sp.Expr, ...]]:
        """The helper's size arguments for input ``a`` (n, C, *spatial) and the output's
        spatial shape."""
        nd = len(a.shape) - 2
        k, s, p, d = _ints(k), _ints(s), _ints(p), _ints(d) if d else (1,) * nd
        spatial = tuple(
            sp.Integer((int(m) + 2 * pp - dd * (kk - 1) - 1) // ss + 1)
            for m, kk, ss, pp, dd in zip(a.shape[2:], k, s, p, d, strict=True)
        )
        H, W = _pair(_ints(a.shape[2:]), 1)
        OH, OW = _pair(_ints(spatial), 1)
        KH, KW = _pair(k, 1)
        sh, sw = _pair(s, 1)
        ph, pw = _pair(p, 0)
        dh, dw = _pair(d, 1)
        sizes = [dim(a.shape[0]), dim(a.shape[1]), *map(str, (H, W, OH, OW, KH, KW))]
        return sizes + list(map(str, (sh, sw, ph, pw, dh, dw))), spatial

    def _flat(self, buf: Buf, shape: tuple[sp.Expr, ...]) -> Buf:
        """The same buffer read with another shape of the same size."""
        return Buf(buf.name, shape, buf.kind)

    def correlate(self, e: sp.Expr) -> Val:
        win, w = e.args
        a, wb = self.buffer_of(win.args[0]), self.buffer_of(w)
        k, st, p = win.args[1:4]
        sizes, spatial = self._geometry(a, k, st, p, dilation_of(win, 5, len(k)))
        out = self.target((a.shape[0], wb.shape[0], *spatial))
        self.call("conv", [*sizes, dim(wb.shape[0])], [a, wb], out)
        return self.read(out)

    def corr_weight_grad(self, e: sp.Expr) -> Val:
        g, win = e.args
        gb, a = self.buffer_of(g), self.buffer_of(win.args[0])
        k, st, p = win.args[1:4]
        sizes, _ = self._geometry(a, k, st, p, dilation_of(win, 5, len(k)))
        kernel = tuple(sp.Integer(v) for v in _ints(win.args[1]))
        out = self.target((gb.shape[1], a.shape[1], *kernel))
        self.call("conv_dw", [*sizes, dim(gb.shape[1])], [gb, a], out)
        return self.read(out)

    def corr_input_grad(self, e: sp.Expr) -> Val:
        g, w, s, p, size = e.args[:5]
        gb, wb = self.buffer_of(g), self.buffer_of(w)
        shape = (gb.shape[0], wb.shape[1], *(sp.Integer(v) for v in _ints(size)))
        out = self.target(shape)
        probe = Buf(out.name, shape, "aux")
        sizes, _ = self._geometry(probe, wb.shape[2:], s, p, dilation_of(e, 5, len(s)))
        self.call("conv_dx", [*sizes, dim(wb.shape[0])], [gb, wb], out)
        return self.read(out)

    def channel_bias(self, e: sp.Expr) -> Val:
        b, nd = e.args
        buf = self.buffer_of(b)
        shape = (buf.shape[0], *([ONE] * int(nd)))
        self.used.add(buf.name)
        return Val(self.place(Ref(self._flat(buf, shape), tuple(range(len(shape))))), shape)

    def channel_sum(self, e: sp.Expr) -> Val:
        val = self.lower(e.args[0])
        axes = {0, *range(2, len(val.shape))}
        return self.reduce(val, axes, "+", False)

    def _pool(self, helper: str, a: Buf, k, s, p, extra: list[Buf], out_shape=None) -> Val:
        sizes, spatial = self._geometry(a, k, s, p, None)
        shape = out_shape or (a.shape[0], a.shape[1], *spatial)
        out = self.target(shape)
        self.call(helper, sizes[:8] + sizes[8:12], [a, *extra], out)
        return self.read(out)

    def window_sum(self, e: sp.Expr) -> Val:
        a, k, s, p = e.args
        return self._pool("sumpool", self.buffer_of(a), k, s, p, [])

    def window_max(self, e: sp.Expr) -> Val:
        a, k, s, p = e.args
        return self._pool("maxpool", self.buffer_of(a), k, s, p, [])

    def window_sum_grad(self, e: sp.Expr) -> Val:
        g, k, s, p, size = e.args
        gb = self.buffer_of(g)
        shape = (gb.shape[0], gb.shape[1], *(sp.Integer(v) for v in _ints(size)))
        out = self.target(shape)
        sizes, _ = self._geometry(Buf(out.name, shape, "aux"), k, s, p, None)
        self.call("sumpool_dx", sizes[:8] + sizes[8:12], [gb], out)
        return self.read(out)

    def window_max_grad(self, e: sp.Expr) -> Val:
        g, a, k, s, p, _size, top = e.args
        gb, ab, tb = self.buffer_of(g), self.buffer_of(a), self.buffer_of(top)
        out = self.target(ab.shape)
        sizes, _ = self._geometry(ab, k, s, p, None)
        self.call("maxpool_dx", sizes[:8] + sizes[8:12], [gb, ab, tb], out)
        return self.read(out)

    def flatten(self, e: sp.Expr) -> Val:
        a = self.buffer_of(e.args[0])
        shape = (a.shape[0], sp.Mul(*a.shape[1:]))
        self.used.add(a.name)
        return Val(self.place(Ref(self._flat(a, shape), (0, 1))), shape)

    def unflatten(self, e: sp.Expr) -> Val:
        g = self.buffer_of(e.args[0])
        shape = (g.shape[0], *(sp.Integer(v) for v in _ints(e.args[1])))
        self.used.add(g.name)
        return Val(self.place(Ref(self._flat(g, shape), tuple(range(len(shape))))), shape)
