"""Stage 3, the chain rule: reverse accumulation in index notation.

Walking the stages backwards with the adjoint ``g[i] = dL/dy[i]`` of each stage's
output, every gradient is one contraction of a local derivative from ``sympy.diff``:

    dL/dx[k]       = Sum_i g[i] * dy[i]/dx[k]
    dL/dtheta[p,q] = Sum_i g[i] * dy[i]/dtheta[p,q]

followed by delta contraction (``contraction.py``), forward-value rewriting
(``forward_values.py``) and the matrix-form translation (``matrix_form.py``). The result
is a :class:`Derivation`: an ordered list of :class:`Step` in "derive as you go" order,
read by every printer; none of them derives anything again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import sympy as sp

from symgrad.calculus.contraction import contract, has_delta
from symgrad.calculus.forward_values import (
    cancel_scalar,
    centre_samples,
    pull_out,
    rewrite,
    tanh_from_ratio,
)
from symgrad.calculus.layout import batch, batch_mean, batched_step
from symgrad.calculus.matrix_form import to_matrix
from symgrad.calculus.reverse_indices import (
    _PARAM_IDX,
    _TENSOR_IDX,
    _array_form,
    _in_index,
    _is_tensor,
    _out_index,
    _out_limits,
    _out_names,
    _tensor_names,
)
from symgrad.calculus.softmax_values import rewrite_softmax
from symgrad.errors import DerivationError
from symgrad.ir.indices import BATCH, FREE_NAMES, PARAM_NAMES, K, T, canonical, idx
from symgrad.ir.naming import adjoint_name
from symgrad.ir.network import Network, Param, Stage


@dataclass(frozen=True, kw_only=True)
class Forward:
    """One forward equation ``out[i] = component`` and its per-sample matrix form
    (``None`` until the matrix-form pass has run)."""

    stage: Stage
    component: sp.Expr
    matrix: sp.Expr | None = None

    @property
    def batched(self) -> sp.Expr:
        """The batched form (samples as rows, ``layout.py``) of ``matrix``; ValueError
        where it has none."""
        return batch(self.matrix)


@dataclass(frozen=True, kw_only=True)
class Step:
    """One gradient of the backward pass.

    Attributes:
        grad: the adjoint's name (``delta2``, ``da1``, ``dW2``, ``db2``, ``dx``).
        wrt: the quantity differentiated (``z2``, ``a1``, ``W2``, ``x``).
        kind: "loss" (dL/dyhat), "input" (through a stage to its input) or "param".
        indices: free indices of ``component`` (canonical: i; or p, q).
        component: the contracted component form, in forward values.
        local: the local derivative dy[i]/dwrt[idx] (None for the loss step).
        jacobian: "loss", "diagonal", "linear" or "full" (the local Jacobian's structure).
        upstream: the adjoint of the stage output this step reads (None for the loss).
        matrix: the per-sample matrix form (filled in by the matrix-form pass,
            :func:`symgrad.calculus.matrix_form.matrix_pass`; None before it).
        shape: symbolic shape of the gradient.
        seed: whether this is where the loss enters (its batched form carries 1/n).
        fused: the loss gradient was substituted in (dL/dyhat is not materialised).
        needed: whether code computes it (dx and inlined loss gradients are not).
    """

    grad: str
    wrt: str
    layer: int
    kind: str
    indices: tuple[sp.Symbol, ...]
    component: sp.Expr
    local: sp.Expr | None
    local_indices: tuple[sp.Symbol, ...]
    jacobian: str
    upstream: str | None
    stage: Stage | None
    shape: tuple[sp.Expr, ...]
    matrix: sp.Expr | None = None
    seed: bool = False
    fused: bool = False
    needed: bool = True
    unfused: sp.Expr | None = None  # the component form before the loss gradient was fused in
    param: Param | None = None
    #: (layer, upstream adjoint) of every consumer when a quantity feeds several layers
    #: (a DAG): the component is the sum of their contributions. Empty for a chain.
    contributions: tuple[tuple[int, str], ...] = ()
    #: the gradient of the network's penalty term (weight decay), already in ``component``;
    #: added once per batch, not per sample.
    penalty: sp.Expr | None = None
    #: the local derivative before it is restated in forward values (indices as in
    #: ``local``); the loss step's dl/dyhat[i] as ``sympy.diff`` gives it, its sums not yet
    #: contracted. The documents show both forms.
    local_raw: sp.Expr | None = None

    @property
    def batched(self) -> sp.Expr:
        """The batched form (samples as rows, ``layout.py``) of ``matrix``: what code
        computes, a parameter gradient summed over the batch, the seed divided by n."""
        return batched_step(self)


#: Notebook renderers by format, filled in by :mod:`symgrad.documents.render`.
DISPLAY: dict[str, Callable[[Derivation], str]] = {}


@dataclass(frozen=True)
class Derivation:
    """The whole derivation: forward equations, the loss, and the backward steps in order."""

    network: Network
    forward: tuple[Forward, ...]
    loss: sp.Expr
    steps: tuple[Step, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def step(self, grad: str) -> Step:
        for s in self.steps:
            if s.grad == grad:
                return s
        raise KeyError(grad)

    def param_steps(self) -> dict[str, Step]:
        return {s.wrt: s for s in self.steps if s.kind == "param"}

    @property
    def loss_batched(self) -> sp.Expr:
        """The batch mean of the per-sample loss, batched (``layout.batch_mean``);
        DerivationError or ValueError where the loss has no matrix form."""
        return batch_mean(to_matrix(self.loss, ()))

    # Jupyter display. The documents stage registers its renderers in DISPLAY when it is
    # imported (``import symgrad`` does), so the calculus never imports the documents.
    def _repr_markdown_(self) -> str | None:
        show = DISPLAY.get("markdown")
        return show(self) if show else None

    def _repr_latex_(self) -> str | None:
        show = DISPLAY.get("latex")
        return show(self) if show else None


def grad_name(quantity: str) -> str:
    """The adjoint's name (see :func:`symgrad.ir.naming.adjoint_name`)."""
    return adjoint_name(quantity)


def _local(body: sp.Expr, wrt: sp.Indexed) -> sp.Expr:
    return contract(sp.diff(body, wrt))


def _through(stage: Stage, g: sp.Expr, wrt: sp.Indexed) -> sp.Expr:
    """Sum_i g(i) * local(i) contracted, with g an expression in the stage index."""
    local = rewrite(_local(stage.body, wrt), stage)
    return pull_out(contract(sp.Sum(g * local, (stage.index, 0, stage.width - 1))))


def _apply_identities(expr: sp.Expr, net: Network) -> sp.Expr:
    """Facts about valid targets: sum_k y_k = 1 for cross-entropy targets."""
    if not any(kind == "sum_y_is_1" for kind, _ in net.loss.identities):
        return expr
    y = net.loss.target
    return expr.replace(
        lambda e: (
            isinstance(e, sp.Sum)
            and e.function == y[e.limits[0][0]]
            and e.limits[0][1] == 0
            and e.limits[0][2] == net.loss.width - 1
        ),
        lambda e: sp.S.One,
    )


def _structure(local: sp.Expr, stage: Stage) -> str:
    # is_zero asks the assumption system, which takes minutes on deeply nested
    # derivatives: only small expressions get the full query (bounded time).
    if local == 0 or (sp.count_ops(local) <= 60 and local.is_zero):
        return "zero"
    if _is_tensor(stage):
        pairs = list(zip(_out_index(stage), _in_index(stage), strict=False))
        if (
            stage.indices
            and stage.shape == stage.in_shape
            and all(has_delta(local, a, b) for a, b in pairs)
        ):
            return "diagonal"
    elif stage.sample is None and has_delta(local, stage.index, K):
        return "diagonal"
    if not local.has(stage.inp):
        return "linear"
    return "full"


def _finish(expr: sp.Expr, free: tuple[sp.Symbol, ...], names: tuple[str, ...]) -> sp.Expr:
    return canonical(sp.factor_terms(tanh_from_ratio(expr)), free, names)


@dataclass(frozen=True)
class _Calculus:
    """The local derivatives and contracted adjoints of one stage."""

    params: tuple[tuple[sp.Expr, sp.Expr], ...]
    local: sp.Expr
    comp: sp.Expr
    structure: str
    #: (local, contracted adjoint) for each of ``stage.extra`` (other inputs read)
    extra: tuple[tuple[sp.Expr, sp.Expr], ...] = ()
    #: the local derivatives as ``sympy.diff`` gives them, before they are restated in
    #: forward values: the input's, then each parameter's (for the documents)
    raw: tuple[sp.Expr, ...] = ()
    #: (local, contracted adjoint) for each of ``stage.shared`` (earlier layers' parameters)
    shared: tuple[tuple[sp.Expr, sp.Expr], ...] = ()


#: Per-stage calculus memoised by the stage's shape (least recently used entries are
#: dropped beyond ``_CACHE_SIZE``: the cache stays bounded in a long-running process).
_CACHE: OrderedDict[tuple, _Calculus] = OrderedDict()
_CACHE_SIZE = 256


def _param_wrt(p: Param) -> sp.Expr:
    pidx = _PARAM_IDX[: len(p.shape)]
    return p.base[pidx] if pidx else p.base


def _compute(stage: Stage, g: sp.IndexedBase) -> _Calculus:
    # ``rewrite`` states derivatives in a vector stage's forward values; a (channels, h, w)
    # stage keeps its local derivatives as they are.
    # A stage that couples the samples keeps them as they are too (its output carries the
    # sample index, which the forward-value identities do not).
    rw = (lambda e, _s: e) if _is_tensor(stage) or stage.sample is not None else rewrite
    if stage.indices:  # a softmax over an index of a tensor map: its forward values
        rw = rewrite_softmax
    g_out = g[_out_index(stage)]
    limits = _out_limits(stage)

    def adjoint(local: sp.Expr, ranges: dict) -> sp.Expr:
        out = pull_out(contract(sp.Sum(g_out * local, *limits), ranges))
        if stage.sample is not None:  # through batch statistics: centred on the batch mean
            out = centre_samples(out, stage.inp, BATCH)
        return out

    raw_params: list[sp.Expr] = []

    def of_params(ps: tuple[Param, ...], keep_raw: bool) -> tuple[tuple[sp.Expr, sp.Expr], ...]:
        out = []
        for p in ps:
            raw = _local(stage.body, _param_wrt(p))
            if keep_raw:
                raw_params.append(raw)
            local = rw(raw, stage)
            out.append((local, adjoint(local, dict(zip(_PARAM_IDX, p.shape, strict=False)))))
        return tuple(out)

    params = of_params(stage.params, keep_raw=True)
    kin = _in_index(stage)
    in_shape = stage.in_shape or (
        (BATCH, stage.in_width) if stage.sample is not None else (stage.in_width,)
    )
    local_raw = _local(stage.body, stage.inp[kin])
    local = rw(local_raw, stage)
    extra = []
    shapes = stage.extra_shapes or ((),) * len(stage.extra)
    for (base, w), shp in zip(stage.extra, shapes, strict=True):
        kx = _TENSOR_IDX[: len(shp)] if shp else (K,)
        lo = rw(_local(stage.body, base[kx]), stage)
        extra.append((lo, adjoint(lo, dict(zip(kx, shp or (w,), strict=True)))))
    comp = adjoint(local, dict(zip(kin, in_shape, strict=False)))
    if stage.indices:
        comp = rewrite_softmax(comp, stage)
    structure = _structure(local_raw, stage)
    return _Calculus(
        params,
        local,
        comp,
        structure,
        tuple(extra),
        raw=(local_raw, *raw_params),
        shared=of_params(stage.shared, keep_raw=False),
    )


def _stage_calculus(stage: Stage, g: sp.IndexedBase) -> _Calculus:
    """``_compute`` memoised on the stage's shape: deep networks repeat the same few stages,
    so a stage is derived once under placeholder names and renamed (this keeps the cost of
    a derivation linear in depth with a small constant)."""
    ren: dict[sp.Basic, sp.Basic] = {
        stage.inp: sp.IndexedBase("_in", real=True),
        stage.out: sp.IndexedBase("_out", real=True),
        g: sp.IndexedBase("_g", real=True),
    }
    for n_, p in enumerate(stage.params):
        ren[p.base] = (
            sp.Symbol(f"_p{n_}", real=True)
            if isinstance(p.base, sp.Symbol)
            else sp.IndexedBase(f"_p{n_}", real=True)
        )
    for n_, (base, _) in enumerate(stage.extra):
        ren[base] = sp.IndexedBase(f"_x{n_}", real=True)
    wren: dict[sp.Basic, sp.Basic] = {}
    for n_, w in enumerate(
        dict.fromkeys([stage.in_width, stage.width, *(w for _, w in stage.extra)])
    ):
        if not w.is_Integer:
            wren[w] = sp.Symbol(f"_w{n_}", integer=True, positive=True)
    ren.update(wren)
    cstage = Stage(
        ren[stage.out],
        ren[stage.inp],
        stage.width.xreplace(wren),
        stage.in_width.xreplace(wren),
        stage.body.xreplace(ren),
        0,
        stage.kind,
        stage.label,
        tuple(
            Param(p.name, ren[p.base], tuple(s_.xreplace(wren) for s_ in p.shape))
            for p in stage.params
        ),
        stage.index,
        extra=tuple((ren[b], w.xreplace(wren)) for b, w in stage.extra),
        sample=stage.sample,
    )
    if _is_tensor(stage) or stage.shared or any(stage.extra_shapes):
        # concrete shapes, or parameters of other layers
        return _compute(stage, g)
    key = (
        cstage.body,
        cstage.width,
        cstage.in_width,
        tuple(p.shape for p in cstage.params),
        cstage.extra,
        cstage.sample,
    )
    if key in _CACHE:
        _CACHE.move_to_end(key)
    else:
        _CACHE[key] = _compute(cstage, ren[g])
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    c = _CACHE[key]
    back = {v: k for k, v in ren.items()}
    return _Calculus(
        tuple((lo.xreplace(back), co.xreplace(back)) for lo, co in c.params),
        c.local.xreplace(back),
        c.comp.xreplace(back),
        c.structure,
        tuple((lo.xreplace(back), co.xreplace(back)) for lo, co in c.extra),
        tuple(r.xreplace(back) for r in c.raw),
    )


def _penalty_grad(net: Network, p: Param) -> sp.Expr | None:
    """d(penalty)/d p[p, q, ...], contracted (None when the penalty does not involve p)."""
    if net.penalty is None or not net.penalty.has(p.base):
        return None
    return pull_out(contract(sp.diff(net.penalty, _param_wrt(p))))


def _fan_in_note(name: str, quantity: str, contributions: tuple[tuple[int, str], ...]) -> str:
    """``da1 receives contributions from layers 2 and 4 ...``: why an adjoint is a sum."""
    layers = sorted({lay for lay, _ in contributions})
    said = str(layers[0])
    if len(layers) > 1:
        said = ", ".join(str(lay) for lay in layers[:-1]) + f" and {layers[-1]}"
    what = ", ".join(u for _, u in contributions)
    return (
        f"fan-in: {name} receives contributions from layers {said}: {quantity} is read in "
        f"{len(contributions)} places, so their gradients ({what}) add up"
    )


def reverse_accumulate(net: Network) -> Derivation:
    """The chain-rule stage: every gradient of ``net`` in component form, contracted and in
    forward values, in derive-as-you-go order. The matrix form is the next stage
    (:func:`symgrad.calculus.matrix_form.matrix_pass`); :func:`symgrad.derive` runs both."""
    notes: list[str] = []
    # (channels, h, w) stages get their tensor form (W ⋆ a) here; the matrix-form pass
    # fills in the rest.
    forward = tuple(
        Forward(
            stage=s,
            component=s.body,
            matrix=_array_form(s, s.body, _out_index(s), s.shape),
        )
        for s in net.stages
    )
    steps: list[Step] = []
    out = net.output
    C = net.output_width

    # The loss gradient dl/dyhat[k].
    raw_loss = sp.diff(net.loss.body, out[K])
    g_loss = pull_out(contract(raw_loss))
    loss_name = grad_name(str(out))
    loss_comp = _finish(g_loss, (K,), FREE_NAMES)
    steps.append(
        Step(
            grad=loss_name,
            wrt=str(out),
            layer=net.n_layers,
            kind="loss",
            indices=(sp.Symbol("i", integer=True),),
            component=loss_comp,
            local=None,
            local_raw=canonical(raw_loss, (K,), FREE_NAMES),
            local_indices=(),
            jacobian="loss",
            upstream=None,
            stage=None,
            shape=(C,),
            seed=True,
        )
    )
    loss_step_index = 0

    # Contributions to each quantity's adjoint from the stages that read it. Stages are
    # walked in reverse evaluation order, so when stage si is done every consumer of the
    # previous stage's output has contributed: its adjoint is complete and can be stated.
    pending: dict[sp.IndexedBase, list[tuple[Stage, str, sp.Expr]]] = {}
    # Contributions of later layers to a shared parameter's gradient, by parameter name.
    uses: dict[str, list[tuple[Stage, str, sp.Expr]]] = {}
    upstream = loss_name
    for si in range(len(net.stages) - 1, -1, -1):
        stage = net.stages[si]
        g = sp.IndexedBase(upstream, real=True)
        # Parameters first (weight, bias), then pass to the stage's input.
        calc = _stage_calculus(stage, g)
        for p, (_, comp) in zip(stage.shared, calc.shared, strict=True):
            uses.setdefault(p.name, []).append((stage, upstream, comp))
        for p, (local, comp), raw in zip(stage.params, calc.params, calc.raw[1:], strict=True):
            pidx = _PARAM_IDX[: len(p.shape)]
            pen = _penalty_grad(net, p)
            if pen is not None:
                comp = comp + pen
            shared_uses = uses.pop(p.name, [])
            p_contrib: tuple[tuple[int, str], ...] = ()
            if shared_uses:
                comp = comp + sp.Add(*(c for _, _, c in shared_uses))
                p_contrib = ((stage.layer, upstream), *((s_.layer, u) for s_, u, _ in shared_uses))
                notes.append(_fan_in_note(grad_name(p.name), p.name, p_contrib))
            if comp.is_zero:
                notes.append(f"the gradient of {p.name} is identically zero")
            names = PARAM_NAMES[: len(pidx)]
            comp_c = _finish(comp, pidx, names)
            free = tuple(sp.Symbol(nm, integer=True) for nm in names)
            outs = _out_index(stage)
            onames = _out_names(stage)
            steps.append(
                Step(
                    grad=grad_name(p.name),
                    wrt=p.name,
                    layer=stage.layer,
                    kind="param",
                    indices=free,
                    component=comp_c,
                    local=canonical(local, (*outs, *pidx), (*onames, *names)),
                    local_raw=canonical(raw, (*outs, *pidx), (*onames, *names)),
                    local_indices=(*(idx(nm) for nm in onames), *free),
                    jacobian="param",
                    upstream=upstream,
                    stage=stage,
                    shape=p.shape,
                    param=p,
                    penalty=_finish(pen, pidx, names) if pen is not None else None,
                    contributions=p_contrib,
                    matrix=_array_form(stage, comp_c, free, p.shape, param=True),
                )
            )
        for (base, _), (_, comp_x) in zip(stage.extra, calc.extra, strict=True):
            pending.setdefault(base, []).append((stage, upstream, comp_x))
        wrt = stage.inp[_in_index(stage)]
        local, comp, structure = calc.local, calc.comp, calc.structure
        others = pending.pop(stage.inp, [])
        if others and stage.sample is not None:
            raise DerivationError(
                f"{stage.inp} feeds layers {stage.layer} and "
                f"{', '.join(str(s_.layer) for s_, _, _ in others)}: a quantity read by a "
                "stage that couples the samples cannot feed other layers yet"
            )
        fused = False
        unfused = None
        last = upstream == loss_name and si == len(net.stages) - 1
        if last and not stage.params and not others and stage.sample is None:
            g_expr = g_loss.xreplace({K: stage.index})
            cand = _apply_identities(_through(stage, g_expr, wrt), net)
            cand = cancel_scalar(rewrite(cand, stage))
            if sp.count_ops(cand) <= sp.count_ops(comp) + sp.count_ops(g_loss):
                unfused = _finish(comp, (K,), FREE_NAMES)
                comp, fused = cand, True
                steps[loss_step_index] = replace(steps[loss_step_index], needed=False)
                if net.loss.identities:
                    notes.append("used sum_k y_k = 1 (targets are one-hot or probabilities)")
        name = grad_name(str(stage.inp))
        contributions: tuple[tuple[int, str], ...] = ()
        if others:
            comp = comp + sp.Add(*(c for _, _, c in others))
            contributions = ((stage.layer, upstream), *((s_.layer, u) for s_, u, _ in others))
            notes.append(_fan_in_note(name, str(stage.inp), contributions))
        kin = _in_index(stage)
        matrix = None
        if _is_tensor(stage):
            # (channels, h, w) quantities: free indices c, h, w; the local derivative's
            # output indices keep their own names, its input indices are primed.
            fnames = _tensor_names(len(kin)) if stage.in_shape else FREE_NAMES
            outs = _out_index(stage)
            onames = _out_names(stage)
            lnames = (*onames, *(nm + "'" for nm in fnames))
            comp_c = _finish(comp, kin, fnames)
            free = tuple(idx(nm) for nm in fnames)
            local_c = canonical(local, (*outs, *kin), lnames)
            raw_c = canonical(calc.raw[0], (*outs, *kin), lnames)
            local_idx = tuple(idx(nm) for nm in lnames)
            if stage.in_shape:
                matrix = _array_form(stage, comp_c, free, stage.in_shape)
            gshape = stage.in_shape or (stage.in_width,)
        elif stage.sample is not None:
            # the adjoint of sample s's input: every sample t of the batch contributes
            comp_c = _finish(comp, (T, K), ("s", "i"))
            free = (idx("s"), idx("i"))
            local_c = canonical(local, (stage.sample, stage.index, T, K), ("s", "i", "t", "k"))
            raw_c = canonical(calc.raw[0], (stage.sample, stage.index, T, K), ("s", "i", "t", "k"))
            local_idx = (idx("s"), idx("i"), idx("t"), idx("k"))
            gshape = (BATCH, stage.in_width)
        else:
            comp_c = _finish(comp, (K,), FREE_NAMES)
            free = (sp.Symbol("i", integer=True),)
            local_c = canonical(local, (stage.index, K), ("i", "k"))
            raw_c = canonical(calc.raw[0], (stage.index, K), ("i", "k"))
            local_idx = (idx("i"), idx("k"))
            gshape = (stage.in_width,)
        steps.append(
            Step(
                grad=name,
                wrt=str(stage.inp),
                layer=stage.layer,
                kind="input",
                indices=free,
                component=comp_c,
                local=local_c,
                local_raw=raw_c,
                local_indices=local_idx,
                jacobian=structure,
                upstream=upstream,
                stage=stage,
                shape=gshape,
                matrix=matrix,
                seed=fused,
                fused=fused,
                needed=si > 0,
                unfused=unfused,
                contributions=contributions,
            )
        )
        upstream = name
    return Derivation(net, forward, net.loss.body, tuple(steps), tuple(notes))


__all__ = [
    "Derivation",
    "DerivationError",
    "Forward",
    "Step",
    "grad_name",
    "reverse_accumulate",
]
