"""Stage 5 (lower), the lowering pass: a stable derivation -> the lowered program.

The target-free program every backend prints: the forward equations, the loss and each
backward step's batched matrix form (the row-major layout of ``layout.py``, component
fallbacks lowered to array code by ``einsum.py``), with the stability rules of
``stability.py`` applied to every batched expression. Each statement keeps its component
formula, its section, the stability rewrites that produced it and, where its expression
is not of the quantity's full shape, the shape to broadcast it to. Every choice is made
from the expressions, never from a layer's or a loss's name.

The driver runs it (:func:`symgrad.pipeline.lower`, memoised); a backend only prints the
:class:`LoweredProgram` (its ``code``: the expressions ready for printing, with softmax
and log-sum-exp of one argument shared).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property

import sympy as sp
from sympy.codegen.cfunctions import log1p

from symgrad.calculus.einsum import LOWERED, Einsum, Full, lower
from symgrad.calculus.forward_values import tanh_from_ratio
from symgrad.calculus.layout import (
    BMatMul,
    BOuter,
    ColSum,
    N,
    RowSum,
    batch,
    batched_step,
    lower_fallbacks,
)
from symgrad.calculus.matrix_form import Comp, Vec, to_matrix
from symgrad.calculus.reverse import Derivation, Step
from symgrad.calculus.stability import (
    COMPONENT_LOGSUMEXP,
    COMPONENT_SOFTMAX,
    GUARD_RULES,
    IR_RULES,
    LOG_THROUGH_OUTPUT,
    PROGRAM_RULES,
    SIGMOID_COMPLEMENT,
    Applied,
    LogSumExp,
    RowMax,
    SafeLog,
    SafeLog1p,
    Softmax,
    Total,
    share_softmax_logsumexp,
    stabilise,
)
from symgrad.calculus.stability_hazards import Hazard, hazards
from symgrad.errors import SpecError
from symgrad.ir import ops as F
from symgrad.ir.network import Network
from symgrad.ir.plain import plain


@dataclass(frozen=True)
class LoweredItem:
    """One target-free statement ``target = expr`` (batched, stabilised, before CSE)."""

    target: str
    expr: sp.Expr
    comment: tuple[str, ...]
    section: str  # "forward", "loss" or "backward"
    formula: str  # the component formula it computes (one sample)
    applied: tuple[Applied, ...]  # the stability rewrites that produced ``expr``
    # The full shape to broadcast to when ``expr`` is not of it (a constant activation or
    # loss gradient, a map summing over its input into a column), as shape code.
    widen: str | None = None


@dataclass(frozen=True)
class LoweredProgram:
    """The whole lowered program: every statement, the loss value's expression, and the
    expressions as a printer reads them (``code``, one per item, and ``total_code``)."""

    derivation: Derivation
    items: tuple[LoweredItem, ...]
    total: sp.Expr  # the batch sum of the per-sample loss, in the l<k> temporaries
    #: per parameter, the variable holding the program's result (the tangent programs)
    outputs: Mapping[str, str] = field(default_factory=dict)

    @cached_property
    def code(self) -> tuple[sp.Expr, ...]:
        """Each item's expression as printers read it (see :func:`finish_all`)."""
        return tuple(finish_all([it.expr for it in self.items], self.derivation.network))

    @cached_property
    def total_code(self) -> sp.Expr:
        """The loss value's expression as printers read it."""
        return finish(self.total, concrete_sizes(self.derivation.network))

    def hazards(self, item: LoweredItem) -> list[Hazard]:
        """The numerical hazards left in ``item``'s expression (``symgrad audit``)."""
        net = self.derivation.network
        return hazards(item.expr, {Vec(str(net.input)), Vec(str(net.loss.target))})


def recognise(expr: sp.Expr, log: list[Applied] | None = None) -> sp.Expr:
    """``expr`` with the stability rules applied (``calculus/stability.py``) and
    ``sinh/cosh`` ratios written as ``tanh``."""
    return stabilise(tanh_from_ratio(expr), PROGRAM_RULES, log)


class Shapes:
    """Which batched expressions have the full shape (n, width): a printer updates such a
    fresh array in place, the lowering broadcasts the others where a full one is needed.
    ``params`` are the parameters' names (a parameter is not a per-sample array)."""

    def __init__(self, params: Iterable[str]) -> None:
        self.params = set(params)

    def full(self, e: sp.Expr, temps: Mapping[sp.Symbol, bool] | None = None) -> bool:
        """Whether ``e`` has the full batched shape (n, width) (not a row, column or
        scalar); ``temps`` says it for the temporaries of a common-subexpression pass."""
        if isinstance(e, Full):  # the component fallback broadcast to the batched shape
            return bool(e.args[1]) and e.args[1][0] == N
        if isinstance(e, Einsum):  # a batched product over every axis of the scope
            spec, slots = e.args[0].name, e.args[1].name
            return spec.split("->")[1].startswith("a") and not slots
        if isinstance(e, LOWERED):  # views and reductions of the component fallback
            return False
        if isinstance(e, Vec):
            return e.name not in self.params
        if e.is_Symbol:
            return (temps or {}).get(e, False)
        if isinstance(e, BMatMul | Softmax):
            return True
        if isinstance(e, RowSum | ColSum | BOuter | LogSumExp | Total | RowMax):
            return False
        return any(self.full(a, temps) for a in e.args)


def finish(expr: sp.Expr, sizes: Mapping[sp.Expr, sp.Expr]) -> sp.Expr:
    """One expression as printers read it: component fallbacks lowered, widths concrete,
    the stable forms recognised, non-integer rationals as floats (0.5 * x, not (1/2) * x)."""
    expr = prepare(lower_fallbacks(expr).xreplace(sizes))
    return expr.xreplace({r: sp.Float(r, 17) for r in expr.atoms(sp.Rational) if r.q != 1})


def finish_all(exprs: Iterable[sp.Expr], net: Network) -> list[sp.Expr]:
    """:func:`finish` over a whole program, a softmax and a log-sum-exp of the same
    argument sharing their row maximum and sum."""
    sizes = concrete_sizes(net)
    return share_softmax_logsumexp([finish(e, sizes) for e in exprs])


def concrete_sizes(net: Network) -> dict[sp.Expr, sp.Expr]:
    return {k: sp.Integer(v) for k, v in net.sizes.items()}


def comment_text(expr: sp.Expr) -> str:
    return plain(expr)


def _loss_expression(net: Network, log: list[Applied] | None = None) -> sp.Expr:
    """The per-sample loss, with each log of the output rewritten through the last stage's
    body where the stability rules then leave no log that can reach 0: log(softmax(z)_i) =
    z_i - logsumexp(z), log(sigmoid(u)) = -softplus(-u), log(1 - sigmoid(u)) = -softplus(u).
    These are identities, chosen from the expressions (never from a layer's or loss's name);
    other occurrences of the output keep reading its (stably computed) forward value."""
    body = net.loss.body
    if not net.stages:
        return body
    last = net.stages[-1]
    out = net.output

    def through(e: sp.Expr) -> sp.Expr:
        (t,) = [u for u in e.args[0].atoms(sp.Indexed) if u.base == out]
        value = last.body.xreplace({last.index: t.indices[0]})
        cand = sp.expand_log(sp.log(e.args[0].xreplace({t: value})), force=True)
        mine: list[Applied] = []
        cand = stabilise(cand, IR_RULES, mine)
        # Accepted only if every log left is a log-sum-exp (printed shifted by the max).
        if all(
            isinstance(g.args[0], sp.Sum) and isinstance(g.args[0].function, sp.exp)
            for g in cand.atoms(sp.log)
        ):
            if log is not None:
                log.append(Applied(LOG_THROUGH_OUTPUT, e, cand))
                log.extend(mine)
            return cand
        return e

    body = body.replace(
        lambda e: (
            isinstance(e, sp.log)
            and len({u for u in e.args[0].atoms(sp.Indexed) if u.base == out}) == 1
            and not e.args[0].atoms(sp.Sum)
        ),
        through,
    )
    pairs = {f.args[0] for f in body.atoms(F.softplus)}
    if any(-u in pairs for u in pairs):
        # softplus(-u) = softplus(u) - u: BCE becomes softplus(z) - y z, one softplus. The
        # products are expanded to combine the terms, but powers are not: a residual
        # (a - y)**2 stays a difference squared (expanded, it cancels near convergence).
        body = body.replace(
            lambda e: isinstance(e, F.softplus) and e.args[0].could_extract_minus_sign(),
            lambda e: F.softplus(-e.args[0]) + e.args[0],
        )
        body = body.replace(
            lambda e: isinstance(e, sp.Sum),
            lambda e: sp.Sum(
                sp.expand(e.function, multinomial=False, power_exp=False, power_base=False),
                *e.limits,
            ),
        )
    return body


def free_indices(stage) -> str:
    """The free indices a stage's component form is stated in (``i``, ``s, i`` for a stage
    that couples the samples, or ``c, h, w``)."""
    if stage.sample is not None:
        return f"{stage.sample}, {stage.index}"
    return ", ".join(str(s) for s in stage.indices) if stage.indices else str(stage.index)


def step_comment(d: Derivation, step) -> tuple[str, ...]:
    idx = ", ".join(str(s) for s in step.indices)
    lhs = f"dL/d{step.wrt}[{idx}]"
    comp = comment_text(step.component)
    what = {"loss": "loss gradient", "input": f"through {step.stage.label}" if step.stage else ""}
    lines = [f"{lhs} = {comp}"]
    if carries_loss(step):  # one sample's loss l: its widths named, the 1/n said below
        widths = sorted(step.component.free_symbols & set(d.network.sizes), key=str)
        named = "; ".join(f"{w} = {d.network.sizes[w]}, {_width_of(d, w)}" for w in widths)
        lines = [f"dl/d{step.wrt}[{idx}] = {comp}  (per sample{'; ' + named if named else ''})"]
    if step.kind == "param":
        lines[0] = f"dL/d{step.wrt}[{idx}] = {comp}  (summed over the batch)"
    elif step.kind in what and what[step.kind]:
        lines.append(
            f"({what[step.kind]}: {step.jacobian} Jacobian"
            + (", fused with the loss)" if step.fused else ")")
        )
    return tuple(lines)


def carries_loss(step) -> bool:
    """The step the loss gradient enters the backward pass at (there the code divides by
    the batch size)."""
    return step.kind == "loss" or bool(step.fused)


def _width_of(d: Derivation, w: sp.Symbol) -> str:
    if w == d.network.output_width:
        return "the output width"
    return "a width"


def batch_mean_comment(step) -> str:
    """Where the code's adjoint becomes the batch mean's: the one division by n."""
    return (
        f"{step.grad} = dL/d{step.wrt} = dl/d{step.wrt} / n: L is the mean loss over the batch "
        "of n samples"
    )


def lower_program(d: Derivation, ir_logs: Mapping[str, list[Applied]]) -> LoweredProgram:
    """The target-free program: forward, loss and backward statements as batched SymPy
    expressions with every stability rule applied (``calculus/stability.py``). Backends
    print it; nothing in it depends on what a layer or a loss is called.

    ``d`` is the stable derivation (``derivations.derive_stable``, marked up for the
    autograd targets), ``ir_logs`` the IR rules' rewrites by quantity."""
    net = d.network
    if not net.is_concrete:
        raise SpecError("every width must be a concrete integer to generate code")
    sizes = {k: sp.Integer(v) for k, v in net.sizes.items()}
    items: list[LoweredItem] = []
    shape_probe = Shapes(net.param_names)
    hide = {Vec(p): sp.Dummy(p) for p in net.param_names}
    unhide = {v: k for k, v in hide.items()}

    def add(
        target: str,
        expr: sp.Expr,
        comment: tuple[str, ...],
        section: str,
        formula: str,
        ir: list[Applied] | tuple[Applied, ...] = (),
        full: str | None = None,
    ) -> None:
        log: list[Applied] = list(ir)
        # (before the component fallbacks are lowered, which split a sum into its terms)
        expr = stabilise(expr, BEFORE_LOWERING, log)
        expr = prepare(lower_fallbacks(expr).xreplace(sizes), log)
        if section == "backward":
            # The guards clamp values that lie in [0, 1] (an output, a probability); a
            # parameter (a learnable temperature) has either sign: hidden from them.
            expr = stabilise(expr.xreplace(hide), GUARD_RULES, log).xreplace(unhide)
        widen = None if full is None or shape_probe.full(expr) else full
        items.append(LoweredItem(target, expr, comment, section, formula, tuple(log), widen))

    for f in d.forward:
        formula = f"{f.stage.name}[{free_indices(f.stage)}] = {comment_text(f.component)}"
        add(
            f.stage.name,
            batch(f.matrix),
            (formula,),
            "forward",
            formula,
            ir_logs[f.stage.name],
            # a stage that couples the samples is lowered with its sample axis: full already
            None
            if f.stage.sample is not None
            else rows_of_shape(net, f.stage.shape or (f.stage.width,)),
        )
    loss_items, total = _loss_items(net, ir_logs["loss"], sizes, shape_probe)
    items.extend(loss_items)
    for step in d.steps:
        if step.needed:
            comment = step_comment(d, step)
            if carries_loss(step):
                comment += (batch_mean_comment(step),)
            expr = batched_step(step)
            if step.kind == "param":
                full = None
                if not (expr.free_symbols - {N}):  # a constant parameter gradient
                    full = str(tuple(net.size(w) for w in step.shape))
                add(step.grad, expr, comment, "backward", comment[0])
                if full is not None:
                    items[-1] = replace(items[-1], widen=full)
            else:
                # (N, width), the sample index explicit: lowered with its sample axis, full
                shape = None if step.shape[0] == N else rows_of_shape(net, step.shape)
                add(step.grad, expr, comment, "backward", comment[0], (), shape)
    return LoweredProgram(d, tuple(items), total)


def rows_of_shape(net: Network, shape: tuple) -> str:
    """Shape code of a per-sample quantity of ``shape``, with the sample axis first."""
    return f"(X.shape[0], {', '.join(str(net.size(w)) for w in shape)})"


def step_shape(net: Network, step: Step) -> str:
    """Shape code of a backward step's full batched value (a parameter gradient: the
    parameter's shape; a delta: one row per sample)."""
    if step.kind == "param":
        return str(tuple(net.size(w) for w in step.shape))
    shape = step.shape[1:] if step.shape and step.shape[0] == N else step.shape
    return rows_of_shape(net, shape)


def is_constant(expr: sp.Expr) -> bool:
    """Whether ``expr`` is a number (the batch size ``n`` aside)."""
    return not (expr.free_symbols - {N})


def constant_shapes(
    net: Network, items: list[tuple[str, sp.Expr, tuple[str, ...]]], steps: tuple[Step, ...]
) -> list[str | None]:
    """Per item, the shape code to broadcast it to where its expression is a number (a
    layer whose derivative is 0 everywhere), else None."""
    by_step = {s.grad: s for s in steps}
    by_stage = {s.name: s for s in net.stages if s.sample is None}
    out: list[str | None] = []
    for name, expr, _ in items:
        shape = None
        if is_constant(expr) and name in by_step:
            shape = step_shape(net, by_step[name])
        elif is_constant(expr) and name in by_stage:
            st = by_stage[name]
            shape = rows_of_shape(net, tuple(st.shape) or (st.width,))
        out.append(shape)
    return out


def lowered(
    d: Derivation,
    items: list[tuple[str, sp.Expr, tuple[str, ...]]],
    steps: tuple[Step, ...],
    n_forward: int,
    outputs: Mapping[str, str] | None = None,
) -> LoweredProgram:
    """A program of batched statements ``(target, expr, comment)`` (the vector-Jacobian
    and tangent programs) as a :class:`LoweredProgram` of ``d``'s network: the first
    ``n_forward`` are its forward section, constants are widened (``steps`` name the
    backward quantities' shapes)."""
    net = d.network
    shapes = constant_shapes(net, items, steps)
    out = tuple(
        LoweredItem(
            name,
            expr,
            comment,
            "forward" if k < n_forward else "backward",
            comment[0] if comment else "",
            (),
            shape,
        )
        for k, ((name, expr, comment), shape) in enumerate(zip(items, shapes, strict=True))
    )
    return LoweredProgram(d, out, sp.S.Zero, dict(outputs or {}))


def _loss_items(
    net: Network,
    ir_log: list[Applied],
    sizes: Mapping[sp.Expr, sp.Expr],
    shape_probe: Shapes,
) -> tuple[list[LoweredItem], sp.Expr]:
    """The loss's statements ``l1, l2, ...`` (one per term of the batch sum, the penalty
    once per batch) and the loss value's expression over them."""
    items: list[LoweredItem] = []
    # The loss: the mean over samples of the per-sample loss; logs left in it are clamped
    # (the stable log-softmax and log-sigmoid forms are recognised first).
    llog: list[Applied] = list(ir_log)
    lbody = _loss_expression(net, llog)
    lformula = f"l = {comment_text(net.loss.body)}"
    lexpr = prepare(batch(to_matrix(lbody, ())).xreplace(sizes), llog)
    lexpr = lexpr.replace(sp.log, SafeLog).replace(log1p, SafeLog1p)
    total = sp.S.Zero
    for n_, t in enumerate(sp.Add.make_args(lexpr), start=1):
        rows = [f for f in sp.Mul.make_args(t) if isinstance(f, RowSum)]
        inner, coeff = (rows[0].args[0], t / rows[0]) if len(rows) == 1 else (t, sp.S.One)
        widen = None
        if not shape_probe.full(inner):  # a constant term: one value per element
            widen = (
                f"(X.shape[0], {net.size(net.output_width)})"
                if len(rows) == 1
                else "(X.shape[0], 1)"
            )
        items.append(LoweredItem(f"l{n_}", inner, (), "loss", lformula, tuple(llog), widen))
        llog = []  # the loss's rewrites are reported once, on its first statement
        total += coeff * Total(sp.Symbol(f"l{n_}"))
    if net.penalty is not None:  # added once to the batch loss (weight decay)
        names = sp.Tuple(*(sp.Symbol(p) for p in net.param_names))
        pen = lower(Comp(net.penalty, sp.Tuple(), sp.Tuple(), names), batched=False)
        pformula = f"penalty = {comment_text(net.penalty)} (added once per batch)"
        pen = prepare(pen.xreplace(sizes))
        items.append(LoweredItem("l_penalty", pen, (), "loss", pformula, (), None))
        total += N * Total(sp.Symbol("l_penalty"))  # the template divides by n
    return items, total


#: Rules for component forms, applied before the component fallbacks are lowered to array
#: code (which splits a sum into its terms and a ratio of sums into reductions).
BEFORE_LOWERING = (SIGMOID_COMPLEMENT, COMPONENT_SOFTMAX, COMPONENT_LOGSUMEXP)


def _is_float(e: sp.Expr) -> bool:
    try:
        return isinstance(e.evalf(17), sp.Float)
    except (TypeError, ValueError):
        return False


def prepare(expr: sp.Expr, log: list[Applied] | None = None) -> sp.Expr:
    expr = recognise(expr, log)
    # Constant subexpressions (sqrt(pi), 1/sqrt(2)) become one Float: printed as a Python
    # float, which keeps float32 arrays float32 (an np.float64 scalar would upcast them).
    # (Only plain numbers: a constant inside a layout node, RowSum(2), stays a node.)
    expr = expr.replace(
        lambda e: e.is_number and not e.is_Atom and not e.is_Rational and _is_float(e),
        lambda e: sp.Float(e.evalf(17), 17),
    )
    return expr.xreplace({c: sp.Float(c, 17) for c in expr.atoms(sp.NumberSymbol)})


__all__ = [
    "BEFORE_LOWERING",
    "LoweredItem",
    "LoweredProgram",
    "Shapes",
    "comment_text",
    "concrete_sizes",
    "constant_shapes",
    "finish",
    "finish_all",
    "free_indices",
    "is_constant",
    "lower_program",
    "lowered",
    "prepare",
    "recognise",
    "rows_of_shape",
    "step_comment",
    "step_shape",
]
