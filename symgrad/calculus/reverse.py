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

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import sympy as sp

from symgrad.calculus.contraction import contract, has_delta
from symgrad.calculus.forward_values import cancel_scalar, pull_out, rewrite, tanh_from_ratio
from symgrad.calculus.matrix_form import Comp, Once, matrix_or_component
from symgrad.errors import DerivationError
from symgrad.ir.indices import FREE_NAMES, PARAM_NAMES, K, P, Q, R, canonical, idx
from symgrad.ir.network import Network, Param, Stage

_PARAM_IDX = (P, Q, R)


@dataclass(frozen=True)
class Forward:
    """One forward equation ``out[i] = component`` and its per-sample matrix form."""

    stage: Stage
    component: sp.Expr
    matrix: sp.Expr


@dataclass(frozen=True)
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
        matrix: the per-sample matrix form (see matrix_form.py).
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
    matrix: sp.Expr
    shape: tuple[sp.Expr, ...]
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

    # Jupyter display. The documents stage registers its renderers in DISPLAY when it is
    # imported (``import symgrad`` does), so the calculus never imports the documents.
    def _repr_markdown_(self) -> str | None:
        show = DISPLAY.get("markdown")
        return show(self) if show else None

    def _repr_latex_(self) -> str | None:
        show = DISPLAY.get("latex")
        return show(self) if show else None


def grad_name(quantity: str) -> str:
    """The adjoint's name: dL/dz2 is delta2, dL/da1 is da1, dL/dW2 is dW2, dL/dx is dx."""
    if quantity.startswith("z") and quantity[1:].isdigit():
        return "delta" + quantity[1:]
    return "d" + quantity


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
    if local.is_zero:
        return "zero"
    if has_delta(local, stage.index, K):
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


_CACHE: dict[tuple, _Calculus] = {}


def _param_wrt(p: Param) -> sp.Expr:
    pidx = _PARAM_IDX[: len(p.shape)]
    return p.base[pidx] if pidx else p.base


def _compute(stage: Stage, g: sp.IndexedBase) -> _Calculus:
    def adjoint(local: sp.Expr) -> sp.Expr:
        return pull_out(contract(sp.Sum(g[stage.index] * local, (stage.index, 0, stage.width - 1))))

    params = []
    for p in stage.params:
        local = rewrite(_local(stage.body, _param_wrt(p)), stage)
        params.append((local, adjoint(local)))
    local_raw = _local(stage.body, stage.inp[K])
    local = rewrite(local_raw, stage)
    extra = []
    for base, _ in stage.extra:
        lo = rewrite(_local(stage.body, base[K]), stage)
        extra.append((lo, adjoint(lo)))
    return _Calculus(
        tuple(params), local, adjoint(local), _structure(local_raw, stage), tuple(extra)
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
        tuple((ren[b], w.xreplace(wren)) for b, w in stage.extra),
    )
    key = (
        cstage.body,
        cstage.width,
        cstage.in_width,
        tuple(p.shape for p in cstage.params),
        cstage.extra,
    )
    if key not in _CACHE:
        _CACHE[key] = _compute(cstage, ren[g])
    c = _CACHE[key]
    back = {v: k for k, v in ren.items()}
    return _Calculus(
        tuple((lo.xreplace(back), co.xreplace(back)) for lo, co in c.params),
        c.local.xreplace(back),
        c.comp.xreplace(back),
        c.structure,
        tuple((lo.xreplace(back), co.xreplace(back)) for lo, co in c.extra),
    )


def _param_matrix(comp, pen, free, shape, net) -> sp.Expr:
    """A parameter gradient's matrix form; a penalty's part is added once per batch."""
    if not free:  # a scalar parameter: the component form, summed over the batch
        names = sp.Tuple(*(sp.Symbol(p) for p in net.param_names))
        if pen is None:
            return Comp(comp, sp.Tuple(), sp.Tuple(), names)
        data = sp.expand(comp - pen, mul=False, power_exp=False, log=False, multinomial=False)
        return Comp(data, sp.Tuple(), sp.Tuple(), names) + Once(
            Comp(pen, sp.Tuple(), sp.Tuple(), names)
        )
    if pen is None:
        return matrix_or_component(comp, free, shape, net, param=True)
    data = sp.expand(comp - pen, mul=False, power_exp=False, log=False, multinomial=False)
    m = matrix_or_component(data, free, shape, net, param=True) if not data.is_zero else 0
    return m + Once(matrix_or_component(pen, free, shape, net, param=True))


def _penalty_grad(net: Network, p: Param) -> sp.Expr | None:
    """d(penalty)/d p[p, q, ...], contracted (None when the penalty does not involve p)."""
    if net.penalty is None or not net.penalty.has(p.base):
        return None
    return pull_out(contract(sp.diff(net.penalty, _param_wrt(p))))


def derive(net: Network) -> Derivation:
    """Derive every gradient of ``net`` (component and matrix form), in derive-as-you-go order."""
    notes: list[str] = []
    forward = tuple(
        Forward(s, s.body, matrix_or_component(s.body, (s.index,), (s.width,), net))
        for s in net.stages
    )
    steps: list[Step] = []
    out = net.output
    C = net.output_width

    # The loss gradient dl/dyhat[k].
    g_loss = pull_out(contract(sp.diff(net.loss.body, out[K])))
    loss_name = grad_name(str(out))
    loss_comp = _finish(g_loss, (K,), FREE_NAMES)
    steps.append(
        Step(
            loss_name,
            str(out),
            net.n_layers,
            "loss",
            (sp.Symbol("i", integer=True),),
            loss_comp,
            None,
            (),
            "loss",
            None,
            None,
            matrix_or_component(loss_comp, (sp.Symbol("i", integer=True),), (C,), net),
            (C,),
            seed=True,
        )
    )
    loss_step_index = 0

    # Contributions to each quantity's adjoint from the stages that read it. Stages are
    # walked in reverse evaluation order, so when stage si is done every consumer of the
    # previous stage's output has contributed: its adjoint is complete and can be stated.
    pending: dict[sp.IndexedBase, list[tuple[Stage, str, sp.Expr]]] = {}
    upstream = loss_name
    for si in range(len(net.stages) - 1, -1, -1):
        stage = net.stages[si]
        g = sp.IndexedBase(upstream, real=True)
        # Parameters first (weight, bias), then pass to the stage's input.
        calc = _stage_calculus(stage, g)
        for p, (local, comp) in zip(stage.params, calc.params, strict=True):
            pidx = _PARAM_IDX[: len(p.shape)]
            pen = _penalty_grad(net, p)
            if pen is not None:
                comp = comp + pen
            if comp.is_zero:
                notes.append(f"the gradient of {p.name} is identically zero")
            names = PARAM_NAMES[: len(pidx)]
            comp_c = _finish(comp, pidx, names)
            free = tuple(sp.Symbol(nm, integer=True) for nm in names)
            pen_c = _finish(pen, pidx, names) if pen is not None else None
            steps.append(
                Step(
                    grad_name(p.name),
                    p.name,
                    stage.layer,
                    "param",
                    free,
                    comp_c,
                    canonical(local, (stage.index, *pidx), ("i", *names)),
                    (idx("i"), *free),
                    "param",
                    upstream,
                    stage,
                    _param_matrix(comp_c, pen_c, free, p.shape, net),
                    p.shape,
                    param=p,
                    penalty=pen_c,
                )
            )
        for (base, _), (_, comp_x) in zip(stage.extra, calc.extra, strict=True):
            pending.setdefault(base, []).append((stage, upstream, comp_x))
        wrt = stage.inp[K]
        local, comp, structure = calc.local, calc.comp, calc.structure
        others = pending.pop(stage.inp, [])
        fused = False
        unfused = None
        if upstream == loss_name and si == len(net.stages) - 1 and not stage.params and not others:
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
            layers = sorted({lay for lay, _ in contributions})
            said = ", ".join(str(lay) for lay in layers[:-1]) + f" and {layers[-1]}"
            if len(layers) == 1:
                said = str(layers[0])
            notes.append(
                f"{name} receives contributions from layers {said}: {str(stage.inp)} feeds "
                f"{len(contributions)} places, so their gradients add up"
            )
        comp_c = _finish(comp, (K,), FREE_NAMES)
        free = (sp.Symbol("i", integer=True),)
        steps.append(
            Step(
                name,
                str(stage.inp),
                stage.layer,
                "input",
                free,
                comp_c,
                canonical(local, (stage.index, K), ("i", "k")),
                (idx("i"), idx("k")),
                structure,
                upstream,
                stage,
                matrix_or_component(comp_c, free, (stage.in_width,), net),
                (stage.in_width,),
                seed=fused,
                fused=fused,
                needed=si > 0,
                unfused=unfused,
                contributions=contributions,
            )
        )
        upstream = name
    return Derivation(net, forward, net.loss.body, tuple(steps), tuple(notes))


__all__ = ["Derivation", "DerivationError", "Forward", "Step", "derive", "grad_name"]
