"""The driver's derivation stage (stages 3-4): every derivation a command needs, memoised.

:mod:`symgrad.pipeline` exposes these functions as its own; they live in this module so
that the code generators (``backends``), which the pipeline imports, can ask for the
derived networks they print without importing the pipeline back. Three derivations:

- :func:`derive`: the network's gradients in component and matrix form;
- :func:`derive_stable`: the derivation of the network with the stability rules applied
  to its layer bodies and loss (the network derived again only when a rule rewrote it),
  and the loss's division fused into its consumers where that removes it;
- :func:`derive_vjp`: the vector-Jacobian program's derivation, the network with the
  linear "loss" ``sum_i G[i] yhat[i]`` (whose gradients are the VJP from ``G``).

Each is memoised on the object it is given (by identity), so a command that prints
several programs (a torch module with its VJP and its ``--hvp`` tangents, a document and
its embedded code) derives each network once. Every derivation goes through the calculus
entry point ``calculus.reverse.reverse_accumulate`` (looked up on its module at call time).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import replace
from functools import lru_cache
from typing import Any

import sympy as sp

from symgrad.calculus import (
    local_jacobian,
    named_backward,
    renamed_memo,
    reverse,
    stability,
    stage_calculus,
)
from symgrad.calculus.local_matrix import jacobian_matrix
from symgrad.calculus.lower import LoweredProgram, lower_program, lowered
from symgrad.calculus.lower_autodiff import (
    autodiff_marks,
    forward_items,
    ggn_program,
    tangent_program,
    vjp_comment,
    vjp_expr,
    with_input_grad,
)
from symgrad.calculus.matrix_form import matrix_pass, to_matrix
from symgrad.calculus.program import Program, program
from symgrad.calculus.reverse import Derivation
from symgrad.calculus.stability import (
    IR_RULES,
    LOSS_DIVISION,
    Applied,
    stabilise,
    stabilise_stage,
)
from symgrad.calculus.stability_fusion import fuse_loss_division
from symgrad.errors import SpecError
from symgrad.ir.network import Loss, Network, Stage

#: The incoming gradient dL/dyhat of the vector-Jacobian program (``G`` in the code).
G = sp.IndexedBase("G", real=True)

#: The stability rewrites of a stable derivation, by quantity (a stage output's name, or
#: ``"loss"``).
Logs = dict[str, list[Applied]]

_SIZE = 16


class _Memo:
    """Results of recent calls keyed by the identity of their argument (which is kept
    alive with the result, so an identity is never reused while it is in the memo)."""

    def __init__(self) -> None:
        self._hits: OrderedDict[int, tuple[object, Any]] = OrderedDict()

    def get(self, key: object) -> Any:
        hit = self._hits.get(id(key))
        if hit is None or hit[0] is not key:
            return None
        self._hits.move_to_end(id(key))
        return hit[1]

    def put(self, key: object, value: Any) -> Any:
        self._hits[id(key)] = (key, value)
        while len(self._hits) > _SIZE:
            self._hits.popitem(last=False)
        return value


_DERIVED, _STABLE, _VJP = _Memo(), _Memo(), _Memo()
_LOWERED, _AUTODIFF, _EQUATIONS = _Memo(), _Memo(), _Memo()
_LOWERED_VJP, _HVP, _GGN = _Memo(), _Memo(), _Memo()
_MEMOS = (_DERIVED, _STABLE, _VJP, _LOWERED, _AUTODIFF, _EQUATIONS, _LOWERED_VJP, _HVP, _GGN)


def clear() -> None:
    """Forget every memoised derivation, and the calculus memos behind them (per-stage
    calculus, results memoised up to renaming, stabilised expressions, matrix forms):
    benchmarks time a fresh process's work."""
    for memo in _MEMOS:
        memo._hits.clear()
    renamed_memo.clear()
    stage_calculus.clear()
    stability.clear()
    to_matrix.cache_clear()
    jacobian_matrix.cache_clear()
    for helper in (stage_local, diagonal, chain_jacobian, _chain_through):
        helper.cache_clear()


def remember(net: Network, d: Derivation) -> Derivation:
    """Record ``d`` as the derivation of ``net`` (a benchmark that derived it in stages)."""
    return _DERIVED.put(net, d)


def derive(net: Network) -> Derivation:
    """Stages 3-4: every gradient of ``net`` in component and matrix form.

    The chain rule with its simplification passes, then the matrix-form pass. Memoised
    on the network object, so asking again (for another output) does not derive again.
    """
    hit = _DERIVED.get(net)
    if hit is not None:
        return hit
    d = reverse.reverse_accumulate(net)  # 3: chain rule, contraction, forward values, fusion
    d = matrix_pass(d)  # 4: matrix form
    return _DERIVED.put(net, d)


def derive_stable(d: Derivation | Network) -> tuple[Derivation, Logs]:
    """The derivation of the network with the IR stability rules applied to every stage
    body and the loss (derived again only when a rule matched), the loss's division fused
    into its consumers where that removes it, and the rewrites by quantity. Memoised on
    ``d`` (a network is derived first, through :func:`derive`)."""
    if isinstance(d, Network):
        d = derive(d)
    hit = _STABLE.get(d)
    if hit is not None:
        return hit
    net = d.network
    logs: Logs = {}
    stages = []
    for st in net.stages:
        logs[st.name] = []
        stages.append(stabilise_stage(st, logs[st.name]))
    logs["loss"] = []
    lbody = stabilise(net.loss.body, IR_RULES, logs["loss"])
    derived = d
    if any(logs.values()):
        net = replace(net, stages=tuple(stages), loss=replace(net.loss, body=lbody))
        derived = derive(net)
    fused = fuse_loss_division(derived, net.output)
    if fused is not derived:
        logs["loss"].append(Applied(LOSS_DIVISION, derived.loss, derived.loss))
        derived = matrix_pass(fused)
    return _STABLE.put(d, (derived, logs))


def vjp_network(net: Network) -> Network:
    """``net`` with the linear "loss" ``sum_i G[i] yhat[i]``: its gradients are the VJP."""
    out, C = net.output, net.output_width
    i = net.stages[-1].index
    body = sp.Sum(G[i] * out[i], (i, 0, C - 1))
    loss = Loss("vjp", body, out, G, C)
    return Network(net.name, net.stages, loss, net.sizes, net.input, net.n_layers, net.source)


def derive_vjp(net: Network) -> Derivation:
    """The derivation of :func:`vjp_network` of ``net`` (memoised on ``net``): the backward
    pass of the network's output from an incoming gradient ``G``."""
    hit = _VJP.get(net)
    if hit is not None:
        return hit
    return _VJP.put(net, derive(vjp_network(net)))


def equations(d: Derivation) -> Program:
    """The derivation as one program of equations (``calculus/program.py``), memoised."""
    hit = _EQUATIONS.get(d)
    return hit if hit is not None else _EQUATIONS.put(d, program(d))


def lower(d: Derivation | Network, *, autodiff: bool = False) -> LoweredProgram:
    """Stage 5, the lowering pass: the stable derivation of ``d`` as the batched,
    stabilised program every backend prints (``calculus/lower.py``). ``autodiff`` marks
    the derivation for the autograd targets first (the input gradient ``dx`` computed, the
    loss's incoming gradient ``g`` multiplied in). Memoised on ``d``."""
    if isinstance(d, Network):
        d = derive(d)
    memo = _AUTODIFF if autodiff else _LOWERED
    hit = memo.get(d)
    if hit is not None:
        return hit
    stable, logs = derive_stable(d)
    if not stable.network.is_concrete:
        raise SpecError("every width must be a concrete integer to generate code")
    # (marked after the stability pass, which may derive the network again)
    return memo.put(d, lower_program(autodiff_marks(stable) if autodiff else stable, logs))


def lower_vjp(d: Derivation) -> LoweredProgram:
    """The lowered vector-Jacobian program of ``d``'s stable network: its forward pass,
    then the backward pass of the output from ``G`` (with ``dx``). Memoised on ``d``."""
    hit = _LOWERED_VJP.get(d)
    if hit is not None:
        return hit
    stable, _ = derive_stable(d)  # the stable forms of the loss program's forward pass
    vd = with_input_grad(derive_vjp(stable.network))
    items = forward_items(stable)
    n_forward = len(items)
    items += [(s.grad, vjp_expr(s), vjp_comment(vd, s)) for s in vd.steps if s.needed]
    return _LOWERED_VJP.put(d, lowered(stable, items, vd.steps, n_forward))


def lower_hvp(d: Derivation) -> LoweredProgram:
    """The lowered Hessian-vector program of ``d`` as given (code generation passes the
    stable derivation; ``derive --hvp`` the derivation as written); ``outputs`` names the
    variable of each parameter's ``(H V)[param]``. Memoised on ``d``."""
    hit = _HVP.get(d)
    if hit is not None:
        return hit
    items, out = tangent_program(d)
    return _HVP.put(d, lowered(d, items, d.steps, 0, out))


def lower_ggn(d: Derivation) -> LoweredProgram:
    """The lowered Gauss-Newton-vector program of ``d`` (see :func:`lower_hvp`)."""
    hit = _GGN.get(d)
    if hit is not None:
        return hit
    vd = derive_vjp(d.network)
    items, out = ggn_program(d, vd)
    return _GGN.put(d, lowered(d, items, vd.steps, 0, out))


# -- the calculus the checks and the documents ask of one stage, memoised ----------------
@lru_cache(maxsize=1024)
def stage_local(stage: Stage, i: sp.Symbol, wrt: sp.Expr) -> sp.Expr:
    """``d out[i] / d wrt`` of one stage, contracted, in forward values (memoised)."""
    return local_jacobian.stage_local(stage, i, wrt)


@lru_cache(maxsize=1024)
def diagonal(local: sp.Expr, p: sp.Symbol, i: sp.Symbol) -> sp.Expr:
    """``local`` on the diagonal ``p = i``, its brackets contracted (memoised)."""
    return local_jacobian.diagonal(local, p, i)


@lru_cache(maxsize=256)
def chain_jacobian(stages: tuple[Stage, ...], i: sp.Symbol, k: sp.Symbol) -> sp.Expr:
    """The Jacobian ``d out[i] / d inp[k]`` of consecutive stages (memoised)."""
    return local_jacobian.chain_jacobian(tuple(stages), i, k)


@lru_cache(maxsize=1024)
def _chain_through(readers: tuple, wrt: sp.Expr, index: sp.Symbol, width: sp.Expr):
    return named_backward.chain_through(readers, wrt, index, width)


def chain_through(
    readers: Iterable[tuple[sp.Expr, sp.Expr, bool]],
    wrt: sp.Expr,
    index: sp.Symbol,
    width: sp.Expr,
) -> tuple[sp.Expr, sp.Expr, tuple[tuple[sp.Expr, sp.Expr], ...]] | None:
    """One step of the backward pass through a stage's names (memoised):
    :func:`symgrad.calculus.named_backward.chain_through`."""
    return _chain_through(tuple(tuple(r) for r in readers), wrt, index, width)


__all__ = [
    "G",
    "Logs",
    "chain_jacobian",
    "chain_through",
    "clear",
    "derive",
    "derive_stable",
    "derive_vjp",
    "diagonal",
    "equations",
    "lower",
    "lower_ggn",
    "lower_hvp",
    "lower_vjp",
    "remember",
    "stage_local",
    "vjp_network",
]
