"""Sugar over the component-form IR: dense layers, activations, map layers and losses.

Each constructor only writes a component expression; nothing here knows a derivative.
The placeholders ``a`` (the layer input), ``i, j, k`` (indices), ``n`` (input width)
and ``m`` (output width) let users state their own layers in component form::

    from symgrad import Map, a, i, j, n
    l2norm = Map(a[i] / sp.sqrt(sp.Sum(a[j] ** 2, (j, 0, n - 1)) + 1e-6), name="l2norm")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import sympy as sp

from symgrad.errors import SpecError
from symgrad.ir import naming
from symgrad.ir.indices import I, idx, width
from symgrad.ir.network import Loss, Network, Param, Stage
from symgrad.ir.ops import ACTIVATIONS

# Placeholders for user-written component forms.
a = sp.IndexedBase("a", real=True)
i, j, k = idx("i"), idx("j"), idx("k")
n = sp.Symbol("n", integer=True, positive=True)
m = sp.Symbol("m", integer=True, positive=True)
x = sp.Symbol("x", real=True)
yhat_s = sp.Symbol("yhat", real=True)
y_s = sp.Symbol("y", real=True)

#: The built-in activation names (see :func:`activation_names` for the live registry).
ACTIVATION_NAMES = (*ACTIVATIONS, "softmax")


def activation_names() -> tuple[str, ...]:
    """Every activation a spec may name: the registry's (``ir/ops.py``) and softmax."""
    return (*ACTIVATIONS, "softmax")


LOSS_NAMES = ("mse", "bce", "cross_entropy")


@dataclass(frozen=True)
class Activation:
    """An elementwise activation ``f(x)`` (``expr`` in the Symbol ``symgrad.x``), or softmax."""

    name: str
    expr: sp.Expr | None = None  # None for softmax

    @staticmethod
    def of(spec: str | Activation | sp.Expr | Callable[[sp.Symbol], sp.Expr]) -> Activation:
        if isinstance(spec, Activation):
            return spec
        if isinstance(spec, str):
            if spec == "softmax":
                return Activation("softmax", None)
            if spec not in ACTIVATIONS:
                raise SpecError(
                    f"unknown activation '{spec}' (known: {', '.join(activation_names())})"
                )
            return Activation(spec, ACTIVATIONS[spec])
        if isinstance(spec, sp.Lambda):
            return Activation("custom", spec(x))
        if isinstance(spec, sp.Expr):
            return Activation("custom", spec)
        if callable(spec):
            return Activation("custom", spec(x))
        raise SpecError(f"cannot use {spec!r} as an activation")


@dataclass(frozen=True)
class Dense:
    """``z = W a + b`` (``W`` of shape (units, inputs)), then ``a = f(z)``."""

    units: int | sp.Symbol
    activation: str | Activation | sp.Expr = "identity"
    bias: bool = True


@dataclass(frozen=True)
class Map:
    """A general component-form layer ``out[i] = expr`` of the previous activation ``a``.

    ``expr`` uses ``a[.]``, the free index ``i``, bound indices in ``sp.Sum(.., (j, 0, n - 1))``,
    the input width ``n``, the output width ``m`` and its own parameters (IndexedBases
    listed in ``params`` with their shapes in ``n``, ``m`` or integers). The
    parameter ``g`` of layer 3 is named ``g3``.
    """

    expr: sp.Expr
    name: str = "map"
    units: int | sp.Symbol | None = None
    params: Mapping[sp.IndexedBase, tuple[sp.Expr | int, ...]] = field(default_factory=dict)
    init: Mapping[str, str] = field(default_factory=dict)


def _softmax_body(inp: sp.IndexedBase, w: sp.Expr) -> sp.Expr:
    return sp.exp(inp[i]) / sp.Sum(sp.exp(inp[j]), (j, 0, w - 1))


def _elementwise(act: Activation, inp: sp.IndexedBase, out: sp.IndexedBase, w, layer) -> Stage:
    if act.expr is None:  # softmax: a component-form map whose Jacobian is not diagonal
        return Stage(out, inp, w, w, _softmax_body(inp, w), layer, "map", "softmax")
    body = act.expr.xreplace({x: inp[I]})
    return Stage(out, inp, w, w, body, layer, "elementwise", act.name)


def _width(units: int | sp.Expr, layer: int, sizes: dict[sp.Symbol, int]) -> sp.Expr:
    if isinstance(units, bool) or not isinstance(units, int | sp.Expr):
        raise SpecError(f"layer {layer}: units must be a positive integer, got {units!r}")
    if isinstance(units, int):
        if units < 1:
            raise SpecError(f"layer {layer}: units must be a positive integer, got {units}")
        sym = width(layer)
        sizes[sym] = units
        return sym
    return units


def _dense(layer: Dense, l: int, inp, w_in, sizes) -> list[Stage]:
    w = _width(layer.units, l, sizes)
    W = sp.IndexedBase(naming.param("W", l).name, real=True)
    z = sp.IndexedBase(naming.pre(l).name, real=True)
    body = sp.Sum(W[I, j] * inp[j], (j, 0, w_in - 1))
    params = [Param(W.name, W, (w, w_in), "glorot", w_in)]
    if layer.bias:
        b = sp.IndexedBase(naming.param("b", l).name, real=True)
        body = body + b[I]
        params.append(Param(b.name, b, (w,), "glorot", w_in))
    stages = [Stage(z, inp, w, w_in, body, l, "affine", "dense", tuple(params))]
    act = Activation.of(layer.activation)
    if act.expr is not None and act.expr == x:
        return stages  # identity: a[l] = z[l], no stage of its own
    stages.append(_elementwise(act, z, sp.IndexedBase(naming.act(l).name, real=True), w, l))
    return stages


def _map(layer: Map, l: int, inp, w_in, sizes) -> list[Stage]:
    w = w_in if layer.units is None else _width(layer.units, l, sizes)
    repl: dict[sp.Basic, sp.Basic] = {a: inp, n: w_in, m: w}
    params = []
    for base, shape in layer.params.items():
        pname = naming.param(base.name, l).name
        new = sp.IndexedBase(pname, real=True)
        repl[base] = new
        shp = tuple(sp.sympify(s).xreplace({n: w_in, m: w}) for s in shape)
        params.append(Param(pname, new, shp, layer.init.get(base.name, "ones"), w_in))
    body = sp.sympify(layer.expr).xreplace(repl)
    stray = {b.base.label for b in body.atoms(sp.Indexed)} - {
        inp.label,
        *(p.base.label for p in params),
    }
    if stray:
        names = ", ".join(sorted(str(s) for s in stray))
        raise SpecError(f"layer {l}: map expression uses undeclared arrays: {names}")
    return [
        Stage(
            sp.IndexedBase(naming.act(l).name, real=True),
            inp,
            w,
            w_in,
            body,
            l,
            "map",
            layer.name,
            tuple(params),
        )
    ]


def is_softmax(stage: Stage) -> bool:
    """Whether the stage computes ``exp(u[i]) / sum_j exp(u[j])`` (decided from its body,
    never from its name): cross-entropy's ``log`` then has a stable log-softmax form."""
    body, i_ = stage.body, stage.index
    num = [f for f in sp.Mul.make_args(body) if isinstance(f, sp.exp)]
    den = [
        f
        for f in sp.Mul.make_args(body)
        if f.is_Pow and f.exp == -1 and isinstance(f.base, sp.Sum) and len(f.base.limits) == 1
    ]
    if len(num) != 1 or len(den) != 1 or len(sp.Mul.make_args(body)) != 2:
        return False
    s = den[0].base
    j_ = s.limits[0][0]
    return isinstance(s.function, sp.exp) and s.function == num[0].xreplace({i_: j_})


def make_loss(
    spec: str | tuple[str, sp.Expr], yhat: sp.IndexedBase, C: sp.Expr, last: Stage | None
) -> Loss:
    """Build the per-sample loss (mean over outputs for elementwise losses)."""
    target = sp.IndexedBase("y", real=True)
    if isinstance(spec, tuple):
        name, elem = spec
        body = sp.Sum(elem.xreplace({yhat_s: yhat[i], y_s: target[i]}), (i, 0, C - 1)) / C
        return Loss(name, body, yhat, target, C, elementwise=elem)
    if spec == "mse":
        elem = (yhat_s - y_s) ** 2
    elif spec == "bce":
        elem = -(y_s * sp.log(yhat_s) + (1 - y_s) * sp.log(1 - yhat_s))
    elif spec == "cross_entropy":
        if last is None or not is_softmax(last):
            raise SpecError("loss 'cross_entropy' needs a softmax activation on the last layer")
        body = -sp.Sum(target[i] * sp.log(yhat[i]), (i, 0, C - 1))
        return Loss("cross_entropy", body, yhat, target, C, (("sum_y_is_1", "targets"),), True)
    else:
        raise SpecError(f"unknown loss '{spec}' (known: {', '.join(LOSS_NAMES)})")
    body = sp.Sum(elem.xreplace({yhat_s: yhat[i], y_s: target[i]}), (i, 0, C - 1)) / C
    return Loss(spec, body, yhat, target, C, elementwise=elem)


def build(
    name: str,
    input: int | sp.Symbol,
    layers: Sequence[Dense | Map],
    loss: str | tuple[str, sp.Expr] | Callable[[sp.Symbol, sp.Symbol], sp.Expr],
    *,
    source: str = "<python>",
) -> Network:
    """Assemble a :class:`Network` from layer sugar.

    Args:
        name: a Python identifier (used for generated code).
        input: number of input features (or a Symbol).
        layers: ``Dense`` and ``Map`` layers, numbered from 1 in order.
        loss: "mse", "bce", "cross_entropy", or ``(name, expr)`` with ``expr`` in the
            Symbols ``symgrad.yhat_s`` and ``symgrad.y_s``, or a callable ``l(yhat, y)``.
    """
    if not name.isidentifier():
        raise SpecError(f"name '{name}' is not a Python identifier")
    if not layers:
        raise SpecError("a network needs at least one layer")
    sizes: dict[sp.Symbol, int] = {}
    w_in = _width(input, 0, sizes)
    inp = sp.IndexedBase("x", real=True)
    stages: list[Stage] = []
    cur, cur_w = inp, w_in
    for l, layer in enumerate(layers, start=1):
        if isinstance(layer, Dense):
            new = _dense(layer, l, cur, cur_w, sizes)
        elif isinstance(layer, Map):
            new = _map(layer, l, cur, cur_w, sizes)
        else:
            raise SpecError(f"layer {l}: expected Dense or Map, got {type(layer).__name__}")
        stages.extend(new)
        cur, cur_w = new[-1].out, new[-1].width
    if callable(loss) and not isinstance(loss, str | tuple):
        loss = ("custom", loss(yhat_s, y_s))
    lobj = make_loss(loss, cur, cur_w, stages[-1])
    return Network(name, tuple(stages), lobj, sizes, inp, len(layers), source)
