"""Stage 6 (print), other targets: the programs beyond "loss -> parameter gradients".

One derivation, many targets. ``codegen.build_context`` prints the lowered program
(forward, loss, backward: SymPy expressions after the stable forms) with the target's
printer; this module prints what the PyTorch and JAX modules and ``--hvp`` need, each
lowered by the driver (``derivations.lower_vjp``, ``lower_hvp``, ``lower_ggn``, from
``calculus/lower_autodiff.py``):

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

from symgrad.backends.codegen import Statement, _Printer, build_context
from symgrad.backends.registry import lookup, supporting
from symgrad.backends.statement import dead_code, reads
from symgrad.backends.target import Target
from symgrad.backends.widening import widen
from symgrad.calculus.lower import LoweredProgram
from symgrad.calculus.reverse import Derivation
from symgrad.derivations import G, derive_stable, lower_ggn, lower_hvp, lower_vjp, vjp_network
from symgrad.errors import DerivationError, SpecError
from symgrad.ir.network import Network
from symgrad.ir.plain import matrix_text

_BATCH_SIZE = re.compile(r"(?<![.\w])n\b")


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


def _print(pr: _Printer, prog: LoweredProgram, target: Target) -> list[list[Statement]]:
    """``prog`` printed by ``pr``, constants widened to their full shapes."""
    blocks = pr.program(prog)
    widen(blocks, [it.widen for it in prog.items], target)
    return blocks


def _vjp_program(d: Derivation, target: Target, helpers: set[str]) -> dict:
    """forward(params, X) and its backward from G: the statements and what to save."""
    prog = lower_vjp(d)
    net = prog.derivation.network
    n_fwd = sum(it.section == "forward" for it in prog.items)
    # (torch: NetworkFunction's passes run with autograd off, so fresh tensors may be updated)
    pr = _printer(net, target, {"G": "G"}, inplace=True if target.autograd_inplace else None)
    blocks = _print(pr, prog, target)
    helpers |= pr.p.helpers
    fwd = _flat(blocks[:n_fwd])
    # (what no gradient reads goes: the input of a layer whose derivative is 0)
    grads = {"d" + p for p in net.param_names} | {"dx"}
    back, dx = _input_grad(dead_code(_flat(blocks[n_fwd:]), grads), list(net.param_names))
    fwd = dead_code(fwd, {net.output.name} | reads(back + dx))
    if target.recompute_scalars:
        fwd, back = _recompute_scalars(fwd, back)
    return {
        "forward": fwd,
        "backward": back,
        "input_grad": dx,
        "saved": _keep(["X", *net.param_names], fwd, back + dx),
        "uses": sorted(_uses(back + dx)),
        "forward_uses": sorted(_uses(fwd)),  # "n" for a stage that couples the samples
        "forward_reads": sorted(reads(fwd) | set(_keep(["X", *net.param_names], fwd, back + dx))),
    }


def _second_order(d: Derivation, target: Target, helpers: set[str]) -> dict:
    d, _ = derive_stable(d)  # tangents of the stable forms (softplus, sigmoid ...)
    net = d.network
    hprog, gprog = lower_hvp(d), lower_ggn(d)
    hout, gout = dict(hprog.outputs), dict(gprog.outputs)
    hpr, gpr = _printer(net, target), _printer(net, target)
    hblocks, gblocks = _print(hpr, hprog, target), _print(gpr, gprog, target)
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
    # torch: LossFunction's passes (and loss_and_grads) run with autograd off
    inplace = True if rec.autograd_inplace else None
    ctx = build_context(
        d, optimizer=optimizer, source=source, target=rec, inplace=inplace, autodiff=autodiff
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


__all__ = ["G", "matrix_text", "refuse_unsupported", "target_context", "vjp_network"]
