"""Stage 5 (lower), the programs beyond "loss -> parameter gradients".

Each is a list of batched statements ``(target, expr, comment)`` that the driver turns into
a :class:`~symgrad.calculus.lower.LoweredProgram` (``derivations.lower_vjp``,
``lower_hvp``, ``lower_ggn``) for the PyTorch and JAX modules and ``--hvp``:

- the derivation **marked for autograd** (:func:`autodiff_marks`): the input gradient
  ``dx`` computed and the loss's incoming gradient ``g`` multiplied in where it enters;
- the **vector-Jacobian program**: the backward pass of the network *output* from an
  incoming ``G = dL/dyhat``, read off the derivation of the network with the linear
  "loss" ``sum_i G[i] yhat[i]`` (summed over the samples: ``G`` carries the weights);
- the **tangent programs** of ``--hvp`` (``forward.py``): ``hvp`` is the R-operator of
  the loss program's backward pass, ``ggnvp`` pushes ``V`` forward to ``R{yhat} = J V``,
  applies the loss Hessian in the output (the R-operator of ``dL/dyhat``) and pulls the
  result back with the vector-Jacobian program.
"""

from __future__ import annotations

from dataclasses import replace

import sympy as sp

from symgrad.calculus.forward import tangent, tangent_name, tangent_symbol
from symgrad.calculus.layout import N, batch, batched_step
from symgrad.calculus.lower import comment_text, free_indices, step_comment
from symgrad.calculus.matrix_form import Mat, Once, Vec
from symgrad.calculus.reverse import Derivation, Step
from symgrad.ir.network import Network
from symgrad.ir.plain import matrix_text

#: One statement of a program: (target, batched expression, comment lines).
Item = tuple[str, sp.Expr, tuple[str, ...]]


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


def autodiff_marks(d: Derivation) -> Derivation:
    """What the autograd Functions need: ``dL/dx`` and the loss's incoming gradient ``g``."""
    return with_loss_seed(with_input_grad(d))


def _scale_once(expr: sp.Expr) -> sp.Expr:
    """A penalty's part of a parameter gradient (``Once``, added once per batch) does not
    pass through the seed: ``g`` multiplies it inside ``Once`` (the layout keeps it whole)."""
    return expr.replace(lambda e: isinstance(e, Once), lambda e: Once(G_LOSS * e.args[0]))


def vjp_expr(step: Step) -> sp.Expr:
    """A VJP step, batched: summed over the samples (no 1/n at the seed)."""
    return batched_step(step) if step.kind == "param" else batch(step.matrix)


def vjp_comment(d: Derivation, step: Step, seed: str = "G") -> tuple[str, ...]:
    """A VJP step's comment: the incoming gradient, not a loss, is what was fused in."""
    lines = step_comment(d, step)
    return tuple(
        c.replace("fused with the loss", f"{seed} = dL/dyhat fused in").replace("G[", f"{seed}[")
        for c in lines
    )


def forward_items(d: Derivation) -> list[Item]:
    return [
        (
            f.stage.name,
            batch(f.matrix),
            (f"{f.stage.name}[{free_indices(f.stage)}] = {comment_text(f.component)}",),
        )
        for f in d.forward
    ]


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

    for name, expr, comment in forward_items(d):
        add(name, expr, comment)
        if not expr.is_number:  # (a constant layer: its number is not its name)
            values[expr] = Vec(name)
    for step in d.steps:
        if step.needed:
            add(step.grad, batched_step(step), step_comment(d, step), step)
    out = {}
    for p in net.params:
        g = "d" + p.name
        out[p.name] = tangent_name(g) if Vec(tangent_name(g)) in tan.values() else ""
    return items, out


def ggn_program(d: Derivation, vd: Derivation) -> tuple[list[Item], dict[str, str]]:
    """The Gauss-Newton program: ``R{yhat} = J V`` forward, ``U = H_L R{yhat}`` (the
    R-operator of dL/dyhat, the output's loss gradient), then ``J^T U`` by the
    vector-Jacobian program (``vd``, the derivation of the network's VJP network)."""
    net = d.network
    tan: dict[sp.Symbol, sp.Expr] = {}
    _param_tangents(net, tan)
    items: list[Item] = []
    values: dict[sp.Expr, sp.Expr] = {}
    for name, expr, comment in forward_items(d):
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
    gvec = Vec("G")
    for step in vd.steps:
        if step.needed:
            expr = vjp_expr(step).xreplace({gvec: Vec("U")})
            items.append((step.grad, expr, vjp_comment(vd, step, "U")))
    return items, {p: "d" + p for p in net.param_names}


__all__ = [
    "G_LOSS",
    "Item",
    "autodiff_marks",
    "forward_items",
    "ggn_program",
    "tangent_program",
    "vjp_comment",
    "vjp_expr",
    "with_input_grad",
    "with_loss_seed",
]
