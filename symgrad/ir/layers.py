"""Sugar over the component-form IR: dense layers, activations, map layers and losses.

Each constructor only writes a component expression; nothing here knows a derivative.
The placeholders ``a`` (the layer input), ``i, j, k`` (indices), ``n`` (input width)
and ``m`` (output width) let users state their own layers in component form::

    from symgrad import Map, a, i, j, n
    l2norm = Map(a[i] / sp.sqrt(sp.Sum(a[j] ** 2, (j, 0, n - 1)) + 1e-6), name="l2norm")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import sympy as sp

from symgrad import budgets, names
from symgrad.errors import SpecError
from symgrad.ir import conv, map_checks, naming, softmax_split
from symgrad.ir import lets as let_names
from symgrad.ir.indices import BATCH, SAMPLE, I, idx, width
from symgrad.ir.losses import LOSS_NAMES as LOSS_NAMES  # re-exported: the layers' API
from symgrad.ir.losses import _penalty, make_loss, y_s, yhat_s
from symgrad.ir.losses import is_softmax as is_softmax
from symgrad.ir.network import Network, Param, Stage
from symgrad.ir.norm_layers import NORM_EPS as NORM_EPS  # re-exported: the layers' API
from symgrad.ir.norm_layers import NORMS, BatchNorm, LayerNorm, RMSNorm, _norm
from symgrad.ir.norm_layers import batchnorm_body as batchnorm_body
from symgrad.ir.norm_layers import layernorm_body as layernorm_body
from symgrad.ir.norm_layers import rmsnorm_body as rmsnorm_body
from symgrad.ir.ops import ACTIVATIONS

#: The most layers a network may have (spec files and the Python API alike): derive and
#: codegen stay within seconds up to here (bench/time_bounds.py).
MAX_LAYERS = 100

# Placeholders for user-written component forms.
a = sp.IndexedBase("a", real=True)
i, j, k = idx("i"), idx("j"), idx("k")
n = sp.Symbol("n", integer=True, positive=True)
m = sp.Symbol("m", integer=True, positive=True)
#: A map that couples the samples (batch statistics) reads its input as ``a[s, i]``: ``s``
#: is the sample index, ``t`` a sample summed over, ``N`` the batch size.
s, t = SAMPLE, idx("t")
N = BATCH
x = sp.Symbol("x", real=True)

#: The built-in activation names (see :func:`activation_names` for the live registry).
ACTIVATION_NAMES = (*ACTIVATIONS, "softmax")


def activation_names() -> tuple[str, ...]:
    """Every activation a spec may name: the registry's (``ir/ops.py``) and softmax."""
    return (*ACTIVATIONS, "softmax")


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
    listed in ``params`` with their shapes in ``n``, ``m`` or integers; a Symbol with
    shape ``()`` is a scalar parameter). The parameter ``g`` of layer 3 is named ``g3``.
    It may also read any earlier output by name: ``x`` (the input), ``a2`` (the output
    of layer 2), ``z2`` (its pre-activation): residual blocks and skip connections.
    """

    expr: sp.Expr
    name: str = "map"
    units: int | sp.Expr | None = None
    params: Mapping[sp.IndexedBase | sp.Symbol, tuple[sp.Expr | int, ...]] = field(
        default_factory=dict
    )
    init: Mapping[str, str] = field(default_factory=dict)
    #: "zeros": a read outside an axis is zero (as conv padding); "none": it is an error.
    padding: str = "none"
    #: A tensor map: its free indices in axis order and their extents (ints or sizes);
    #: empty for a vector map over ``i``.
    indices: tuple[sp.Symbol, ...] = ()
    shape: tuple[int | sp.Expr, ...] = ()
    #: Named sub-expressions ``(Symbol, expr)`` in definition order; ``expr`` (and each
    #: later one) may use the earlier names: ``((mu, Sum(a[j], (j, 0, n - 1)) / n),)``
    #: with ``expr = a[i] - mu``. Substituted before the derivation; the documents show
    #: the steps in these names.
    lets: tuple[tuple[sp.Symbol, sp.Expr], ...] = ()


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


def _resolve_reads(
    body: sp.Expr, l: int, inp, own: set, outputs, earlier: Mapping[str, Param]
) -> tuple[sp.Expr, dict[sp.IndexedBase, tuple[sp.Expr, tuple]], dict[str, Param]]:
    """Earlier outputs named in the expression (x, a2, z2) and earlier layers' parameters
    (``W1``: a shared, tied parameter), matched by name, so that a user's
    ``IndexedBase("a2")`` means the network's own array of that name."""
    extra: dict[sp.IndexedBase, tuple[sp.Expr, tuple]] = {}
    shared: dict[str, Param] = {}
    swap: dict[sp.Basic, sp.Basic] = {}
    stray = []
    for ind in body.atoms(sp.Indexed):
        if ind.base in own:  # the layer's input or one of its own parameters
            continue
        label = str(ind.base.label)
        found = outputs.get(label)
        if found is None and label in earlier and isinstance(earlier[label].base, sp.IndexedBase):
            shared[label] = earlier[label]
            swap[ind.base] = earlier[label].base
            continue
        if found is None:
            stray.append(label)
            continue
        base, bw, bshape = found
        swap[ind.base] = base
        if base != inp:
            extra[base] = (bw, bshape)
    for sym in body.free_symbols:
        p = earlier.get(str(sym))
        if isinstance(sym, sp.Symbol) and p is not None and isinstance(p.base, sp.Symbol):
            shared[p.name] = p
            swap[sym] = p.base
    if stray:
        names = ", ".join(sorted(set(stray)))
        raise SpecError(f"layer {l}: map expression uses undeclared arrays: {names}")
    return body.xreplace(swap), extra, shared


def _shape_of(stage: Stage) -> tuple[int, ...]:
    """The shape the next layer sees: () for a vector (a map with one axis included)."""
    shape = conv.stage_shape(stage)
    return shape if len(shape) > 1 else ()


def _values(sizes: Mapping[sp.Symbol, int]) -> dict[sp.Basic, sp.Basic]:
    return {k_: sp.Integer(v_) for k_, v_ in sizes.items()}


def _tensor_shape(layer: Map, l: int, sizes, w_in) -> tuple[sp.Integer, ...]:
    """A tensor map's output shape, concrete (ints, sizes, ``n`` the input width)."""
    if len(layer.shape) != len(layer.indices):
        raise SpecError(
            f"layer {l}: a map with indices {', '.join(map(str, layer.indices))} needs one "
            f"extent per index in shape, got {len(layer.shape)}"
        )
    if len(set(layer.indices)) != len(layer.indices):
        raise SpecError(f"layer {l}: the map's indices must be distinct")
    out = []
    for ext in layer.shape:
        v = (
            sp.sympify(ext)
            .xreplace({n: w_in})
            .xreplace({k_: sp.Integer(v_) for k_, v_ in sizes.items()})
        )
        if not v.is_Integer or v < 1:
            raise SpecError(f"layer {l}: shape entry {ext} is not a known positive size")
        out.append(sp.Integer(v))
    return tuple(out)


def _map_extent(
    layer: Map, l: int, w_in, sizes, in_shape
) -> tuple[bool, tuple[sp.Integer, ...], sp.Expr]:
    """Whether a map is a tensor map, its output shape (``()`` for a vector map) and its
    output width."""
    tensor = bool(len(layer.indices) > 1 or (layer.indices and layer.indices[0] != I))
    out_shape = _tensor_shape(layer, l, sizes, w_in) if tensor else ()
    if tensor and layer.units is not None:
        raise SpecError(f"layer {l}: a map with indices takes shape, not units")
    w = w_in if layer.units is None else _width(layer.units, l, sizes)
    if tensor:
        w = sp.Integer(conv.prod(out_shape))
    elif layer.indices:  # indices = (i,): a vector map with its extent in shape
        w = _tensor_shape(layer, l, sizes, w_in)[0]
    elif in_shape and layer.units is None:
        raise SpecError(
            f"layer {l}: a vector map reading an input of shape {list(in_shape)} needs units "
            "(or indices and shape)"
        )
    return tensor, out_shape, w


def _map_params(
    layer: Map, l: int, w_in, w, sizes, tensor: bool, repl: dict[sp.Basic, sp.Basic]
) -> list[Param]:
    """The map's parameters, named for layer ``l``; ``repl`` gains each declared base ->
    its layer's base."""
    params = []
    for base, shape in layer.params.items():
        pname = naming.param(base.name, l).name
        new: sp.IndexedBase | sp.Symbol
        if isinstance(base, sp.Symbol):
            if tuple(shape):
                raise SpecError(f"layer {l}: parameter {base.name} is a Symbol: its shape is ()")
            new = sp.Symbol(pname, real=True)
        else:
            new = sp.IndexedBase(pname, real=True)
        repl[base] = new
        shp = tuple(sp.sympify(s).xreplace({n: w_in, m: w}) for s in shape)
        if tensor:  # a tensor map's arrays have concrete shapes (as conv layers')
            shp = tuple(sp.sympify(s).xreplace(_values(sizes)) for s in shp)
        params.append(Param(pname, new, shp, layer.init.get(base.name, "ones"), w_in))
    return params


def _check_declared(body: sp.Expr, l: int, layer: Map, scalars: set, widths: set) -> None:
    """Every name a map's body reads is declared (an array, a scalar parameter, a width,
    an index)."""
    labels = {ind.base.label for ind in body.atoms(sp.Indexed)}
    loose = {
        s_
        for s_ in body.free_symbols
        if not isinstance(s_, sp.Indexed | sp.IndexedBase)
        and s_ not in labels
        and s_ not in scalars
        and s_ not in widths
        and s_ != I
        and s_ not in layer.indices
        and s_ != BATCH
        and not s_.is_integer
    }
    if loose:
        names = ", ".join(sorted(str(s_) for s_ in loose))
        raise SpecError(f"layer {l}: map expression uses undeclared names: {names}")


def _map(layer: Map, l: int, inp, w_in, sizes, outputs, earlier=None, in_shape=()) -> list[Stage]:
    tensor, out_shape, w = _map_extent(layer, l, w_in, sizes, in_shape)
    repl: dict[sp.Basic, sp.Basic] = {a: inp, n: w_in, m: w}
    params = _map_params(layer, l, w_in, w, sizes, tensor, repl)
    named = let_names.expand(layer.lets)
    body = let_names.substitute(layer.lets, layer.expr).xreplace(repl)
    own = {inp, *(p.base for p in params if isinstance(p.base, sp.IndexedBase))}
    body, extra, shared = _resolve_reads(body, l, inp, own, outputs, earlier or {})
    if layer.padding not in map_checks.PADDINGS:
        raise SpecError(
            f"layer {l}: padding must be one of {', '.join(map_checks.PADDINGS)}, "
            f"got {layer.padding!r}"
        )
    dims: dict[sp.Basic, tuple[sp.Expr, ...]] = {
        inp: tuple(in_shape) or (w_in,),
        **{b: tuple(bs) or (bw,) for b, (bw, bs) in extra.items()},
    }
    dims.update({p.base: p.shape for p in (*params, *shared.values())})
    body = map_checks.infer_ranges(body, dims, sizes, l)
    reads = (l, inp, own, outputs, earlier or {})
    lets = tuple(
        (sym, map_checks.infer_ranges(_resolve_reads(e.xreplace(repl), *reads)[0], dims, sizes, l))
        for sym, e in named.items()
    )
    sample = SAMPLE if _reads_samples(body) else None
    if sample is not None:
        _check_sample_map(body, l, {inp, *extra}, stage_params=params)
    scalars = {p.base for p in (*params, *shared.values()) if isinstance(p.base, sp.Symbol)}
    _check_declared(body, l, layer, scalars, set(sizes) | {w_in, w})
    stage = Stage(
        sp.IndexedBase(naming.act(l).name, real=True),
        inp,
        w,
        w_in,
        body,
        l,
        "map",
        layer.name,
        tuple(params),
        extra=tuple((b, bw) for b, (bw, _) in extra.items()),
        sample=sample,
        attrs=(("form", "component"), ("padding", layer.padding)),
        shared=tuple(shared.values()),
        indices=tuple(layer.indices) if tensor else (),
        shape=out_shape,
        in_shape=tuple(sp.Integer(v) for v in in_shape),
        extra_shapes=tuple(tuple(sp.Integer(v) for v in bs) for _, bs in extra.values()),
        lets=lets,
    )
    if sample is not None:
        _check_shapes(stage, sizes)
    else:
        ranges = dict(zip(layer.indices, out_shape, strict=True)) if tensor else {I: w}
        map_checks.check_reads(body, dims, ranges, sizes, l, layer.padding)
    return softmax_split.split_softmax(stage)


def _reads_samples(body: sp.Expr) -> bool:
    """Whether a map's body states the samples itself: the sample index ``s`` free, or a sum
    over the batch (upper limit ``N - 1``)."""
    return SAMPLE in body.free_symbols or any(
        hi == BATCH - 1 for e in body.atoms(sp.Sum) for _, _, hi in e.limits
    )


def _check_sample_map(body: sp.Expr, l: int, arrays: set, stage_params: list[Param]) -> None:
    """A map that couples the samples reads only its input, always subscripted by a sample
    first (``a[s, i]``, or ``a[t, i]`` with ``t`` summed over the batch)."""
    if len(arrays) > 1:
        raise SpecError(
            f"layer {l}: a map that couples the samples (reads the sample index s) may read "
            "only its input a"
        )
    pnames = {p.base for p in stage_params}

    def walk(e: sp.Basic, samples: frozenset) -> None:
        if isinstance(e, sp.Sum):
            inner = set(samples)
            for var, _, hi in e.limits:
                if hi == BATCH - 1:
                    inner.add(var)
            walk(e.function, frozenset(inner))
            return
        if isinstance(e, sp.Indexed):
            first = e.indices[0]
            if e.base in pnames:
                if any(ix in samples for ix in e.indices):
                    raise SpecError(f"layer {l}: parameter {e.base} cannot take a sample index")
                return
            if e.base in arrays and (len(e.indices) != 2 or first not in samples):
                raise SpecError(
                    f"layer {l}: in a map that couples the samples, {e.base} takes a sample "
                    f"index first (a[s, i], or a[t, i] summed over t up to N - 1), got {e}"
                )
            return
        for arg in e.args:
            walk(arg, samples)

    walk(body, frozenset({SAMPLE}))


def _check_shapes(stage: Stage, sizes: Mapping[sp.Symbol, int]) -> None:
    """Every index that subscripts an array runs over that array's dimension."""

    def val(e: sp.Expr) -> sp.Expr:
        return sp.sympify(e).xreplace({s: sp.Integer(v) for s, v in sizes.items()})

    lead: tuple[sp.Expr, ...] = (BATCH,) if stage.sample is not None else ()
    dims: dict[sp.Basic, tuple[sp.Expr, ...]] = {b: (*lead, w) for b, w in stage.inputs}
    dims.update({p.base: p.shape for p in stage.params})
    ranges: dict[sp.Symbol, sp.Expr] = {stage.index: stage.width}
    if stage.sample is not None:
        ranges[stage.sample] = BATCH

    def walk(e: sp.Basic, rng: dict[sp.Symbol, sp.Expr]) -> None:
        if isinstance(e, sp.Sum):
            inner = dict(rng)
            for var, lo, hi in e.limits:
                inner[var] = hi - lo + 1
            walk(e.function, inner)
            return
        if isinstance(e, sp.Indexed):
            shape = dims.get(e.base)
            if shape is None:
                return
            if len(shape) != len(e.indices):
                raise SpecError(
                    f"layer {stage.layer}: {e.base} takes {len(shape)} "
                    f"ind{'ex' if len(shape) == 1 else 'ices'}, got {len(e.indices)}"
                )
            for pos, (ix, dim) in enumerate(zip(e.indices, shape, strict=True)):
                if ix in rng and val(rng[ix]) != val(dim):
                    raise SpecError(
                        f"layer {stage.layer}: index {ix} runs to {val(rng[ix])} but axis {pos} "
                        f"of {e.base} has size {val(dim)}"
                    )
            return
        for arg in e.args:
            walk(arg, rng)

    walk(stage.body, ranges)


def _layer_stages(
    layer: Dense | Map | LayerNorm | RMSNorm | BatchNorm | conv.Conv | conv.Pool | conv.Flatten,
    l: int,
    current: tuple[sp.IndexedBase, sp.Expr, tuple],
    known: dict[sp.Symbol, int],
    outputs: dict[str, tuple[sp.IndexedBase, sp.Expr, tuple]],
    stages: list[Stage],
) -> list[Stage]:
    """The stages of layer ``l`` reading ``current`` (the previous output, its width and
    shape); ``outputs`` and ``stages`` are what the earlier layers built."""
    cur, cur_w, cur_shape = current
    if isinstance(layer, conv.LAYERS):
        act = Activation.of(layer.activation) if isinstance(layer, conv.Conv) else None
        return conv.stages_of(layer, l, cur, cur_shape, act)
    if isinstance(layer, Map):
        earlier = {p.name: p for st in stages for p in st.params}
        return _map(layer, l, cur, cur_w, known, outputs, earlier, cur_shape)
    if cur_shape:
        raise SpecError(
            f"layer {l}: a {type(layer).__name__.lower()} layer needs a vector input, "
            f"got shape {list(cur_shape)} (add a flatten layer before it)"
        )
    if isinstance(layer, Dense):
        return _dense(layer, l, cur, cur_w, known)
    if isinstance(layer, NORMS):
        return _norm(layer, l, cur, cur_w)
    raise SpecError(f"layer {l}: expected Dense or Map, got {type(layer).__name__}")


def _named_statistics(stage: Stage) -> Stage:
    """``stage`` with the statistics of its input named (``ir/lets.py``) where it is a
    vector map of one sample that names nothing itself: the documents write its steps in
    them (the engine reads the body, where nothing changes)."""
    if stage.kind != "map" or stage.lets or stage.sample is not None or stage.indices:
        return stage
    lets = let_names.statistics(stage.body, stage.inp, stage.in_width)
    return dataclasses.replace(stage, lets=lets) if lets else stage


def build(
    name: str,
    input: int | sp.Symbol | Sequence[int],
    layers: Sequence[
        Dense | Map | LayerNorm | RMSNorm | BatchNorm | conv.Conv | conv.Pool | conv.Flatten
    ],
    loss: str | tuple[str, sp.Expr] | Callable[[sp.Symbol, sp.Symbol], sp.Expr],
    *,
    source: str = "<python>",
    sizes: Mapping[str | sp.Symbol, int] | None = None,
    penalty: sp.Expr | None = None,
) -> Network:
    """Assemble a :class:`Network` from layer sugar.

    Args:
        name: a Python identifier (used for generated code).
        input: number of input features (or a Symbol), or a (channels, [height,] width)
            shape for conv nets.
        layers: ``Dense``, ``Map``, ``Conv``, ``Pool`` and ``Flatten`` layers, numbered
            from 1 in order.
        loss: "mse", "bce", "cross_entropy", or ``(name, expr)`` with ``expr`` in the
            Symbols ``symgrad.yhat_s`` and ``symgrad.y_s``, or a callable ``l(yhat, y)``.
        sizes: concrete values of named widths used as ``units`` or in expressions.
        penalty: a term in the parameters (``1e-4 * W1[p, q]**2``) added once to the batch
            loss, each additive term summed over its free indices.
    """
    names.check_name(name, "the network name")
    names.check_sizes(sizes)
    if not layers:
        raise SpecError("a network needs at least one layer")
    if len(layers) > MAX_LAYERS:  # refused up front: the derivation would take minutes
        raise SpecError(f"too many layers: {len(layers)} (at most {MAX_LAYERS})")
    known: dict[sp.Symbol, int] = {}
    for key, value in (sizes or {}).items():
        sym = key if isinstance(key, sp.Symbol) else sp.Symbol(key, integer=True, positive=True)
        known[sym] = int(value)
    # conv nets: a (channels, [height,] width) input shape (see ir/conv.py)
    input_shape = conv.input_shape(input)
    w_in = _width(conv.prod(input_shape) if input_shape else input, 0, known)
    inp = sp.IndexedBase("x", real=True)
    stages: list[Stage] = []
    cur, cur_w, cur_shape = inp, w_in, input_shape
    outputs: dict[str, tuple[sp.IndexedBase, sp.Expr, tuple]] = {"x": (inp, w_in, input_shape)}
    for l, layer in enumerate(layers, start=1):
        new = _layer_stages(layer, l, (cur, cur_w, cur_shape), known, outputs, stages)
        new = [_named_statistics(st) for st in new]
        stages.extend(new)
        cur, cur_w = new[-1].out, new[-1].width
        cur_shape = _shape_of(new[-1])
        for st in new:  # a map reads earlier outputs by name
            outputs[str(st.out)] = (st.out, st.width, _shape_of(st))
        outputs[naming.act(l).name] = (cur, cur_w, cur_shape)
    if cur_shape:
        raise SpecError("the last layer's output must be a vector (end with flatten and dense)")
    if callable(loss) and not isinstance(loss, str | tuple):
        loss = ("custom", loss(yhat_s, y_s))
    lobj = make_loss(loss, cur, cur_w, stages[-1])
    params = [p for s in stages for p in s.params]
    pen = _penalty(sp.sympify(penalty), params) if penalty is not None else None
    net = Network(
        name,
        tuple(stages),
        lobj,
        known,
        inp,
        len(layers),
        source,
        penalty=pen,
        input_shape=input_shape,
    )
    return budgets.check_sizes(names.check_network(net))
