"""Stage 2, the component-form IR: a network is a DAG of component-form maps and a loss.

Every stage states one output component ``y[i]`` as a SymPy expression of its input
``x[.]`` and its own parameters, with ``i`` free and every other index bound by a
``Sum`` over a symbolic range. Dense layers, activations and losses (``layers.py``)
are constructors of these objects; the derivation engine never asks
which one it is looking at.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import sympy as sp

from symgrad.errors import SpecError
from symgrad.ir.indices import I


@dataclass(frozen=True)
class Param:
    """A trainable parameter: ``name`` (e.g. ``W2``), its base and its symbolic shape."""

    name: str
    base: sp.IndexedBase | sp.Symbol  # a Symbol for a 0-dim (scalar) parameter
    shape: tuple[sp.Expr, ...]
    init: str = "glorot"  # "glorot" (uniform, torch.nn.Linear-like), "zeros", "ones"
    fan_in: sp.Expr | None = None


@dataclass(frozen=True)
class Stage:
    """One component-form map ``out[i] = body`` of the previous stage's output ``inp``."""

    out: sp.IndexedBase
    inp: sp.IndexedBase
    width: sp.Expr
    in_width: sp.Expr
    body: sp.Expr
    layer: int
    kind: str  # "affine", "elementwise" or "map": for display only
    label: str  # "dense", "sigmoid", "softmax", a custom name ...
    params: tuple[Param, ...] = ()
    index: sp.Symbol = I
    #: Earlier outputs (or the input ``x``) the body reads besides ``inp``, with their
    #: widths: residual blocks and skip connections make the network a DAG.
    extra: tuple[tuple[sp.IndexedBase, sp.Expr], ...] = ()
    # A (channels, [height,] width) quantity: one free index per axis (empty for a vector,
    # whose free index is ``index``); ``in_shape`` likewise for the input. ``attrs`` records
    # the hyper-parameters a layer was built with (for the independent references only).
    indices: tuple[sp.Symbol, ...] = ()
    shape: tuple[sp.Expr, ...] = ()
    in_shape: tuple[sp.Expr, ...] = ()
    attrs: tuple = ()
    #: The sample index, for a stage that couples the samples of the batch (batch norm in
    #: training mode): its output is ``out[sample, index]``, and every array it reads is
    #: subscripted by a sample index first (``inp[sample, k]``, or a dummy of a sum over
    #: the batch, ``Sum(inp[t, k], (t, 0, BATCH - 1))``). None: the batch is implicit.
    sample: sp.Symbol | None = None
    #: Parameters of earlier layers the body reads (shared, "tied" parameters): owned and
    #: initialised by the layer that declares them; their gradients add every use.
    shared: tuple[Param, ...] = ()
    #: The shape of each of ``extra`` (empty for a vector): a tensor map may read earlier
    #: outputs of several axes.
    extra_shapes: tuple[tuple[sp.Expr, ...], ...] = ()
    #: Named sub-expressions of the body (a map's ``let`` table, a norm's mean and
    #: variance) in definition order, each written out in the stage's own arrays. The
    #: body has them substituted already: the engine never reads them, the documents
    #: show the derivation in these names.
    lets: tuple[tuple[sp.Symbol, sp.Expr], ...] = ()

    @property
    def name(self) -> str:
        return str(self.out)

    @property
    def inputs(self) -> tuple[tuple[sp.IndexedBase, sp.Expr], ...]:
        """Every array the body reads (``inp`` first) with its width."""
        return ((self.inp, self.in_width), *self.extra)


@dataclass(frozen=True)
class Loss:
    """Per-sample loss ``l`` (a scalar expression of ``yhat[i]`` and ``y[i]``).

    The batch loss is the mean over samples of ``l`` (PyTorch's reduction="mean"
    divides by n*C for elementwise losses: ``l`` carries the 1/C).
    ``identities`` are facts about valid targets used to simplify, e.g. sum_k y_k = 1.
    """

    name: str
    body: sp.Expr
    yhat: sp.IndexedBase
    target: sp.IndexedBase
    width: sp.Expr
    # (identity, what it constrains), e.g. ("sum_y_is_1", "targets")
    identities: tuple[tuple[str, str], ...] = ()
    requires_softmax: bool = False
    elementwise: sp.Expr | None = None  # l(yhat, y) for elementwise losses, in Symbols yhat, y


@dataclass(frozen=True)
class Network:
    """Stages in evaluation order (each reads earlier outputs) ending in a loss, with
    concrete sizes when known.

    ``penalty`` is a scalar expression of the parameters (weight decay) added once to the
    batch loss; its free indices were summed when it was built.
    """

    name: str
    stages: tuple[Stage, ...]
    loss: Loss
    sizes: dict[sp.Symbol, int] = field(default_factory=dict)
    input: sp.IndexedBase = sp.IndexedBase("x", real=True)
    n_layers: int = 0
    source: str = "<python>"
    penalty: sp.Expr | None = None
    input_shape: tuple[int, ...] = ()  # (channels, [height,] width) of a conv net's input
    #: Domain of valid targets for verification (spec field ``targets``; "auto": from the loss).
    targets: str = "auto"

    @property
    def params(self) -> tuple[Param, ...]:
        return tuple(p for s in self.stages for p in s.params)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def output(self) -> sp.IndexedBase:
        return self.stages[-1].out if self.stages else self.input

    @property
    def output_width(self) -> sp.Expr:
        return self.stages[-1].width if self.stages else self.input_width

    @property
    def input_width(self) -> sp.Expr:
        return self.stages[0].in_width

    def size(self, w: sp.Expr) -> int:
        """The concrete value of a width expression (needs every width to be known)."""
        v = sp.sympify(w)
        if v.is_Integer:
            return int(v)
        if v in self.sizes:  # a width symbol: no substitution (linear in the layers)
            return int(self.sizes[v])
        v = v.xreplace({k: sp.Integer(n) for k, n in self.sizes.items()})
        if not v.is_Integer:
            raise SpecError(f"width {w} is symbolic; give concrete sizes to generate code")
        return int(v)

    def shape(self, p: Param) -> tuple[int, ...]:
        return tuple(self.size(s) for s in p.shape)

    @property
    def is_concrete(self) -> bool:
        try:
            for s in self.stages:
                self.size(s.width)
            self.size(self.input_width)
        except SpecError:
            return False
        return True

    def with_sizes(self, **sizes: int) -> Network:
        """A copy with (more) concrete widths: ``net.with_sizes(n_0=3, n_1=4)``."""
        new = dict(self.sizes)
        for k, v in sizes.items():
            new[sp.Symbol(k, integer=True, positive=True)] = int(v)
        return replace(self, sizes=new)
