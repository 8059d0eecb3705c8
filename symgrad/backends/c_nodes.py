"""Stage 6 (print), C target, lowering: each node of a batched expression -> loops or a helper call.

:class:`StatementLowerer` walks one statement's expression (``c_lower.Lowerer`` holds
the buffers, placeholders and the loop printing): elementwise nodes are rebuilt over
placeholders (one element each), the layout nodes of ``calculus/layout.py`` and the
component fallback's nodes of ``calculus/einsum.py`` become reductions fused with their
argument, matrix-product and softmax helper calls, or index arithmetic. Which node is
which is decided by its class, never by what a layer or loss is called.
"""

from __future__ import annotations

import re

import sympy as sp

from symgrad.backends.c_conv import ConvLowerer
from symgrad.backends.c_lower import (
    ONE,
    REFUSED,
    Buf,
    Gathered,
    Index,
    Ref,
    Val,
    dim,
)
from symgrad.backends.c_printer import ELEMENTWISE_NODES
from symgrad.calculus import conv_form as cf
from symgrad.calculus.einsum import (
    Arange,
    AxisMax,
    AxisMin,
    AxisSoftmax,
    AxisSum,
    Delta,
    Einsum,
    Full,
    Gather,
    IndexDivides,
    IndexIn,
    Masked,
    Place,
    ShareMax,
    ShareMin,
)
from symgrad.calculus.layout import BMatMul, BOuter, ColSum, N, RowSum
from symgrad.calculus.stability import LogSumExp, RowMax, Softmax, Total
from symgrad.errors import SpecError
from symgrad.ir.ops import op_of

ELEMENTWISE = (*ELEMENTWISE_NODES, sp.Piecewise)

#: The batch size as a number in the generated code (a local of each function).
NREAL = "nr"


class StatementLowerer(ConvLowerer):
    """Lowers one statement after another into the body of one C function."""

    def lower(self, e: sp.Expr) -> Val:
        if e == N:
            self.used.add(NREAL)
            return Val(sp.Symbol(NREAL), ())
        if e.is_Symbol:
            return self.read(self.var(e.name))
        if e.is_Number or not e.args:
            return Val(e, ())
        handler = _NODES.get(type(e))
        if handler is not None:
            return handler(self, e)
        if type(e) in REFUSED:
            raise SpecError(
                f"the C target does not support {REFUSED[type(e)]} "
                f"({type(e).__name__}); use --target numpy"
            )
        if isinstance(e, sp.Function) and op_of(e) is None and not isinstance(e, ELEMENTWISE):
            raise SpecError(f"the C target cannot lower the array operation {type(e).__name__}")
        shape, vals = self.broadcast([self.lower(a) for a in e.args])
        return Val(e.func(*[v.expr for v in vals]), shape)

    def var(self, name: str) -> Buf:
        try:
            return self.vars[name]
        except KeyError:
            raise SpecError(f"the C target found no array named '{name}'") from None

    def buffer_of(self, e: sp.Expr) -> Buf:
        return self.materialise(self.lower(e))

    # -- matrix products ------------------------------------------------------------
    def bmatmul(self, e: BMatMul) -> Val:
        v, w, t = e.args
        a, b = self.buffer_of(v), self.buffer_of(w)
        rows, inner = a.shape
        cols = b.shape[0] if t != 0 else b.shape[1]
        out = self.target((rows, cols))
        kind = "nt" if t != 0 else "nn"
        self.call(f"mm_{kind}", [dim(rows), dim(cols), dim(inner)], [a, b], out)
        return self.read(out)

    def bouter(self, e: BOuter) -> Val:
        a, b = self.buffer_of(e.args[0]), self.buffer_of(e.args[1])
        out = self.target((a.shape[1], b.shape[1]))
        self.call("mm_tn", [dim(a.shape[0]), dim(a.shape[1]), dim(b.shape[1])], [a, b], out)
        return self.read(out)

    def call(self, helper: str, sizes: list[str], ins: list[Buf], out: Buf) -> None:
        self.printer.helpers.add(helper)
        for b in ins:
            self.used.add(b.name)
        self.used.add(out.name)
        args = ", ".join([*sizes, *(b.name for b in ins), out.name])
        self.emit([f"{self.printer.prefix}_{helper}({args});"])

    # -- row-wise helpers -----------------------------------------------------------
    def rowwise(self, e: sp.Expr, helper: str, keep: bool) -> Val:
        a = self.buffer_of(e.args[0])
        rows, cols = a.shape
        out = self.target((rows, cols) if keep else (rows, ONE))
        self.call(helper, [dim(rows), dim(cols)], [a], out)
        return self.read(out)

    def softmax(self, e: Softmax) -> Val:
        return self.rowwise(e, "softmax", True)

    def logsumexp(self, e: LogSumExp) -> Val:
        return self.rowwise(e, "logsumexp", False)

    # -- reductions -----------------------------------------------------------------
    def rowsum(self, e: RowSum) -> Val:
        val = self.lower(e.args[0])
        return self.reduce(val, {len(val.shape) - 1}, "+", True)

    def rowmax(self, e: RowMax) -> Val:
        val = self.lower(e.args[0])
        return self.reduce(val, {len(val.shape) - 1}, "max", True)

    def colsum(self, e: ColSum) -> Val:
        return self.reduce(self.lower(e.args[0]), {0}, "+", False)

    def total(self, e: Total) -> Val:
        val = self.lower(e.args[0])
        return self.reduce(val, set(range(len(val.shape))), "+", False)

    def axis(self, e: sp.Expr) -> Val:
        kind = {AxisSum: "+", AxisMax: "max", AxisMin: "min"}[type(e)]
        return self.reduce(self.lower(e.args[0]), {int(e.args[1])}, kind, False)

    def share(self, e: sp.Expr) -> Val:
        """The arg-max (arg-min) indicator along an axis, ties sharing equally."""
        inner = e.args[0] if isinstance(e, ShareMax) else -e.args[0]
        v = self.read(self.materialise(self.lower(inner)))
        ax = int(e.args[1])
        m = self.reduce(v, {ax}, "max", True)
        hit = sp.Piecewise((ONE, sp.Eq(v.expr, m.expr)), (sp.S.Zero, True))
        count = self.reduce(Val(hit, v.shape), {ax}, "+", True)
        shape, (h, c) = self.broadcast([Val(hit, v.shape), count])
        return Val(h.expr / c.expr, shape)

    def axis_softmax(self, e: AxisSoftmax) -> Val:
        """The stable softmax along an axis: exp(v - max) / sum(exp(v - max))."""
        v = self.read(self.materialise(self.lower(e.args[0])))
        ax = int(e.args[1])
        m = self.reduce(v, {ax}, "max", True)
        ex = self.read(self.materialise(Val(sp.exp(v.expr - m.expr), v.shape)))
        total = self.reduce(ex, {ax}, "+", True)
        return Val(ex.expr / total.expr, v.shape)

    # -- the component fallback: placed arrays, index values, einsum ------------------
    def placed(self, e: Place) -> Val:
        sym, pos, ndim, mine = e.args
        buf = self.var(sym.name)
        self.used.add(buf.name)
        axes = ([0] if int(mine) else []) + [int(q) for q in pos]
        shape = [ONE] * int(ndim)
        for d, ax in enumerate(axes):
            shape[ax] = buf.shape[d]
        if buf.kind == "local":
            return Val(sp.Symbol(buf.name), tuple(shape))
        return Val(self.place(Ref(buf, tuple(axes))), tuple(shape))

    def arange(self, e: Arange) -> Val:
        size, pos, ndim = e.args
        shape = [ONE] * int(ndim)
        shape[int(pos)] = size
        return Val(self.place(Index(int(pos))), tuple(shape))

    def delta(self, e: Delta) -> Val:
        a, pa, b, pb, ndim = e.args
        shape = [ONE] * int(ndim)
        shape[int(pa)], shape[int(pb)] = a, b
        return Val(self.place(Index(int(pa), int(pb))), tuple(shape))

    def full(self, e: Full) -> Val:
        shape = tuple(e.args[1])
        val = self.lift(self.lower(e.args[0]), len(shape))
        return Val(val.expr, shape)

    # -- index arithmetic: reads at computed positions, index conditions -------------
    def gather(self, e: Gather) -> Val:
        """``a[:, i + h]``: the positions are index arrays over the scope's axes (the
        sample axis, where the array has one, leads); a read outside the array is 0."""
        sym, pos, mine, *scope = e.args
        buf = self.var(sym.name)
        self.used.add(buf.name)
        shape, vals = self.broadcast([self.lower(p) for p in pos])
        if scope:  # one fixed entry, broadcast over the scope's axes
            shape = (ONE,) * int(scope[0])
        vals = [self.lift(v, len(shape)) for v in vals]
        if not int(mine):
            return Val(self.place(Gathered(buf, None, tuple(v.expr for v in vals))), shape)
        vals = [self.lift(v, len(shape) + 1) for v in vals]
        ref = Gathered(buf, 0, tuple(v.expr for v in vals))
        return Val(self.place(ref), (buf.shape[0], *shape))

    def index_in(self, e: IndexIn) -> Val:
        v = self.lower(e.args[0])
        lo, hi = e.args[1], e.args[2]
        return Val(sp.Piecewise((ONE, sp.And(v.expr >= lo, v.expr <= hi)), (0, True)), v.shape)

    def index_divides(self, e: IndexDivides) -> Val:
        v = self.lower(e.args[0])
        return Val(sp.Piecewise((ONE, _Divides(v.expr, e.args[1])), (0, True)), v.shape)

    def masked(self, e: Masked) -> Val:
        """``e`` where every index condition holds, else 0."""
        conds, body = e.args
        vals = [self.lower(body), *(self.lower(c) for c in conds)]
        shape, vals = self.broadcast(vals)
        tests = [v.expr.args[0].cond for v in vals[1:]]  # each condition's Piecewise test
        return Val(sp.Piecewise((vals[0].expr, sp.And(*tests)), (0, True)), shape)

    def einsum(self, e: Einsum) -> Val:
        spec, slots, *ops = e.args
        ins, out = spec.name.split("->")
        subs = ins.split(",")
        bufs = [self.var(o.name) for o in ops]
        sizes: dict[str, sp.Expr] = {}
        for sub, buf in zip(subs, bufs, strict=True):
            sizes.update(zip(sub, buf.shape, strict=True))
        summed = sorted(set("".join(subs)) - set(out))
        order = list(out) + summed  # output axes outermost, summed axes innermost
        shape = tuple(sizes[c] for c in order)
        factors = []
        for sub, buf in zip(subs, bufs, strict=True):
            if buf.kind == "local":
                factors.append(sp.Symbol(buf.name))
                continue
            self.used.add(buf.name)
            factors.append(self.place(Ref(buf, tuple(order.index(c) for c in sub))))
        val = self.reduce(
            Val(sp.Mul(*factors), shape), set(range(len(out), len(order))), "+", False
        )
        marks = re.findall(r":|None", slots.name)
        if not marks:
            return val
        r = self.refs[val.expr.name]
        assert isinstance(r, Ref)
        kept = [k for k, m in enumerate(marks) if m == ":"]
        full = tuple(r.buf.shape[kept.index(k)] if m == ":" else ONE for k, m in enumerate(marks))
        return Val(self.place(Ref(r.buf, tuple(kept))), full)


class _Divides(sp.Function):
    """``d`` divides the index value ``e`` (a whole number held in a float)."""

    nargs = 2
    is_Boolean = True

    def _ccode(self, printer) -> str:
        e, d = (printer._print(a) for a in self.args)
        return f"(fmod({e}, {d}) == 0)"


_NODES = {
    Gather: StatementLowerer.gather,
    IndexIn: StatementLowerer.index_in,
    IndexDivides: StatementLowerer.index_divides,
    Masked: StatementLowerer.masked,
    BMatMul: StatementLowerer.bmatmul,
    BOuter: StatementLowerer.bouter,
    Softmax: StatementLowerer.softmax,
    LogSumExp: StatementLowerer.logsumexp,
    RowSum: StatementLowerer.rowsum,
    RowMax: StatementLowerer.rowmax,
    ColSum: StatementLowerer.colsum,
    Total: StatementLowerer.total,
    AxisSum: StatementLowerer.axis,
    AxisMax: StatementLowerer.axis,
    AxisMin: StatementLowerer.axis,
    ShareMax: StatementLowerer.share,
    ShareMin: StatementLowerer.share,
    Place: StatementLowerer.placed,
    Arange: StatementLowerer.arange,
    Delta: StatementLowerer.delta,
    Full: StatementLowerer.full,
    Einsum: StatementLowerer.einsum,
    AxisSoftmax: StatementLowerer.axis_softmax,
    cf.Correlate: StatementLowerer.correlate,
    cf.CorrWeightGrad: StatementLowerer.corr_weight_grad,
    cf.CorrInputGrad: StatementLowerer.corr_input_grad,
    cf.ChannelBias: StatementLowerer.channel_bias,
    cf.ChannelSum: StatementLowerer.channel_sum,
    cf.WindowSum: StatementLowerer.window_sum,
    cf.WindowSumGrad: StatementLowerer.window_sum_grad,
    cf.WindowMax: StatementLowerer.window_max,
    cf.WindowMaxGrad: StatementLowerer.window_max_grad,
    cf.Flatten: StatementLowerer.flatten,
    cf.Unflatten: StatementLowerer.unflatten,
}
