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

from symgrad.calculus.contraction import contract
from symgrad.calculus.forward_values import (
    cancel_scalar,
    pull_out,
    rewrite,
)
from symgrad.calculus.layout import batch, batch_mean, batched_step
from symgrad.calculus.local_matrix import jacobian_matrix, matrix_or_none
from symgrad.calculus.matrix_form import to_matrix
from symgrad.calculus.reasons import (
    Contraction,
    Reason,
    Rule,
    contraction,
    function_derivative,
    fusion_forms,
    own_functions,
    rules_used,
)
from symgrad.calculus.renamed_memo import is_zero
from symgrad.calculus.reverse_indices import _array_form, _out_names, _tensor_names
from symgrad.calculus.stage_calculus import (  # _CACHE: cleared by benchmarks
    _CACHE,  # noqa: F401
    _PARAM_IDX,
    Named,
    _in_index,
    _is_tensor,
    _local,
    _out_index,
    _param_wrt,
    canonical_form,
    finish,
    stage_calculus,
)
from symgrad.errors import DerivationError
from symgrad.ir.indices import BATCH, FREE_NAMES, PARAM_NAMES, K, T, idx
from symgrad.ir.naming import adjoint_name
from symgrad.ir.network import Network, Param, Stage


@dataclass(frozen=True, kw_only=True)
class Forward:
    """One forward equation ``out[i] = component`` and its per-sample matrix form
    (``None`` until the matrix-form pass has run)."""

    stage: Stage
    component: sp.Expr
    matrix: sp.Expr | None = None
    #: The per-sample matrix form of each of the stage's named sub-expressions
    #: (``stage.lets``) that has a neat one: a scalar of the sample (``sum(a1)/n_1``) or
    #: a vector (``(a1 - mu)/sqrt(sigma2 + eps)``). Filled in by the matrix-form pass.
    lets: tuple[tuple[sp.Symbol, sp.Expr], ...] = ()

    @property
    def batched(self) -> sp.Expr:
        """The batched form (samples as rows, ``layout.py``) of ``matrix``; ValueError
        where it has none."""
        return batch(self.matrix)

    @property
    def lets_batched(self) -> tuple[tuple[sp.Symbol, sp.Expr], ...]:
        """The batched form of each of ``lets`` that has one (a scalar of the sample is a
        column, one entry per row)."""
        out = []
        for sym, m in self.lets:
            try:
                out.append((sym, batch(m)))
            except ValueError:
                continue
        return tuple(out)


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
    #: the rules of differentiation the local derivative uses (``reasons.py``): the
    #: reason a document gives for it (with the structure and contraction: ``reason``)
    rules: tuple[Rule, ...] = ()

    @property
    def batched(self) -> sp.Expr:
        """The batched form (samples as rows, ``layout.py``) of ``matrix``: what code
        computes, a parameter gradient summed over the batch, the seed divided by n."""
        return batched_step(self)

    @property
    def local_matrix(self) -> sp.Expr | None:
        """The matrix ``[d out_i / d in_k]`` of the local Jacobian (``W``,
        ``diag(sigma'(z))``; ``local_matrix.py``, memoised), None where the step has no
        local derivative or it has no matrix form."""
        if self.local is None:
            return None
        return jacobian_matrix(self.local, self.jacobian == "diagonal")

    @property
    def unfused_matrix(self) -> sp.Expr | None:
        """The per-sample matrix form of ``unfused`` (the adjoint before the loss
        gradient was fused in), None where there is none."""
        return matrix_or_none(self.unfused, (_I,))

    @property
    def contraction(self) -> Contraction | None:
        """How the chain rule's sum meets the Kronecker brackets of the local derivative:
        the sum over the output index ``i`` of ``local``, or for the loss step the sum over
        the loss's own index in ``local_raw``; None where no bracket names that index
        (memoised)."""
        if self.kind == "loss":
            raw = self.local_raw
            if raw is None or not raw.has(sp.KroneckerDelta):
                return None
            sums = sorted(raw.atoms(sp.Sum), key=sp.default_sort_key)
            return contraction(raw, sums[0].limits[0][0]) if sums else None
        return contraction(self.local, _I) if self.local is not None else None

    @property
    def reason(self) -> Reason:
        """Why the local derivative is what it is: the rules, the Jacobian's structure,
        the contraction, and each activation function of the stage's input with its
        derivative from its definition (``reasons.py``)."""
        functions: tuple = ()
        if self.stage is not None:
            applied = own_functions(self.stage.body, self.stage.inp[_I])
            functions = tuple(function_derivative(type(f)) for f in applied)
        return Reason(self.rules, self.jacobian, self.contraction, functions)


#: The output index of a local derivative ``d out_i / d in_k`` (the chain rule's sum).
_I = sp.Symbol("i", integer=True)


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

    def fusion(self, st: Step) -> tuple[sp.Expr, ...]:
        """For a step the loss gradient was fused into (``st.fused``): its adjoint with
        the loss gradient substituted, then simplified, form by form, in the free index
        ``k`` (``reasons.fusion_forms``); empty for any other step."""
        loss_step = next((x for x in self.steps if x.kind == "loss"), None)
        if not st.fused or st.unfused is None or st.upstream is None or loss_step is None:
            return ()
        return fusion_forms(st.unfused, st.upstream, loss_step.component, self.network.loss)

    @property
    def loss_matrix(self) -> sp.Expr | None:
        """The per-sample loss in matrix form, None where it has none."""
        return matrix_or_none(self.loss, ())

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


def _param_step(
    net: Network,
    stage: Stage,
    p: Param,
    named: Named,
    lcr: tuple[sp.Expr, sp.Expr, sp.Expr],
    upstream: str,
    shared_uses: list[tuple[Stage, str, sp.Expr]],
    notes: list[str],
) -> Step:
    """The gradient of parameter ``p`` of ``stage`` (``lcr``: its local derivative,
    contracted adjoint and raw local derivative, in ``named``'s placeholder names), with
    the penalty's gradient and later layers' uses of a shared parameter added."""
    local, comp, raw = lcr
    pidx = _PARAM_IDX[: len(p.shape)]
    names = PARAM_NAMES[: len(pidx)]
    pen = _penalty_grad(net, p)
    p_contrib: tuple[tuple[int, str], ...] = ()
    if pen is None and not shared_uses:
        zero = is_zero(comp)
        comp_c = named.finished(comp, pidx, names)
    else:
        comp = named.named(comp)
        if pen is not None:
            comp = comp + pen
        if shared_uses:
            comp = comp + sp.Add(*(c for _, _, c in shared_uses))
            p_contrib = ((stage.layer, upstream), *((s_.layer, u) for s_, u, _ in shared_uses))
            notes.append(_fan_in_note(grad_name(p.name), p.name, p_contrib))
        zero = is_zero(comp)
        comp_c = finish(comp, pidx, names)
    if zero:
        notes.append(f"the gradient of {p.name} is identically zero")
    free = tuple(sp.Symbol(nm, integer=True) for nm in names)
    outs = _out_index(stage)
    onames = _out_names(stage)
    return Step(
        grad=grad_name(p.name),
        wrt=p.name,
        layer=stage.layer,
        kind="param",
        indices=free,
        component=comp_c,
        local=named.canonical(local, (*outs, *pidx), (*onames, *names)),
        local_raw=named.canonical(raw, (*outs, *pidx), (*onames, *names)),
        local_indices=(*(idx(nm) for nm in onames), *free),
        jacobian="param",
        upstream=upstream,
        stage=stage,
        shape=p.shape,
        param=p,
        penalty=finish(pen, pidx, names) if pen is not None else None,
        contributions=p_contrib,
        matrix=_array_form(stage, comp_c, free, p.shape, param=True),
        rules=rules_used(stage.body, p.base),
    )


def _input_step(stage: Stage, named: Named, comp: sp.Expr | None, upstream: str) -> Step:
    """The gradient through ``stage`` to its input: ``comp`` (in the stage's names), or
    the stage's own contracted adjoint when None."""
    calc = named.calc

    def fin(free: tuple[sp.Symbol, ...], fnames: tuple[str, ...]) -> sp.Expr:
        if comp is None:
            return named.finished(calc.comp, free, fnames)
        return finish(comp, free, fnames)

    kin = _in_index(stage)
    matrix = None
    if _is_tensor(stage):
        # (channels, h, w) quantities: free indices c, h, w; the local derivative's
        # output indices keep their own names, its input indices are primed.
        fnames = _tensor_names(len(kin)) if stage.in_shape else FREE_NAMES
        onames = _out_names(stage)
        lidx: tuple[sp.Symbol, ...] = (*_out_index(stage), *kin)
        lnames = (*onames, *(nm + "'" for nm in fnames))
        comp_c = fin(kin, fnames)
        free = tuple(idx(nm) for nm in fnames)
        if stage.in_shape:
            matrix = _array_form(stage, comp_c, free, stage.in_shape)
        gshape = stage.in_shape or (stage.in_width,)
    elif stage.sample is not None:
        # the adjoint of sample s's input: every sample t of the batch contributes
        comp_c = fin((T, K), ("s", "i"))
        free = (idx("s"), idx("i"))
        lidx, lnames = (stage.sample, stage.index, T, K), ("s", "i", "t", "k")
        gshape = (BATCH, stage.in_width)
    else:
        comp_c = fin((K,), FREE_NAMES)
        free = (sp.Symbol("i", integer=True),)
        lidx, lnames = (stage.index, K), ("i", "k")
        gshape = (stage.in_width,)
    return Step(
        grad=grad_name(str(stage.inp)),
        wrt=str(stage.inp),
        layer=stage.layer,
        kind="input",
        indices=free,
        component=comp_c,
        local=named.canonical(calc.local, lidx, lnames),
        local_raw=named.canonical(calc.raw[0], lidx, lnames),
        local_indices=tuple(idx(nm) for nm in lnames),
        jacobian=calc.structure,
        upstream=upstream,
        stage=stage,
        shape=gshape,
        matrix=matrix,
        rules=rules_used(stage.body, stage.inp),
    )


def _loss_step(net: Network) -> tuple[sp.Expr, Step]:
    """The loss gradient dl/dyhat[k] (contracted, index ``K``) and its step."""
    out = net.output
    raw_loss = sp.diff(net.loss.body, out[K])
    g_loss = pull_out(contract(raw_loss))
    step = Step(
        grad=grad_name(str(out)),
        wrt=str(out),
        layer=net.n_layers,
        kind="loss",
        indices=(sp.Symbol("i", integer=True),),
        component=finish(g_loss, (K,), FREE_NAMES),
        local=None,
        local_raw=canonical_form(raw_loss, (K,), FREE_NAMES),
        local_indices=(),
        jacobian="loss",
        upstream=None,
        stage=None,
        shape=(net.output_width,),
        seed=True,
        rules=rules_used(net.loss.body, out),
    )
    return g_loss, step


def _fused(
    net: Network, stage: Stage, named: Named, g_loss: sp.Expr
) -> tuple[sp.Expr, sp.Expr] | None:
    """The adjoint through the last stage with the loss gradient substituted in, and the
    adjoint without it (finished), where substituting costs no more operations."""
    wrt = stage.inp[_in_index(stage)]
    g_expr = g_loss.xreplace({K: stage.index})
    cand = _apply_identities(_through(stage, g_expr, wrt), net)
    cand = cancel_scalar(rewrite(cand, stage))
    own = named.named(named.calc.comp)
    if sp.count_ops(cand) > sp.count_ops(own) + sp.count_ops(g_loss):
        return None
    return cand, named.finished(named.calc.comp, (K,), FREE_NAMES)


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
    g_loss, loss_step = _loss_step(net)
    loss_name = loss_step.grad
    steps: list[Step] = [loss_step]
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
        # Parameters first (weight, bias), then pass to the stage's input.
        named = stage_calculus(stage, sp.IndexedBase(upstream, real=True))
        calc = named.calc
        for p, (_, comp) in zip(stage.shared, calc.shared, strict=True):
            uses.setdefault(p.name, []).append((stage, upstream, named.named(comp)))
        for p, lc, raw in zip(stage.params, calc.params, calc.raw[1:], strict=True):
            shared_uses = uses.pop(p.name, [])
            steps.append(
                _param_step(net, stage, p, named, (*lc, raw), upstream, shared_uses, notes)
            )
        for (base, _), (_, comp_x) in zip(stage.extra, calc.extra, strict=True):
            pending.setdefault(base, []).append((stage, upstream, named.named(comp_x)))
        others = pending.pop(stage.inp, [])
        if others and stage.sample is not None:
            raise DerivationError(
                f"{stage.inp} feeds layers {stage.layer} and "
                f"{', '.join(str(s_.layer) for s_, _, _ in others)}: a quantity read by a "
                "stage that couples the samples cannot feed other layers yet"
            )
        # the adjoint as derived (None), or with the loss gradient fused in / fan-in added
        adj: sp.Expr | None = None
        unfused = None
        last = upstream == loss_name and si == len(net.stages) - 1
        fused = None
        if last and not stage.params and not others and stage.sample is None:
            fused = _fused(net, stage, named, g_loss)
        if fused is not None:
            adj, unfused = fused
            steps[loss_step_index] = replace(steps[loss_step_index], needed=False)
            if net.loss.identities:
                notes.append("used sum_k y_k = 1 (targets are one-hot or probabilities)")
        name = grad_name(str(stage.inp))
        contributions: tuple[tuple[int, str], ...] = ()
        if others:
            adj = named.named(calc.comp) + sp.Add(*(c for _, _, c in others))
            contributions = ((stage.layer, upstream), *((s_.layer, u) for s_, u, _ in others))
            notes.append(_fan_in_note(name, str(stage.inp), contributions))
        step = _input_step(stage, named, adj, upstream)
        steps.append(
            replace(
                step,
                seed=unfused is not None,
                fused=unfused is not None,
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
