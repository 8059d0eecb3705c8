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

from symgrad import budgets, names
from symgrad.errors import SpecError
from symgrad.ir import conv, map_checks, naming, softmax_split
from symgrad.ir import lets as let_names
from symgrad.ir.indices import BATCH, SAMPLE, I, idx, width
from symgrad.ir.network import Loss, Network, Param, Stage
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


#: PyTorch's default epsilon of its norm layers.
NORM_EPS = 1e-5


@dataclass(frozen=True)
class LayerNorm:
    """``torch.nn.LayerNorm(n)`` over one sample's features: ``gamma * (a - mu) /
    sqrt(var + eps) + beta``, mean and (biased) variance written as sums. Sugar over a map:
    the engine sees only the component form."""

    eps: float = NORM_EPS


@dataclass(frozen=True)
class RMSNorm:
    """``torch.nn.RMSNorm(n)``: ``gamma * a / sqrt(mean(a**2) + eps)`` (no shift)."""

    eps: float = NORM_EPS


@dataclass(frozen=True)
class BatchNorm:
    """``torch.nn.BatchNorm1d(n)`` in training mode: ``gamma * (a - mu) / sqrt(var + eps) +
    beta`` with the mean and (biased) variance of each feature over the samples of the
    batch. The one layer that couples the samples: its component form carries the sample
    index, ``a[s, i]``, and sums over the batch ``sum_t a[t, i] / N``."""

    eps: float = NORM_EPS


NORMS = (LayerNorm, RMSNorm, BatchNorm)


def layernorm_body(
    inp: sp.IndexedBase, gamma: sp.IndexedBase, beta: sp.IndexedBase, w: sp.Expr, eps: float
) -> sp.Expr:
    """The textbook LayerNorm component form (nested sums: the mean inside the variance)."""
    mu = sp.Sum(inp[j], (j, 0, w - 1)) / w
    var = sp.Sum((inp[k] - mu) ** 2, (k, 0, w - 1)) / w
    return gamma[i] * (inp[i] - mu) / sp.sqrt(var + sp.Float(eps)) + beta[i]


def rmsnorm_body(inp: sp.IndexedBase, gamma: sp.IndexedBase, w: sp.Expr, eps: float) -> sp.Expr:
    """The RMSNorm component form."""
    return gamma[i] * inp[i] / sp.sqrt(sp.Sum(inp[j] ** 2, (j, 0, w - 1)) / w + sp.Float(eps))


def batchnorm_body(
    inp: sp.IndexedBase, gamma: sp.IndexedBase, beta: sp.IndexedBase, eps: float
) -> sp.Expr:
    """The training-mode BatchNorm component form ``out[s, i]``: per feature ``i``, the mean
    and biased variance over the samples ``t, u`` of the batch (``BATCH`` of them)."""
    t, u = idx("t"), idx("u")
    mu = sp.Sum(inp[t, i], (t, 0, BATCH - 1)) / BATCH
    var = sp.Sum((inp[u, i] - mu) ** 2, (u, 0, BATCH - 1)) / BATCH
    return gamma[i] * (inp[SAMPLE, i] - mu) / sp.sqrt(var + sp.Float(eps)) + beta[i]


def _norm(layer: LayerNorm | RMSNorm | BatchNorm, l: int, inp, w_in) -> list[Stage]:
    gamma = sp.IndexedBase(naming.param("gamma", l).name, real=True)
    params = [Param(gamma.name, gamma, (w_in,), "ones", w_in)]
    out = sp.IndexedBase(naming.act(l).name, real=True)
    if isinstance(layer, BatchNorm):
        beta = sp.IndexedBase(naming.param("beta", l).name, real=True)
        params.append(Param(beta.name, beta, (w_in,), "zeros", w_in))
        body = batchnorm_body(inp, gamma, beta, layer.eps)
        return [
            Stage(
                out,
                inp,
                w_in,
                w_in,
                body,
                l,
                "map",
                "batchnorm",
                tuple(params),
                attrs=(("norm", "batchnorm"), ("eps", layer.eps), ("training", True)),
                sample=SAMPLE,
            )
        ]
    if isinstance(layer, LayerNorm):
        beta = sp.IndexedBase(naming.param("beta", l).name, real=True)
        params.append(Param(beta.name, beta, (w_in,), "zeros", w_in))
        body = layernorm_body(inp, gamma, beta, w_in, layer.eps)
        label = "layernorm"
    else:
        body = rmsnorm_body(inp, gamma, w_in, layer.eps)
        label = "rmsnorm"
    lets = let_names.norm_statistics(body, inp, w_in)
    return [Stage(out, inp, w_in, w_in, body, l, "map", label, tuple(params), lets=lets)]


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
        label = str(ind.base.label)
        if ind.base.label in own:
            continue
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


def _map(layer: Map, l: int, inp, w_in, sizes, outputs, earlier=None, in_shape=()) -> list[Stage]:
    tensor = len(layer.indices) > 1 or (layer.indices and layer.indices[0] != I)
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
    repl: dict[sp.Basic, sp.Basic] = {a: inp, n: w_in, m: w}
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
    named = let_names.expand(layer.lets)
    body = let_names.substitute(layer.lets, layer.expr).xreplace(repl)
    own = {inp.label, *(p.base.label for p in params if isinstance(p.base, sp.IndexedBase))}
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
    widths = set(sizes) | {w_in, w}
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


def _penalty(expr: sp.Expr, params: Sequence[Param]) -> sp.Expr:
    """Each additive term of ``expr`` summed over its free indices (ranges from the
    parameter axes they subscript): ``1e-4 * W1[p, q]**2`` is weight decay on W1."""
    by_name = {p.name: p for p in params}
    swap: dict[sp.Basic, sp.Basic] = {}
    for atom in expr.atoms(sp.Indexed, sp.Symbol):
        base = atom.base if isinstance(atom, sp.Indexed) else atom
        name = str(base.label) if isinstance(base, sp.IndexedBase) else str(base)
        if isinstance(atom, sp.Symbol) and (atom.is_integer or name not in by_name):
            continue
        if name not in by_name:
            raise SpecError(f"penalty: unknown parameter {name} (known: {', '.join(by_name)})")
        swap[base] = by_name[name].base
    expr = expr.xreplace(swap)
    out = sp.S.Zero
    for term in sp.Add.make_args(sp.expand(expr, mul=False, power_exp=False)):
        ranges: dict[sp.Symbol, sp.Expr] = {}
        for ind in term.atoms(sp.Indexed):
            p = next(q for q in params if q.base == ind.base)
            if len(p.shape) != len(ind.indices):
                raise SpecError(
                    f"penalty: {p.name} takes {len(p.shape)} indices, got {len(ind.indices)}"
                )
            for ix, dim in zip(ind.indices, p.shape, strict=True):
                if ix in ranges and ranges[ix] != dim:
                    raise SpecError(f"penalty: index {ix} runs over axes of different sizes")
                ranges[ix] = dim
        bound = {v for s_ in term.atoms(sp.Sum) for v, *_ in s_.limits}
        for ix in sorted(ranges, key=str):
            if ix not in bound:
                term = sp.Sum(term, (ix, 0, ranges[ix] - 1))
        out += term
    return out


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
        if isinstance(layer, conv.LAYERS):
            act = Activation.of(layer.activation) if isinstance(layer, conv.Conv) else None
            new = conv.stages_of(layer, l, cur, cur_shape, act)
        elif isinstance(layer, Map):
            earlier = {p.name: p for st in stages for p in st.params}
            new = _map(layer, l, cur, cur_w, known, outputs, earlier, cur_shape)
        elif cur_shape:
            raise SpecError(
                f"layer {l}: a {type(layer).__name__.lower()} layer needs a vector input, "
                f"got shape {list(cur_shape)} (add a flatten layer before it)"
            )
        elif isinstance(layer, Dense):
            new = _dense(layer, l, cur, cur_w, known)
        elif isinstance(layer, NORMS):
            new = _norm(layer, l, cur, cur_w)
        else:
            raise SpecError(f"layer {l}: expected Dense or Map, got {type(layer).__name__}")
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
