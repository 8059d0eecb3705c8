"""Code generation stage, other targets: the programs beyond "loss -> parameter gradients".

One derivation, many targets. ``codegen.build_context`` prints the target-free program
(forward, loss, backward: SymPy expressions after CSE and the stable forms) with the
target's printer; this module adds what the PyTorch and JAX modules and ``--hvp`` need:

- the **loss program with the input gradient** ``dx`` (so ``LossFunction`` and the JAX
  ``custom_vjp`` can pass a gradient to whatever produced ``X``), split from the rest;
- the **vector-Jacobian program**: the backward pass of the network *output* from an
  incoming ``G = dL/dyhat``. It is derived, not assembled: the network with the linear
  "loss" ``sum_i G[i] yhat[i]`` has exactly ``dL/dyhat = G``, and its derivation is the
  VJP (summed over the samples, not averaged: ``G`` already carries the batch's weights);
- the **tangent programs** of ``--hvp`` (``calculus/forward.py``): ``hvp`` is the
  R-operator of the loss program's backward pass, ``ggnvp`` pushes ``V`` forward to
  ``R{yhat} = J V``, applies the loss Hessian in the output (the R-operator of
  ``dL/dyhat``) and pulls the result back with the vector-Jacobian program.
"""

from __future__ import annotations

import re
from dataclasses import replace

import sympy as sp

from symgrad.backends.codegen import (
    Statement,
    _comment,
    _free,
    _Printer,
    build_context,
    comment_text,
)
from symgrad.backends.registry import lookup, supporting
from symgrad.backends.statement import dead_code
from symgrad.backends.target import Target
from symgrad.backends.widening import is_constant, rows_of_shape, step_shape, widen
from symgrad.calculus.forward import tangent, tangent_name, tangent_symbol
from symgrad.calculus.layout import N, batch, batched_step
from symgrad.calculus.matrix_form import Mat, Once, Vec
from symgrad.calculus.reverse import Derivation, Step
from symgrad.derivations import G, derive_stable, derive_vjp, vjp_network
from symgrad.errors import DerivationError, SpecError
from symgrad.ir.network import Network
from symgrad.ir.plain import PlainTextPrinter, has_top_level_matmul

Item = tuple[str, sp.Expr, tuple[str, ...]]
_BATCH_SIZE = re.compile(r"(?<![.\w])n\b")


class MatrixText(PlainTextPrinter):
    """Batched matrix formulas for comments: ``R{z1} = X @ RW1.T + Rb1``."""

    def _print_Symbol(self, expr):
        return {"x": "X", "y": "Y", "N": "n"}.get(expr.name, expr.name)

    _print_Vec = _print_Symbol
    _print_Mat = _print_Symbol

    def _op(self, e: sp.Expr) -> str:
        text = self._print(e)
        atomic = e.is_Symbol or isinstance(e, sp.Function)
        return text if atomic and not has_top_level_matmul(text) else f"({text})"

    def _print_BMatMul(self, expr):
        v, w, t = expr.args
        return f"{self._op(v)} @ {self._print(w)}{'.T' if t != 0 else ''}"

    def _print_BOuter(self, expr):
        return f"{self._op(expr.args[0])}.T @ {self._op(expr.args[1])}"

    def _print_RowSum(self, expr):
        return f"rowsum({self._print(expr.args[0])})"

    def _print_ColSum(self, expr):
        return f"colsum({self._print(expr.args[0])})"


def matrix_text(expr: sp.Expr) -> str:
    """One batched expression as plain text (for comments and ``derive --hvp``)."""
    return MatrixText().doprint(expr)


def with_input_grad(d: Derivation) -> Derivation:
    """The derivation with ``dL/dx`` computed (code usually skips it: nothing reads it)."""
    inp = str(d.network.input)
    steps = tuple(
        replace(s, needed=True) if s.kind == "input" and s.wrt == inp else s for s in d.steps
    )
    return replace(d, steps=steps)


#: The incoming gradient of the loss value (autograd's ``g``, 1 for plain gradients).
G_LOSS = sp.Symbol("g")


def with_loss_seed(d: Derivation) -> Derivation:
    """The derivation with the loss's incoming gradient ``g`` multiplied in where the loss
    enters (every later step is linear in that seed), instead of scaling each gradient."""
    steps = tuple(
        replace(s, matrix=s.matrix * G_LOSS)
        if s.seed
        else replace(s, matrix=_scale_once(s.matrix))
        if s.matrix is not None and s.matrix.has(Once)
        else s
        for s in d.steps
    )
    return replace(d, steps=steps)


def _autodiff_marks(d: Derivation) -> Derivation:
    """What the autograd Functions need: ``dL/dx`` and the loss's incoming gradient ``g``."""
    return with_loss_seed(with_input_grad(d))


def _scale_once(expr: sp.Expr) -> sp.Expr:
    """A penalty's part of a parameter gradient (``Once``, added once per batch) does not
    pass through the seed: ``g`` multiplies it inside ``Once`` (the layout keeps it whole)."""
    return expr.replace(lambda e: isinstance(e, Once), lambda e: Once(G_LOSS * e.args[0]))


def _vjp_expr(step: Step) -> sp.Expr:
    """A VJP step, batched: summed over the samples (no 1/n at the seed)."""
    return batched_step(step) if step.kind == "param" else batch(step.matrix)


def _vjp_comment(d: Derivation, step: Step, seed: str = "G") -> tuple[str, ...]:
    """A VJP step's comment: the incoming gradient, not a loss, is what was fused in."""
    lines = _comment(d, step)
    return tuple(
        c.replace("fused with the loss", f"{seed} = dL/dyhat fused in").replace("G[", f"{seed}[")
        for c in lines
    )


def _forward_items(d: Derivation) -> list[Item]:
    return [
        (
            f.stage.name,
            batch(f.matrix),
            (f"{f.stage.name}[{_free(f.stage)}] = {comment_text(f.component)}",),
        )
        for f in d.forward
    ]


def _constant_shapes(d: Derivation, items: list[Item], steps: tuple[Step, ...]) -> list:
    """Per item, the shape code to broadcast it to where its expression is a number (a
    layer whose derivative is 0 everywhere), else None: see ``widening.py``."""
    net = d.network
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


def _flat(blocks: list[list[Statement]]) -> list[Statement]:
    return [s for b in blocks for s in b]


def _split_input_grad(stmts: list[Statement], params: list[str]) -> tuple[list, list]:
    """The statements of the parameter gradients, and those of ``dx`` (the last block)."""
    grads = {"d" + p for p in params}
    last = max((k for k, s in enumerate(stmts) if s.target in grads), default=-1)
    return stmts[: last + 1], stmts[last + 1 :]


def _input_grad(stmts: list[Statement], params: list[str]) -> tuple[list, list]:
    """:func:`_split_input_grad`, refusing a program without ``dx``: the templates put those
    statements in a block of their own, and an empty block is not Python."""
    back, dx = _split_input_grad(stmts, params)
    if not any(st.target == "dx" for st in dx):
        raise DerivationError("the derived program has no input gradient dx to generate")
    return back, dx


def _uses(stmts: list[Statement]) -> set[str]:
    """What the statements read: their operands, and the batch size ``n`` wherever the
    printed code reads it (a printer's choice such as NumPy's ``np.dot`` for one sample)."""
    used = set().union(*(s.uses for s in stmts)) if stmts else set()
    if any(_BATCH_SIZE.search(" ".join((s.code, *s.inplace))) for s in stmts):
        used.add("n")
    return used


def _saved(forward: list[Statement], backward: list[Statement]) -> list[str]:
    """Forward values the backward statements read (saved for autograd, JAX residuals)."""
    used = _uses(backward) - {s.target for s in backward}  # not what it recomputes
    return [s.target for s in forward if s.target in used]


def _keep(inputs: list[str], forward: list[Statement], backward: list[Statement]) -> list[str]:
    """Inputs and forward values the backward statements read, in that order."""
    used = _uses(backward)
    return [x for x in inputs if x in used] + _saved(forward, backward)


def _recompute_scalars(
    forward: list[Statement], backward: list[Statement]
) -> tuple[list[Statement], list[Statement]]:
    """Forward statements that compute a number from the batch size and constants only
    (``t1 = 1 / n``, for a stage that couples the samples) are not tensors torch can save:
    the backward pass recomputes those it reads. Returns (forward, backward)."""
    scalar: dict[str, list[Statement]] = {}
    for st in forward:
        if st.target in scalar:  # a constant broadcast to its full shape (widening.py)
            scalar[st.target].append(st)
        elif not st.inplace and st.uses <= set(scalar) | {"n"}:
            scalar[st.target] = [st]
    used = _uses(backward)
    if not scalar or not used & set(scalar):
        return forward, backward
    return forward, [st for sts in scalar.values() for st in sts] + backward


def _printer(
    net: Network, target: Target, names: dict[str, str] | None = None, inplace: bool | None = None
) -> _Printer:
    pr = _Printer(net, target, inplace)
    pr.p.names.update(names or {})
    return pr


def _vjp_program(d: Derivation, target: Target, helpers: set[str]) -> dict:
    """forward(params, X) and its backward from G: the statements and what to save."""
    d, _ = derive_stable(d)  # the stable forms of the loss program's forward pass
    net = d.network
    vd = with_input_grad(derive_vjp(net))
    items = _forward_items(d)
    n_fwd = len(items)
    for step in vd.steps:
        if step.needed:
            items.append((step.grad, _vjp_expr(step), _vjp_comment(vd, step)))
    # (torch: NetworkFunction's passes run with autograd off, so fresh tensors may be updated)
    pr = _printer(net, target, {"G": "G"}, inplace=True if target.autograd_inplace else None)
    blocks = pr.program(items)
    widen(blocks, _constant_shapes(d, items, vd.steps), target)
    helpers |= pr.p.helpers
    fwd = _flat(blocks[:n_fwd])
    # (what no gradient reads goes: the input of a layer whose derivative is 0)
    grads = {"d" + p for p in net.param_names} | {"dx"}
    back, dx = _input_grad(dead_code(_flat(blocks[n_fwd:]), grads), list(net.param_names))
    if target.recompute_scalars:
        fwd, back = _recompute_scalars(fwd, back)
    return {
        "forward": fwd,
        "backward": back,
        "input_grad": dx,
        "saved": _keep(["X", *net.param_names], fwd, back + dx),
        "uses": sorted(_uses(back + dx)),
        "forward_uses": sorted(_uses(fwd)),  # "n" for a stage that couples the samples
    }


def _param_tangents(net: Network, tan: dict[sp.Symbol, sp.Expr]) -> None:
    """Each parameter's tangent, the direction ``V`` (``RW1``). A parameter is a ``Mat`` or a
    ``Vec`` in the batched forms (conv weights and biases read as ``Mat``, the other
    tensors as ``Vec``): both spellings map to the same tangent variable."""
    for p in net.params:
        for sym in (Mat(p.name), Vec(p.name)):
            tan[sym] = tangent_symbol(sym)


def tangent_program(d: Derivation) -> tuple[list[Item], dict[str, str]]:
    """The Hessian-vector program: the batched forward and backward passes of the loss,
    each statement followed by its R-operator statement; returns the items and, per
    parameter, the variable holding ``(H V)[param]``."""
    net = d.network
    tan: dict[sp.Symbol, sp.Expr] = {}
    _param_tangents(net, tan)
    items: list[Item] = []
    values: dict[sp.Expr, sp.Expr] = {}  # forward expression -> its variable (a1 for sigmoid(z1))

    def add(name: str, expr: sp.Expr, comment: tuple[str, ...], step: Step | None = None) -> None:
        if step is None or step.kind != "param":  # of a parameter gradient only its tangent
            items.append((name, expr, comment))
        # f'(u) written in forward values: R{a1} = Rz1*a1*(1 - a1), not in sigmoid(z1); a
        # constant (a layer whose derivative is 0) has tangent 0, whatever its name
        own = {} if expr.is_number else {expr: Vec(name)}
        r = tangent(expr, tan).xreplace({**values, **own})
        if r != 0:
            rname = tangent_name(name)
            items.append((rname, r, (f"R{{{name}}} = {matrix_text(r)}",)))
            tan[Vec(name)] = Vec(rname)

    for name, expr, comment in _forward_items(d):
        add(name, expr, comment)
        if not expr.is_number:  # (a constant layer: its number is not its name)
            values[expr] = Vec(name)
    for step in d.steps:
        if step.needed:
            add(step.grad, batched_step(step), _comment(d, step), step)
    out = {}
    for p in net.params:
        g = "d" + p.name
        out[p.name] = tangent_name(g) if Vec(tangent_name(g)) in tan.values() else ""
    return items, out


def ggn_program(d: Derivation) -> tuple[list[Item], dict[str, str]]:
    """The Gauss-Newton program: ``R{yhat} = J V`` forward, ``U = H_L R{yhat}`` (the
    R-operator of dL/dyhat, the output's loss gradient), then ``J^T U`` by the
    vector-Jacobian program."""
    net = d.network
    tan: dict[sp.Symbol, sp.Expr] = {}
    _param_tangents(net, tan)
    items: list[Item] = []
    values: dict[sp.Expr, sp.Expr] = {}
    for name, expr, comment in _forward_items(d):
        items.append((name, expr, comment))
        if not expr.is_number:  # (a constant layer: its number is not its name)
            values[expr] = Vec(name)
        r = tangent(expr, tan).xreplace(values)
        if r != 0:
            rname = tangent_name(name)
            items.append((rname, r, (f"R{{{name}}} = {matrix_text(r)}",)))
            tan[Vec(name)] = Vec(rname)
    seed = next(s for s in d.steps if s.kind == "loss")
    u = tangent(batch(seed.matrix) / N, tan).xreplace(values)
    items.append(("U", u, (f"U = H_L J V = R{{{seed.grad}}} (the loss Hessian in the output)",)))
    vd = derive_vjp(net)
    gvec = Vec("G")
    for step in vd.steps:
        if step.needed:
            expr = _vjp_expr(step).xreplace({gvec: Vec("U")})
            items.append((step.grad, expr, _vjp_comment(vd, step, "U")))
    return items, {p: "d" + p for p in net.param_names}


def _second_order(d: Derivation, target: Target, helpers: set[str]) -> dict:
    d, _ = derive_stable(d)  # tangents of the stable forms (softplus, sigmoid ...)
    net = d.network
    hitems, hout = tangent_program(d)
    gitems, gout = ggn_program(d)
    hpr, gpr = _printer(net, target), _printer(net, target)
    hblocks, gblocks = hpr.program(hitems), gpr.program(gitems)
    widen(hblocks, _constant_shapes(d, hitems, d.steps), target)
    widen(gblocks, _constant_shapes(d, gitems, derive_vjp(net).steps), target)
    hstmts = dead_code(_flat(hblocks), set(hout.values()))
    gstmts = dead_code(_flat(gblocks), set(gout.values()))
    helpers |= hpr.p.helpers | gpr.p.helpers
    return {
        "hvp": {"statements": hstmts, "out": hout, "uses": sorted(_uses(hstmts))},
        "ggnvp": {"statements": gstmts, "out": gout, "uses": sorted(_uses(gstmts))},
    }


def refuse_unsupported(rec: Target, *, optimizer: str | None, hvp: bool) -> None:
    """A :class:`~symgrad.errors.SpecError` for an API feature the target's record does not
    list (an optimizer step, ``--hvp``)."""
    if optimizer is not None and not rec.supports("optimizer"):
        known = " and ".join(n for n in supporting("optimizer") if lookup(n).write is None)
        raise SpecError(f"--optimizer is only for the {known} target, not '{rec.name}'")
    if hvp and not rec.supports("hvp"):
        raise SpecError(f"--hvp is not available for --target {rec.name}")


def target_context(
    d: Derivation,
    target: str | Target,
    *,
    optimizer: str | None = None,
    source: str | None = None,
    hvp: bool = False,
) -> dict:
    """Everything a target's module template needs, printed with the target's printer."""
    rec = lookup(target)
    refuse_unsupported(rec, optimizer=optimizer, hvp=hvp)
    autodiff = rec.supports("vjp")
    # (marked after the stability pass, which may derive the network again)
    adjust = _autodiff_marks if autodiff else None
    # torch: LossFunction's passes (and loss_and_grads) run with autograd off
    inplace = True if rec.autograd_inplace else None
    ctx = build_context(
        d, optimizer=optimizer, source=source, target=rec, inplace=inplace, adjust=adjust
    )
    ctx["target"] = rec.name
    helpers = set(ctx["helpers"])
    names = list(d.network.param_names)
    if autodiff:
        back, dx = _input_grad(ctx["backward"], names)
        fwd = ctx["forward"] + ctx["loss_statements"]
        if rec.recompute_scalars:
            fwd, back = _recompute_scalars(fwd, back)
        ctx["backward"], ctx["input_grad"] = back, dx
        ctx["loss_saved"] = _keep(["X", "Y", *names], fwd, back + dx)
        ctx["loss_uses"] = sorted(_uses(back + dx))
        ctx["vjp"] = _vjp_program(d, rec, helpers)
    ctx.update(_second_order(d, rec, helpers) if hvp else {"hvp": None, "ggnvp": None})
    ctx["helpers"] = sorted(helpers)
    return ctx


__all__ = [
    "G",
    "ggn_program",
    "matrix_text",
    "refuse_unsupported",
    "tangent_program",
    "target_context",
    "vjp_network",
    "with_input_grad",
]
