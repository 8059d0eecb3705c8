"""Stage 3 (derive), local derivatives on demand: one stage's Jacobian, a chain of stages'
Jacobian, a stage output's derivative by its own parameter.

``check --grad da1/dz1`` (and ``dz1/dW1``, ``da2/da1``) compares a formula with one of
these. Each is the derivation's own calculus: ``sympy.diff`` of the stage body, the
Kronecker deltas contracted (``contraction.py``) and the result restated in forward
values (``forward_values.py``). The driver exposes them (``symgrad.derivations``).
"""

from __future__ import annotations

from dataclasses import replace

import sympy as sp

from symgrad.calculus.contraction import contract
from symgrad.calculus.forward_values import rewrite
from symgrad.ir.network import Stage


def _reindexed(stage: Stage, i: sp.Symbol) -> Stage:
    return replace(stage, body=stage.body.xreplace({stage.index: i}), index=i)


def stage_local(stage: Stage, i: sp.Symbol, wrt: sp.Expr) -> sp.Expr:
    """``d out[i] / d wrt`` of one stage (``wrt`` an entry of its input or a parameter),
    contracted and in forward values."""
    body = stage.body.xreplace({stage.index: i})
    return rewrite(contract(sp.diff(body, wrt)), _reindexed(stage, i))


def diagonal(local: sp.Expr, p: sp.Symbol, i: sp.Symbol) -> sp.Expr:
    """``local`` on the diagonal ``p = i``, its Kronecker deltas contracted."""
    return contract(local.xreplace({p: i}))


def chain_jacobian(stages: tuple[Stage, ...], i: sp.Symbol, k: sp.Symbol) -> sp.Expr:
    """The Jacobian ``d out[i] / d inp[k]`` of consecutive stages: the product of their
    local Jacobians, contracted (``da2/da1 = diag(f'(z2)) W2``)."""
    jac: sp.Expr | None = None
    for st in stages:
        m = sp.Dummy("m", integer=True)
        local = stage_local(st, i, st.inp[m])
        if jac is None:
            jac = local.xreplace({m: k})
        else:  # d(out_n)[i]/d(inp)[k] = sum_m d(out_n)[i]/d(out_{n-1})[m] * J[m, k]
            prev = jac.xreplace({i: m})
            jac = contract(sp.Sum(local * prev, (m, 0, st.in_width - 1)))
    assert jac is not None
    return jac


__all__ = ["chain_jacobian", "diagonal", "stage_local"]
