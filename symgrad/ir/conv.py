"""Sugar over the component-form IR for images and sequences: conv, pooling and flatten.

A quantity may have a shape ``(channels, [height,] width)``: its stage states one component
``out[c, h, w]`` with one free index per axis. Every layer here only writes that component
expression with index arithmetic (``a[ci, h*s + kh*d - pad, w*s + kw*d - pad]``, zeros outside
the input; ``d`` the dilation) and nothing here knows a derivative:

    conv      z[c, h, w] = Sum_{ci,kh,kw} W[c, ci, kh, kw] a[ci, s h + d kh - p, s w + d kw - p]
                           + b[c]
    avgpool   a[c, h, w] = Sum_{kh, kw} a'[c, s h + kh - p, s w + kw - p] / (KH KW)
    maxpool   a[c, h, w] = max_{kh, kw} a'[c, s h + kh - p, s w + kw - p]
    flatten   a[i] = Sum_{c, h, w} [i = c H W + h W + w] a'[c, h, w]

The weight layout is torch's ``(out_channels, in_channels, *kernel)``; the cross-correlation
is ``torch.nn.functional.conv1d/2d``'s. Layers are numbered by position, pooling and flatten
included (as ``nn.Sequential`` numbers its children).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from symgrad.errors import SpecError
from symgrad.ir.indices import idx
from symgrad.ir.network import Param, Stage

#: Free indices of a (channels, [height,] width) quantity and the kernel's dummies.
CHANNEL, ROW, COL = idx("c"), idx("h"), idx("w")
IN_CHANNEL = idx("ci")
KERNEL = (idx("kh"), idx("kw"))

POOL_TYPES = ("maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d")
CONV_TYPES = ("conv1d", "conv2d")


def _pair(value: int | tuple[int, ...] | list[int], nd: int, what: str, layer: int) -> tuple:
    vals = (value,) * nd if isinstance(value, int) else tuple(value)
    if len(vals) != nd or any(isinstance(v, bool) or not isinstance(v, int) for v in vals):
        raise SpecError(f"layer {layer}: {what} must be an integer or {nd} integers, got {value!r}")
    return vals


@dataclass(frozen=True)
class Conv:
    """``torch.nn.Conv1d/2d``: ``channels`` out, ``kernel`` int or per axis, zero padding."""

    channels: int
    kernel: int | tuple[int, ...]
    stride: int | tuple[int, ...] = 1
    padding: int | tuple[int, ...] = 0
    activation: object = "identity"
    bias: bool = True
    dims: int = 2
    dilation: int | tuple[int, ...] = 1


@dataclass(frozen=True)
class Pool:
    """Max or average pooling over windows (``stride`` defaults to ``kernel``, as torch)."""

    kind: str  # "max" or "avg"
    kernel: int | tuple[int, ...]
    stride: int | tuple[int, ...] | None = None
    padding: int | tuple[int, ...] = 0
    dims: int = 2


@dataclass(frozen=True)
class Flatten:
    """``(C, H, W) -> C*H*W`` in torch's row-major order."""


class MaxOver(sp.Expr):
    """``max`` of ``body`` over a box of bound indices: ``MaxOver(body, (k, lo, hi), ...)``.

    Its derivative is the derivative of the body at the arg-max, the first one in the
    window's row-major order when several tie (PyTorch's ``max_pool`` rule):
    ``d max_k f(k) / dx = Sum_u [u = argmax] df(u)/dx``.
    """

    is_real = True

    def __new__(cls, body, *limits):
        return sp.Expr.__new__(cls, sp.sympify(body), *[sp.Tuple(*lim) for lim in limits])

    @property
    def body(self) -> sp.Expr:
        return self.args[0]

    @property
    def limits(self) -> tuple[sp.Tuple, ...]:
        return tuple(self.args[1:])

    @property
    def variables(self) -> tuple[sp.Symbol, ...]:
        return tuple(lim[0] for lim in self.limits)

    @property
    def free_symbols(self):
        return self.body.free_symbols - set(self.variables)

    def _eval_derivative(self, s):
        fresh = [sp.Symbol(f"{v.name}_", integer=True) for v in self.variables]
        body = self.body.xreplace(dict(zip(self.variables, fresh, strict=True)))
        d = sp.diff(body, s)
        if d.is_zero:
            return sp.S.Zero
        limits = [(u, lim[1], lim[2]) for u, lim in zip(fresh, self.limits, strict=True)]
        return sp.Sum(ArgMaxIs(self, *fresh) * d, *limits)

    def _symgrad_tangent(self, R, tangents):
        """Forward mode: R{max_k f(k)} = sum_u [u = argmax] R{f}(u), the same arg-max rule
        as the gradient (the first maximum of the window)."""
        fresh = [sp.Symbol(f"{v.name}_", integer=True) for v in self.variables]
        body = self.body.xreplace(dict(zip(self.variables, fresh, strict=True)))
        r = R(body)
        if r == 0:
            return sp.S.Zero
        limits = [(u, lim[1], lim[2]) for u, lim in zip(fresh, self.limits, strict=True)]
        return sp.Sum(ArgMaxIs(self, *fresh) * r, *limits)

    def _latex(self, printer):
        under = ", ".join(printer._print(v) for v in self.variables)
        return rf"\max_{{{under}}} {printer._print(self.body)}"

    def _sympystr(self, printer):
        under = ", ".join(str(v) for v in self.variables)
        return f"max_{under} {printer._print(self.body)}"


class ArgMaxIs(sp.Function):
    """The indicator that the offsets ``args[1:]`` are the (first) arg-max of ``args[0]``."""

    is_integer = True
    is_nonnegative = True

    def _symgrad_tangent(self, R, tangents):
        """Piecewise constant: its tangent is zero almost everywhere."""
        return sp.S.Zero

    def _latex(self, printer):
        from symgrad.ir.indices import one_based  # documents count from 1

        m = self.args[0]
        offs = ", ".join(printer._print(one_based(a)) for a in self.args[1:])
        return (
            rf"\left[({offs}) = \operatorname{{argmax}}_{{"
            + ", ".join(printer._print(v) for v in m.variables)
            + rf"}} {printer._print(m.body)}\right]"
        )

    def _sympystr(self, printer):
        m = self.args[0]
        offs = ", ".join(printer._print(a) for a in self.args[1:])
        under = ", ".join(str(v) for v in m.variables)
        return f"[({offs}) = argmax_({under}) {printer._print(m.body)}]"


def out_size(size: int, k: int, s: int, p: int, layer: int, axis: str, d: int = 1) -> int:
    """The output length of a window sweep, ``floor((size + 2p - d(k - 1) - 1)/s) + 1``
    (torch's); the sweep must tile the padded input exactly (no position is dropped)."""
    span = d * (k - 1) + 1  # the positions one window covers
    if span > size + 2 * p:
        what = f"kernel {k}" if d == 1 else f"kernel {k} with dilation {d} (span {span})"
        raise SpecError(
            f"layer {layer}: {what} is larger than the {axis} {size}"
            + (f" plus padding 2*{p}" if p else "")
        )
    if (size + 2 * p - span) % s:
        reach = f"{k}" if d == 1 else f"{d}*({k} - 1) - 1"
        raise SpecError(
            f"layer {layer}: output {axis} ({size} + 2*{p} - {reach})/{s} + 1 is not an integer "
            f"(the last {(size + 2 * p - span) % s} input position(s) would be dropped); "
            "change stride, padding" + (" or kernel" if d == 1 else ", kernel or dilation")
        )
    return (size + 2 * p - span) // s + 1


def _spatial_names(nd: int) -> tuple[sp.Symbol, ...]:
    return (ROW, COL)[2 - nd :]


def _window_read(
    inp: sp.IndexedBase, chan: sp.Expr, nd: int, s, p, d=None
) -> tuple[sp.Expr, tuple]:
    """``inp[chan, s h + d kh - p, ...]`` and the kernel dummies it reads with."""
    spatial = _spatial_names(nd)
    kern = KERNEL[2 - nd :]
    d = d or (1,) * nd
    pos = [st * o + dl * kk - pd for o, kk, st, pd, dl in zip(spatial, kern, s, p, d, strict=True)]
    return inp[(chan, *pos)], kern


def conv_body(
    inp: sp.IndexedBase,
    W: sp.IndexedBase,
    b: sp.IndexedBase | None,
    in_channels: int,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...] | None = None,
) -> sp.Expr:
    """The component form of a cross-correlation (the torch conv layer; ``dilation`` the
    spacing of the kernel's taps, 1 per axis by default)."""
    nd = len(kernel)
    read, kern = _window_read(inp, IN_CHANNEL, nd, stride, padding, dilation)
    limits = [(IN_CHANNEL, 0, in_channels - 1)] + [
        (kk, 0, k - 1) for kk, k in zip(kern, kernel, strict=True)
    ]
    body = sp.Sum(W[(CHANNEL, IN_CHANNEL, *kern)] * read, *limits)
    return body + b[CHANNEL] if b is not None else body


def pool_body(kind: str, inp: sp.IndexedBase, kernel: tuple[int, ...], stride, padding) -> sp.Expr:
    """The component form of max or average pooling (torch's, zeros counted in the mean)."""
    nd = len(kernel)
    read, kern = _window_read(inp, CHANNEL, nd, stride, padding)
    limits = [(kk, 0, k - 1) for kk, k in zip(kern, kernel, strict=True)]
    if kind == "max":
        return MaxOver(read, *limits)
    area = 1
    for k in kernel:
        area *= k
    return sp.Sum(read, *limits) / area


def flatten_body(inp: sp.IndexedBase, shape: tuple[int, ...], i: sp.Symbol) -> sp.Expr:
    """``out[i] = a[c, h, w]`` for ``i = c H W + h W + w`` (row-major), as a delta sum."""
    names = (CHANNEL, *_spatial_names(len(shape) - 1))
    pos = sp.S.Zero
    stride = 1
    for name, size in zip(reversed(names), reversed(shape), strict=True):
        pos += name * stride
        stride *= size
    limits = [(nm, 0, size - 1) for nm, size in zip(names, shape, strict=True)]
    return sp.Sum(sp.KroneckerDelta(i, pos) * inp[names], *limits)


def _tensor_stage(out, inp, shape, in_shape, body, layer, kind, label, params=(), attrs=()):
    nd = len(shape) - 1
    w = sp.Integer(_prod(shape))
    w_in = sp.Integer(_prod(in_shape)) if in_shape else sp.Integer(0)
    return Stage(
        out,
        inp,
        w,
        w_in,
        body,
        layer,
        kind,
        label,
        tuple(params),
        indices=(CHANNEL, *_spatial_names(nd)),
        shape=tuple(sp.Integer(s) for s in shape),
        in_shape=tuple(sp.Integer(s) for s in in_shape),
        attrs=tuple(attrs),
    )


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


def _check_input(what: str, layer: int, in_shape: tuple[int, ...], nd: int) -> None:
    if len(in_shape) != nd + 1:
        have = f"shape {list(in_shape)}" if in_shape else "a vector"
        want = "(channels, width)" if nd == 1 else "(channels, height, width)"
        raise SpecError(f"layer {layer}: {what} needs an input of shape {want}, got {have}")


def conv_stages(layer: Conv, l: int, inp, in_shape: tuple[int, ...], activation) -> list[Stage]:
    """The stages of a conv layer: the correlation ``z<l>`` and its activation ``a<l>``."""
    nd = layer.dims
    _check_input(f"conv{nd}d", l, in_shape, nd)
    if isinstance(layer.channels, bool) or not isinstance(layer.channels, int):
        raise SpecError(f"layer {l}: channels must be a positive integer, got {layer.channels!r}")
    if layer.channels < 1:
        raise SpecError(f"layer {l}: channels must be a positive integer, got {layer.channels}")
    kernel = _pair(layer.kernel, nd, "kernel", l)
    stride = _pair(layer.stride, nd, "stride", l)
    padding = _pair(layer.padding, nd, "padding", l)
    dilation = _pair(layer.dilation, nd, "dilation", l)
    if any(k < 1 for k in kernel) or any(s < 1 for s in stride) or any(p < 0 for p in padding):
        raise SpecError(f"layer {l}: kernel and stride must be >= 1 and padding >= 0")
    if any(d < 1 for d in dilation):
        raise SpecError(f"layer {l}: dilation must be >= 1, got {layer.dilation!r}")
    axes = ("height", "width")[2 - nd :]
    spatial = tuple(
        out_size(n_, k, s, p, l, ax, d)
        for n_, k, s, p, ax, d in zip(
            in_shape[1:], kernel, stride, padding, axes, dilation, strict=True
        )
    )
    cin = in_shape[0]
    W = sp.IndexedBase(f"W{l}", real=True)
    b = sp.IndexedBase(f"b{l}", real=True) if layer.bias else None
    fan_in = sp.Integer(cin * _prod(kernel))
    shape_w = tuple(sp.Integer(v) for v in (layer.channels, cin, *kernel))
    params = [Param(f"W{l}", W, shape_w, "glorot", fan_in)]
    if b is not None:
        params.append(Param(f"b{l}", b, (sp.Integer(layer.channels),), "glorot", fan_in))
    body = conv_body(inp, W, b, cin, kernel, stride, padding, dilation)
    out_shape = (layer.channels, *spatial)
    attrs = (
        ("op", f"conv{nd}d"),
        ("kernel", kernel),
        ("stride", stride),
        ("padding", padding),
        ("dilation", dilation),
    )
    z = sp.IndexedBase(f"z{l}", real=True)
    stages = [
        _tensor_stage(z, inp, out_shape, in_shape, body, l, "affine", f"conv{nd}d", params, attrs)
    ]
    if activation.expr is None:
        raise SpecError(f"layer {l}: softmax is not an activation for a conv layer")
    x = sp.Symbol("x", real=True)  # the activation's variable (symgrad.ir.layers.x)

    if activation.expr == x:
        return stages
    a_body = activation.expr.xreplace({x: z[stages[0].indices]})
    a = sp.IndexedBase(f"a{l}", real=True)
    stages.append(
        _tensor_stage(a, z, out_shape, out_shape, a_body, l, "elementwise", activation.name)
    )
    return stages


def pool_stages(layer: Pool, l: int, inp, in_shape: tuple[int, ...]) -> list[Stage]:
    """The stage of a pooling layer, ``a<l>``."""
    nd = layer.dims
    name = f"{layer.kind}pool{nd}d"
    _check_input(name, l, in_shape, nd)
    kernel = _pair(layer.kernel, nd, "kernel", l)
    stride = kernel if layer.stride is None else _pair(layer.stride, nd, "stride", l)
    padding = _pair(layer.padding, nd, "padding", l)
    if any(k < 1 for k in kernel) or any(s < 1 for s in stride) or any(p < 0 for p in padding):
        raise SpecError(f"layer {l}: kernel and stride must be >= 1 and padding >= 0")
    if any(2 * p > k for p, k in zip(padding, kernel, strict=True)):
        raise SpecError(f"layer {l}: padding must be at most half the kernel (as in torch)")
    axes = ("height", "width")[2 - nd :]
    spatial = tuple(
        out_size(n_, k, s, p, l, ax)
        for n_, k, s, p, ax in zip(in_shape[1:], kernel, stride, padding, axes, strict=True)
    )
    body = pool_body(layer.kind, inp, kernel, stride, padding)
    attrs = (("op", name), ("kernel", kernel), ("stride", stride), ("padding", padding))
    a = sp.IndexedBase(f"a{l}", real=True)
    out_shape = (in_shape[0], *spatial)
    return [_tensor_stage(a, inp, out_shape, in_shape, body, l, "map", name, (), attrs)]


def flatten_stages(l: int, inp, in_shape: tuple[int, ...], i: sp.Symbol) -> list[Stage]:
    """The stage of a flatten layer: a vector ``a<l>`` of width C*H*W."""
    if not in_shape:
        raise SpecError(f"layer {l}: flatten needs a (channels, [height,] width) input")
    body = flatten_body(inp, in_shape, i)
    return [
        Stage(
            sp.IndexedBase(f"a{l}", real=True),
            inp,
            sp.Integer(_prod(in_shape)),
            sp.Integer(_prod(in_shape)),
            body,
            l,
            "map",
            "flatten",
            (),
            in_shape=tuple(sp.Integer(s) for s in in_shape),
            attrs=(("op", "flatten"),),
        )
    ]


def stage_shape(stage: Stage) -> tuple[int, ...]:
    """The shape of a stage's output: ``(width,)`` for a vector."""
    return tuple(int(s) for s in stage.shape) if stage.shape else ()


def prod(shape) -> int:
    """The number of elements of a shape."""
    return _prod(shape)


def input_shape(value: object) -> tuple[int, ...]:
    """``()`` for a vector input (an int or a Symbol), else the validated input shape."""
    if isinstance(value, int | sp.Expr):
        return ()
    if not isinstance(value, tuple | list) or not 2 <= len(value) <= 3:
        raise SpecError(
            f"input must be a width or a shape [channels, width] or [channels, height, width], "
            f"got {value!r}"
        )
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        raise SpecError(f"input shape entries must be positive integers, got {list(value)}")
    return tuple(value)


LAYERS = (Conv, Pool, Flatten)


def stages_of(
    layer: Conv | Pool | Flatten, l: int, inp, in_shape: tuple[int, ...], activation=None
) -> list[Stage]:
    """The stages of one conv, pooling or flatten layer numbered ``l`` (``activation``: a
    conv layer's, as ``layers.Activation``; passed in so that this module does not import
    ``layers``, which imports it)."""
    from symgrad.ir.indices import I

    if isinstance(layer, Conv):
        return conv_stages(layer, l, inp, in_shape, activation)
    if isinstance(layer, Pool):
        return pool_stages(layer, l, inp, in_shape)
    return flatten_stages(l, inp, in_shape, I)


def dilation_of(node: sp.Expr, at: int, nd: int) -> tuple[int, ...]:
    """The dilation a node carries as its optional argument ``at`` (1 per axis if absent)."""
    if len(node.args) > at:
        return tuple(int(v) for v in node.args[at])
    return (1,) * nd
