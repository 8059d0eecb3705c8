"""Stage 4 (matrix), tensor form: (channels, [height,] width) expressions as array operations.

The matrix form (``matrix_form.py``) speaks of vectors and matrices. Conv nets carry
quantities with one index per axis, and their derived contractions are correlations:
the derivation (``index_arithmetic.py``) produces, for a conv layer,

    z[c, h, w]     = Sum_{c', kh, kw} W[c, c', kh, kw] a[c', s h + kh - p, s w + kw - p] + b[c]
    dL/dW[p,q,r,s] = Sum_{h, w} delta[p, h, w] a[q, s h + r - p, s w + s - p]
    dL/da[c, h, w] = Sum_{c', h', w'} W[c', c, h - s h' + p, w - s w' + p] delta[c', h', w']
                       [0 <= h - s h' + p < KH] [0 <= w - s w' + p < KW]

and this module recognises them as the textbook operations, read off the index
expressions (strides and paddings are the coefficients and constants there):

    W ⋆ a          Correlate(Windows(a), W)       the forward cross-correlation
    δ ⋆ a          CorrWeightGrad(δ, Windows(a))  the weight gradient (summed over samples)
    W ⋆ᵀ δ         CorrInputGrad(δ, W)            the transposed correlation
    pooling        WindowSum(a) / WindowMax(a), and their transposes
    flatten        Flatten(a) / Unflatten(δ)

Each node is batched as it stands (samples lead every array), so ``layout.batch`` passes
it through; the NumPy printer gives each a vectorised form (``sliding_window_view`` and
``tensordot``), the LaTeX printer its symbol.
"""

from __future__ import annotations

import sympy as sp

from symgrad.calculus.index_arithmetic import Divisible, InRange, affine_parts
from symgrad.calculus.matrix_form import Mat, Vec
from symgrad.errors import DerivationError
from symgrad.ir.conv import ArgMaxIs, MaxOver, dilation_of


def _ints(values) -> sp.Tuple:
    return sp.Tuple(*[sp.Integer(int(v)) for v in values])


def _linear(self, R, tangents):
    """R{op(a, ...)} = op(R{a}, ...): the node is linear in its first argument (the rest
    are sizes, or values it reads only through which entry is a window's maximum)."""
    r = R(self.args[0])
    return self.func(r, *self.args[1:]) if r != 0 else sp.S.Zero


def _bilinear(self, R, tangents):
    """R{op(u, v, ...)} = op(R{u}, v, ...) + op(u, R{v}, ...)."""
    u, v, *rest = self.args
    ru, rv = R(u), R(v)
    parts = []
    if ru != 0:
        parts.append(self.func(ru, v, *rest))
    if rv != 0:
        parts.append(self.func(u, rv, *rest))
    return sp.Add(*parts)


class Windows(sp.Function):
    """``Windows(a, kernel, stride, padding, fill[, dilation])``: every window the kernel
    reads, as an (n, C, *out, *kernel) view of ``a`` padded with zeros (``fill`` 0) or -inf
    (``fill`` 1); ``dilation`` (the spacing of the kernel's taps) is given only where it
    is not 1, so dilation-free nodes are exactly what they were before it existed."""

    nargs = (5, 6)

    def _symgrad_tangent(self, R, tangents):
        # linear in ``a``; the padding's tangent is 0 (a -inf fill is a constant too)
        r = R(self.args[0])
        return Windows(r, *self.args[1:4], sp.S.Zero, *self.args[5:]) if r != 0 else sp.S.Zero

    def _sympystr(self, printer):
        return printer._print(self.args[0])

    def _latex(self, printer):
        return printer._print(self.args[0])


class Correlate(sp.Function):
    """``W ⋆ a``: ``Correlate(Windows(a), W)``, shape (n, O, *out)."""

    nargs = 2

    _symgrad_tangent = _bilinear

    def _sympystr(self, printer):
        win, W = self.args
        hyper = _hyper(win.args[2], win.args[3], dilation_of(win, 5, len(win.args[1])))
        return f"corr({printer._print(W)}, {printer._print(win)}{hyper})"

    def _latex(self, printer):
        win, W = self.args
        return rf"{printer._print(W)} {_star(win)} {_strided(printer, win)}"


class CorrWeightGrad(sp.Function):
    """``δ ⋆ a`` summed over samples: ``CorrWeightGrad(δ, Windows(a))``, shape (O, C, *k)."""

    nargs = 2

    _symgrad_tangent = _bilinear

    def _sympystr(self, printer):
        g, win = self.args
        hyper = _hyper(win.args[2], win.args[3], dilation_of(win, 5, len(win.args[1])))
        return f"corr({printer._print(g)}, {printer._print(win)}{hyper})"

    def _latex(self, printer):
        g, win = self.args
        return rf"{printer._print(g)} {_star(win)} {_strided(printer, win)}"


class CorrInputGrad(sp.Function):
    """``W ⋆ᵀ δ``: ``CorrInputGrad(δ, W, stride, padding, size[, dilation])``, shape
    (n, C, *size) (``dilation`` only where it is not 1, as for :class:`Windows`)."""

    nargs = (5, 6)

    _symgrad_tangent = _bilinear

    def _sympystr(self, printer):
        g, W, s, p = self.args[:4]
        hyper = _hyper(s, p, dilation_of(self, 5, len(s)))
        return f"corr_T({printer._print(W)}, {printer._print(g)}{hyper})"

    def _latex(self, printer):
        g, W = self.args[:2]
        d = dilation_of(self, 5, len(self.args[2]))
        return rf"{printer._print(W)} {_star(None, d, top=True)} {printer._print(g)}"


class ChannelBias(sp.Function):
    """``b`` broadcast over the positions of a (channels, ...) quantity: (b, spatial dims)."""

    nargs = 2

    _symgrad_tangent = _linear

    def _sympystr(self, printer):
        return printer._print(self.args[0])

    def _latex(self, printer):
        return printer._print(self.args[0])


class ChannelSum(sp.Function):
    """The sum over samples and positions of each channel (a conv bias gradient):
    ``ChannelSum(δ, spatial dims)``."""

    nargs = 2

    _symgrad_tangent = _linear

    def _sympystr(self, printer):
        return f"channel_sum({printer._print(self.args[0])})"

    def _latex(self, printer):
        return rf"\textstyle\sum_{{h, w}} {printer._print(self.args[0])}"


class WindowSum(sp.Function):
    """The sum over each window: ``WindowSum(a, kernel, stride, padding)`` (sum pooling)."""

    nargs = 4

    _symgrad_tangent = _linear

    def _sympystr(self, printer):
        a, k, s, p = self.args
        return f"sumpool({printer._print(a)}, kernel {_t(k)}{_hyper(s, p)})"

    def _latex(self, printer):
        return rf"\operatorname{{sumpool}}\left({printer._print(self.args[0])}\right)"


class WindowSumGrad(sp.Function):
    """The transpose of sum pooling: ``WindowSumGrad(δ, kernel, stride, padding, size)``."""

    nargs = 5

    _symgrad_tangent = _linear

    def _sympystr(self, printer):
        g, k, s, p = self.args[:4]
        return f"sumpool_T({printer._print(g)}, kernel {_t(k)}{_hyper(s, p)})"

    def _latex(self, printer):
        return rf"\operatorname{{sumpool}}^{{\top}}\left({printer._print(self.args[0])}\right)"


class WindowMax(sp.Function):
    """The maximum over each window: ``WindowMax(a, kernel, stride, padding)`` (max pooling)."""

    nargs = 4

    def _symgrad_tangent(self, R, tangents):
        # the tangent at each window's (first) arg-max: the arg-max is locally constant
        r = R(self.args[0])
        return WindowMaxTangent(r, *self.args, self) if r != 0 else sp.S.Zero

    def _sympystr(self, printer):
        a, k, s, p = self.args
        return f"maxpool({printer._print(a)}, kernel {_t(k)}{_hyper(s, p)})"

    def _latex(self, printer):
        return rf"\operatorname{{maxpool}}\left({printer._print(self.args[0])}\right)"


class WindowMaxTangent(sp.Function):
    """``R{maxpool(a)}``: each window's entry of ``r`` at the (first) arg-max of ``a``:
    ``(r, a, kernel, stride, padding, WindowMax(a, ...))``."""

    nargs = 6

    _symgrad_tangent = _linear

    def _sympystr(self, printer):
        r, a, k, s, p = self.args[:5]
        return (
            f"maxpool_R({printer._print(r)} at the argmax of {printer._print(a)}, "
            f"kernel {_t(k)}{_hyper(s, p)})"
        )

    def _latex(self, printer):
        r, a = self.args[:2]
        return (
            rf"\operatorname{{maxpool}}^{{R}}_{{{printer._print(a)}}}"
            rf"\left({printer._print(r)}\right)"
        )


class WindowMaxGrad(sp.Function):
    """``δ`` routed to each window's (first) arg-max:
    ``(δ, a, kernel, stride, padding, size, WindowMax(a, ...))`` (the forward maxima are an
    argument, so the code reuses the forward pass's)."""

    nargs = 7

    _symgrad_tangent = _linear

    def _sympystr(self, printer):
        g, a, k, s, p = self.args[:5]
        return (
            f"maxpool_T({printer._print(g)} to the argmax of {printer._print(a)}, "
            f"kernel {_t(k)}{_hyper(s, p)})"
        )

    def _latex(self, printer):
        g, a = self.args[:2]
        return (
            rf"\operatorname{{maxpool}}^{{\top}}_{{{printer._print(a)}}}"
            rf"\left({printer._print(g)}\right)"
        )


class Flatten(sp.Function):
    """``(C, H, W) -> C*H*W`` per sample, row-major."""

    nargs = 1

    _symgrad_tangent = _linear

    def _sympystr(self, printer):
        return f"vec({printer._print(self.args[0])})"

    def _latex(self, printer):
        return rf"\operatorname{{vec}}\left({printer._print(self.args[0])}\right)"


class Unflatten(sp.Function):
    """The inverse of :class:`Flatten`: ``Unflatten(δ, shape)``."""

    nargs = 2

    _symgrad_tangent = _linear

    def _sympystr(self, printer):
        return f"unvec({printer._print(self.args[0])}, {_t(self.args[1])})"

    def _latex(self, printer):
        return rf"\operatorname{{vec}}^{{-1}}\left({printer._print(self.args[0])}\right)"


def _t(values) -> str:
    return "x".join(str(int(v)) for v in values)


def _hyper(stride, padding, dilation=()) -> str:
    """``; stride 2, padding 1, dilation 2`` where they differ from 1, 0 and 1 (plain-text
    forms)."""
    out = []
    if any(int(v) != 1 for v in stride):
        out.append(f"stride {_t(stride)}")
    if any(int(v) != 0 for v in padding):
        out.append(f"padding {_t(padding)}")
    if any(int(v) != 1 for v in dilation):
        out.append(f"dilation {_t(dilation)}")
    return "; " + ", ".join(out) if out else ""


def _star(win: sp.Expr | None, dilation: tuple[int, ...] = (), top: bool = False) -> str:
    """``\\star`` (``\\star^{\\top}``), subscripted with the dilation where it is not 1:
    ``W \\star_{d=2} a`` correlates with taps 2 apart."""
    if win is not None:
        dilation = dilation_of(win, 5, len(win.args[1]))
    sub = ""
    if any(int(v) != 1 for v in dilation):
        vals = ", ".join(str(int(v)) for v in dilation)
        sub = rf"_{{d={vals}}}" if len(dilation) == 1 else rf"_{{d=({vals})}}"
    return r"\star" + sub + (r"^{\top}" if top else "")


def _strided(printer, win: sp.Expr) -> str:
    return printer._print(win)


#: Nodes that are already sums over the batch (parameter gradients).
BATCH_SUMMED = (CorrWeightGrad, ChannelSum)
#: Nodes printed as views of their argument (never written into in place).
VIEWS = (Windows, Flatten, Unflatten, ChannelBias)
TENSOR_OPS = (
    Windows,
    Correlate,
    CorrWeightGrad,
    CorrInputGrad,
    ChannelBias,
    ChannelSum,
    WindowSum,
    WindowSumGrad,
    WindowMax,
    WindowMaxGrad,
    WindowMaxTangent,
    Flatten,
    Unflatten,
)


def tensor_form(
    expr: sp.Expr, free: tuple[sp.Symbol, ...], shape: tuple, *, param: bool = False
) -> sp.Expr:
    """The array form of a component expression over (channels, [height,] width) indices.

    Args:
        expr: the component expression (a forward body or a derived gradient).
        free: its free indices, channel first.
        shape: the shape those indices run over (a parameter's shape for ``param``).
        param: whether ``expr`` is a parameter gradient (summed over the batch).
    """
    return _Reader(tuple(free), tuple(int(s) for s in shape), param).read(expr)


class _Reader:
    def __init__(self, free: tuple[sp.Symbol, ...], shape: tuple[int, ...], param: bool):
        self.free, self.shape, self.param = free, shape, param

    def fail(self, e: sp.Expr) -> DerivationError:
        return DerivationError(f"no array form for {e} (free indices {self.free})")

    def read(self, e: sp.Expr) -> sp.Expr:
        if isinstance(e, sp.Indexed):
            return self.indexed(e)
        if isinstance(e, sp.Sum):
            return self.contraction(e)
        if isinstance(e, MaxOver):
            return self.maxpool(e)
        if not e.args:
            if e in self.free:
                raise self.fail(e)
            return e
        if e.is_Mul:
            # a sum times factors of its own indices: the factors belong inside it
            sums = [f for f in e.args if isinstance(f, sp.Sum)]
            rest = [f for f in e.args if not isinstance(f, sp.Sum)]
            if len(sums) == 1 and any(f.has(*self.free) and f.atoms(InRange) for f in rest):
                return self.contraction(sp.Sum(sp.Mul(*rest) * sums[0].function, *sums[0].limits))
        return e.func(*[self.read(a) for a in e.args])

    # -- single reads ---------------------------------------------------------------------
    def indexed(self, e: sp.Indexed) -> sp.Expr:
        name = str(e.base.label)
        if tuple(e.indices) == self.free:
            return Vec(name)
        if len(e.indices) == 1 and e.indices[0] == self.free[0] and len(self.free) > 1:
            return ChannelBias(Mat(name), sp.Integer(len(self.free) - 1))
        if len(e.indices) == 1 and len(self.free) > 1:  # flatten's transpose: g[c H W + h W + w]
            parts = affine_parts(e.indices[0], self.free)
            if parts is not None and parts[1] == 0:
                want = [1]
                for size in reversed(self.shape[1:]):
                    want.insert(0, want[0] * size)
                if [parts[0][f] for f in self.free] == want:
                    return Unflatten(Vec(name), _ints(self.shape))
        raise self.fail(e)

    # -- contractions ---------------------------------------------------------------------
    def contraction(self, e: sp.Sum) -> sp.Expr:
        factors, limits = _flatten_sum(e)
        dummies = tuple(lim[0] for lim in limits)
        reads = [f for f in factors if isinstance(f, sp.Indexed)]
        inds = [f for f in factors if isinstance(f, InRange | Divisible)]
        argmax = [f for f in factors if isinstance(f, ArgMaxIs)]
        deltas = [f for f in factors if isinstance(f, sp.KroneckerDelta)]
        others = [f for f in factors if f not in reads + inds + argmax + deltas]
        if any(f.has(*dummies) for f in others):
            raise self.fail(e)
        coeff = sp.Mul(*others)
        nd = len(self.free) - 1
        if deltas and len(reads) == 1 and len(self.free) == 1:
            return coeff * Flatten(Vec(str(reads[0].base.label)))
        if argmax and len(reads) == 1:
            return coeff * self.maxpool_grad(reads[0], argmax[0], inds)
        if len(reads) == 2 and not self.param and inds:
            return coeff * self.input_grad(reads, inds, dummies)
        if len(reads) == 2 and not self.param:
            return coeff * self.correlate(reads, limits)
        if len(reads) == 2 and self.param:
            return coeff * self.weight_grad(reads, dummies)
        if len(reads) == 1 and self.param and len(self.free) == 1:
            g = reads[0]
            if g.indices[0] == self.free[0] and set(g.indices[1:]) == set(dummies):
                return coeff * ChannelSum(Vec(str(g.base.label)), sp.Integer(len(dummies)))
        if len(reads) == 1 and inds and nd >= 1:
            return coeff * self.sumpool_grad(reads[0], inds)
        if len(reads) == 1 and nd >= 1:
            return coeff * self.sumpool(reads[0], limits)
        raise self.fail(e)

    def _window(self, a: sp.Indexed, kern: tuple, ksize: tuple, fill: int) -> sp.Expr:
        """Windows(a, ...) read off ``a[., s h + d kh - p, ...]`` (free h, kernel dummy kh,
        dilation d)."""
        strides, pads, dils = [], [], []
        for pos, out_ix, kk in zip(a.indices[1:], self.free[1:], kern, strict=True):
            parts = affine_parts(pos, (out_ix, kk))
            if parts is None or parts[0][kk] < 1 or parts[0][out_ix] < 1 or parts[1] > 0:
                raise self.fail(a)
            strides.append(parts[0][out_ix])
            pads.append(-parts[1])
            dils.append(parts[0][kk])
        args = [Vec(str(a.base.label)), _ints(ksize), _ints(strides), _ints(pads), sp.Integer(fill)]
        if any(d != 1 for d in dils):
            args.append(_ints(dils))
        return Windows(*args)

    def _undilated(self, win: sp.Expr, e: sp.Expr) -> tuple:
        """The first four arguments of a pooling window (pooling has no dilation)."""
        if len(win.args) > 5:
            raise self.fail(e)
        return win.args[:4]

    def correlate(self, reads: list[sp.Indexed], limits) -> sp.Expr:
        W, a = sorted(reads, key=lambda r: -len(r.indices))
        rng = {lim[0]: int(lim[2]) + 1 for lim in limits}
        kern = tuple(W.indices[2:])
        if (
            len(W.indices) != len(self.free) + 1
            or W.indices[0] != self.free[0]
            or a.indices[0] != W.indices[1]
            or any(k not in rng for k in kern)
        ):
            raise self.fail(sp.Mul(*reads))
        win = self._window(a, kern, tuple(rng[k] for k in kern), 0)
        return Correlate(win, Mat(str(W.base.label)))

    def sumpool(self, a: sp.Indexed, limits) -> sp.Expr:
        rng = {lim[0]: int(lim[2]) + 1 for lim in limits}
        kern = tuple(next(s for s in pos.free_symbols if s in rng) for pos in a.indices[1:])
        if a.indices[0] != self.free[0]:
            raise self.fail(a)
        return WindowSum(*self._undilated(self._window(a, kern, tuple(rng[k] for k in kern), 0), a))

    def maxpool(self, m: sp.Expr) -> sp.Expr:
        a = m.body
        if not isinstance(a, sp.Indexed) or a.indices[0] != self.free[0]:
            raise self.fail(m)
        rng = {lim[0]: int(lim[2]) + 1 for lim in m.limits}
        kern = tuple(m.variables)
        return WindowMax(*self._undilated(self._window(a, kern, tuple(rng[k] for k in kern), 1), m))

    def weight_grad(self, reads: list[sp.Indexed], dummies) -> sp.Expr:
        # dW[p, q, r, s] = Sum_{h, w} g[p, h, w] a[q, s h + r - pad, s w + s - pad]
        p, q, *kern = self.free
        g = next((r for r in reads if r.indices[0] == p), None)
        a = next((r for r in reads if r is not g), None)
        if g is None or a is None or a.indices[0] != q or len(g.indices) != len(a.indices):
            raise self.fail(sp.Mul(*reads))
        sub = _Reader((a.indices[0], *g.indices[1:]), (), False)
        win = sub._window(a, tuple(kern), tuple(self.shape[2:]), 0)
        return CorrWeightGrad(Vec(str(g.base.label)), win)

    def _transposed(self, inds: list, outs: tuple) -> tuple[list, list, list, list]:
        """Stride, padding, kernel and dilation per axis from the range factors
        ``[0 <= (h - s h' + p)/d <= K-1]`` (and, for a dilation ``d`` other than 1, the
        divisibility factor ``[d | h - s h' + p]`` the kernel offset needs to exist)."""
        ranges = [i for i in inds if isinstance(i, InRange)]
        divs = [i for i in inds if isinstance(i, Divisible)]
        strides, pads, kernel, dils = [], [], [], []
        used: list = []
        for f, o in zip(self.free[1:], outs, strict=True):
            ind = next((i for i in ranges if i.args[0].has(f)), None)
            if ind is None or ind.args[1] != 0:
                raise self.fail(f)
            e = sp.expand(ind.args[0])
            cf = e.coeff(f, 1)
            if not cf.is_Rational or cf <= 0 or (1 / cf).q != 1:
                raise self.fail(ind)
            d = int(1 / cf)
            parts = affine_parts(sp.expand(d * e), (f, o))
            if parts is None or parts[0][f] != 1 or parts[0][o] >= 0:
                raise self.fail(ind)
            if d != 1:
                div = next(
                    (
                        v
                        for v in divs
                        if abs(v.args[1]) == d
                        and 0 in (sp.expand(d * e - v.args[0]), sp.expand(d * e + v.args[0]))
                    ),
                    None,
                )
                if div is None:
                    raise self.fail(ind)
                used.append(div)
            strides.append(-parts[0][o])
            pads.append(parts[1])
            kernel.append(int(ind.args[2]) + 1)
            dils.append(d)
        if len(used) != len(divs):
            raise self.fail(sp.Mul(*inds))
        return strides, pads, kernel, dils

    def input_grad(self, reads, inds, dummies) -> sp.Expr:
        # da[c, h, w] = Sum_{c', h', w'} W[c', c, (h - s h' + p)/d, ...] g[c', h', w'] [range]
        W, g = sorted(reads, key=lambda r: -len(r.indices))
        if W.indices[1] != self.free[0] or g.indices[0] != W.indices[0]:
            raise self.fail(sp.Mul(*reads))
        strides, pads, _, dils = self._transposed(inds, tuple(g.indices[1:]))
        args = [
            Vec(str(g.base.label)),
            Mat(str(W.base.label)),
            _ints(strides),
            _ints(pads),
            _ints(self.shape[1:]),
        ]
        if any(d != 1 for d in dils):
            args.append(_ints(dils))
        return CorrInputGrad(*args)

    def sumpool_grad(self, g: sp.Indexed, inds) -> sp.Expr:
        if g.indices[0] != self.free[0]:
            raise self.fail(g)
        strides, pads, kernel, dils = self._transposed(inds, tuple(g.indices[1:]))
        if any(d != 1 for d in dils):
            raise self.fail(g)
        return WindowSumGrad(
            Vec(str(g.base.label)),
            _ints(kernel),
            _ints(strides),
            _ints(pads),
            _ints(self.shape[1:]),
        )

    def maxpool_grad(self, g: sp.Indexed, am: sp.Expr, inds) -> sp.Expr:
        if g.indices[0] != self.free[0]:
            raise self.fail(g)
        strides, pads, kernel, dils = self._transposed(inds, tuple(g.indices[1:]))
        if any(d != 1 for d in dils):
            raise self.fail(g)
        a = Vec(str(am.args[0].body.base.label))
        k, s, p = _ints(kernel), _ints(strides), _ints(pads)
        top = WindowMax(a, k, s, p)
        return WindowMaxGrad(Vec(str(g.base.label)), a, k, s, p, _ints(self.shape[1:]), top)


def _flatten_sum(e: sp.Expr) -> tuple[list[sp.Expr], list[tuple]]:
    """A product of nested Sums as (all factors, all limits)."""
    if isinstance(e, sp.Sum):
        inner, lims = _flatten_sum(e.function)
        return inner, lims + [tuple(lim) for lim in e.limits]
    if e.is_Mul:
        factors: list[sp.Expr] = []
        limits: list[tuple] = []
        for f in e.args:
            fs, ls = _flatten_sum(f)
            factors += fs
            limits += ls
        return factors, limits
    return [e], []
