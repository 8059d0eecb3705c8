"""Stability pass over the derivation: a loss gradient that divides by the output is fused
into the steps that read it, where the division cancels.

A loss that takes ``log`` of the network output (``-y log(yhat)``, cross-entropy written by
hand) has the gradient ``dL/dyhat = -y / yhat``: where ``yhat`` rounds to 0 (a softmax at
large logits) it is ``inf``, and the next step multiplies it by ``yhat = 0`` (NaN). Every
consumer of that gradient through a softmax-like stage reads it as ``yhat[k] dL/dyhat[k]``
(the softmax Jacobian ``yhat[i] (delta_ik - yhat[k])`` carries the factor), so substituting
the loss gradient into the consumers cancels the division symbolically: the built-in
softmax + cross-entropy's fused delta ``(yhat sum_k y_k - y)``, here derived for any stage
whose Jacobian carries the output as a factor, with or without parameters (a learnable
temperature), over whichever index the stage sums.

Decided by structure only: the loss step's component form has a negative power of the
output, and after substitution no consumer has one. Otherwise the derivation is returned
unchanged.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import sympy as sp

from symgrad.calculus.layout import N


def _divides_by(expr: sp.Expr, base: sp.IndexedBase) -> bool:
    """Whether ``expr`` divides by something that reads ``base`` (``1/a[k]``, ``1/(1 - a[k])``)."""
    return any(p.exp.is_negative and p.base.has(base) for p in expr.atoms(sp.Pow))


def _cancel(expr: sp.Expr) -> sp.Expr:
    """Products distributed over sums (inside sums too), so that ``a[k] * (y[k] / a[k])``
    meets in one product and cancels; nothing else is rewritten."""
    return sp.expand(expr, power_base=False, power_exp=False, log=False, multinomial=False)


def _reads(e: sp.Basic, adjoint: str) -> bool:
    return isinstance(e, sp.Indexed) and str(e.base) == adjoint


def _substitute(comp: sp.Expr, adjoint: str, body: sp.Expr, index: sp.Symbol) -> sp.Expr:
    """``comp`` with every ``adjoint[k]`` replaced by ``body`` at ``k``."""
    return comp.replace(
        lambda e: _reads(e, adjoint),
        lambda e: body.xreplace({index: e.indices[0]}),
    )


def fuse_loss_division(d: Any, output: sp.IndexedBase) -> Any:
    """``d`` (a :class:`~symgrad.calculus.reverse.Derivation` before its matrix pass runs
    again) with a dividing loss gradient fused into its consumers where that removes the
    division; the changed steps have ``matrix = None`` (for ``matrix_pass``). They become
    seeds (where the loss's incoming gradient enters); a parameter's step, whose batched
    form sums over the samples, carries the seed's ``1/N`` in its component."""
    loss = next((s for s in d.steps if s.kind == "loss" and s.needed), None)
    if loss is None or len(loss.indices) != 1 or not _divides_by(loss.component, output):
        return d
    consumers = [s for s in d.steps if s.upstream == loss.grad]
    if not consumers:
        return d
    fused = {}
    for s in consumers:
        comp = _cancel(_substitute(s.component, loss.grad, loss.component, loss.indices[0]))
        if _divides_by(comp, output) or comp.has(lambda e: _reads(e, loss.grad)):
            return d
        if s.kind == "param":  # summed over the batch, not divided by it: the seed's 1/N here
            comp = comp / N
        fused[s.grad] = replace(
            s, component=comp, matrix=None, seed=True, fused=True, unfused=s.component
        )
    steps = tuple(replace(s, needed=False) if s is loss else fused.get(s.grad, s) for s in d.steps)
    return replace(d, steps=steps)


__all__ = ["fuse_loss_division"]
