"""``verify --symbolic``: the derivation itself, every step's matrix form against its
component form, evaluated numerically at the network's widths and at random small ones."""

from __future__ import annotations

import numpy as np
import sympy as sp

from symgrad.ir.network import Network
from symgrad.verify.points import random_point
from symgrad.verify.reference import torch_reference
from symgrad.verify.report import TOL_AUTOGRAD, TOL_SYMBOLIC, Row, rel_error


def concrete_sizes(net: Network, seed: int = 0, low: int = 2, high: int = 5) -> Network:
    """``net`` with every symbolic width set to a random small integer."""
    if net.is_concrete:
        return net
    rng = np.random.default_rng(seed + 31)
    widths = {str(s.width) for s in net.stages} | {str(net.input_width)}
    widths |= {str(sym) for p in net.params for e in p.shape for sym in sp.sympify(e).free_symbols}
    known = {str(k) for k in net.sizes}
    new = {
        w: int(rng.integers(low, high + 1)) for w in widths if w not in known and w.isidentifier()
    }
    return net.with_sizes(**new)


def _resized(net: Network, seed: int) -> Network | None:
    """``net`` with every width redrawn at random (None if a shape is a fixed integer)."""
    if any(not sp.sympify(e).free_symbols for p in net.params for e in p.shape):
        return None
    rng = np.random.default_rng(seed + 57)
    return net.with_sizes(**{str(s): int(rng.integers(2, 6)) for s in net.sizes})


def symbolic_rows(net: Network, seed: int = 0) -> list[Row]:
    """Every step of the derivation: matrix form vs component form on one random sample.

    The derivation is symbolic in the widths: it is evaluated at the network's widths and
    again at random small widths (symbolic widths get random values). When PyTorch is
    installed, each parameter step is also compared with autograd of one sample's loss.
    """
    from dataclasses import replace

    from symgrad.pipeline import derive
    from symgrad.verify.evaluation import run_derivation

    net = concrete_sizes(net, seed)
    d = derive(net)
    variants = [net] + [v for v in (_resized(net, seed),) if v is not None]
    errors: dict[tuple[str, str], tuple[float, float]] = {}
    ref, env0 = None, {}
    for k, sized in enumerate(variants):
        dk = replace(d, network=sized)
        params, X, Y = random_point(sized, None, seed + k, 1)
        _, env_c = run_derivation(dk, params, X[0], Y[0], form="component")
        _, env_m = run_derivation(dk, params, X[0], Y[0], form="matrix")
        pairs = [(f.stage.name, "forward matrix form") for f in d.forward]
        pairs += [(st.grad, "matrix form") for st in d.steps]
        for name, what in pairs:
            a, r = rel_error(env_m[name], env_c[name])
            old = errors.get((name, what), (0.0, 0.0))
            errors[(name, what)] = (max(a, old[0]), max(r, old[1]))
        if k == 0:
            ref = torch_reference(sized, params, X, Y)
            env0 = env_c
    rows = [
        Row(name, what, a, r, TOL_SYMBOLIC, r <= TOL_SYMBOLIC)
        for (name, what), (a, r) in errors.items()
    ]
    if ref is not None:
        for name, st in d.param_steps().items():
            a, r = rel_error(env0[st.grad], ref[2][name])
            rows.append(Row(st.grad, "torch", a, r, TOL_AUTOGRAD, r <= TOL_AUTOGRAD))
    return rows
