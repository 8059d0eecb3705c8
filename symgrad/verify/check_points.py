"""Random consistent points for ``check --formula`` (per sample, or a batch)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from symgrad.calculus.reverse import Derivation
from symgrad.derivations import equations
from symgrad.ir.indices import BATCH
from symgrad.ir.network import Network
from symgrad.pipeline import derive
from symgrad.verify.check_result import BATCH_SIZE
from symgrad.verify.evaluation import run_derivation, run_program_batch
from symgrad.verify.verify import concrete_sizes, random_targets


def _coupled(net: Network) -> bool:
    """Whether a stage couples the samples (batch norm): its steps need a batch."""
    return any(s.sample is not None for s in net.stages)


def _random_batch(
    d: Derivation, net: Network, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], set[str]]:
    """A random batch of BATCH_SIZE samples through the derivation's program, and the
    names that carry a sample axis."""
    params = {p.name: rng.uniform(-1.0, 1.0, net.shape(p)) for p in net.params}
    shape = tuple(net.input_shape) or (net.size(net.input_width),)
    x = rng.normal(0.0, 1.0, (BATCH_SIZE, *shape))
    y = random_targets(net, BATCH_SIZE, rng)
    env = {**params, str(net.input): x, str(net.loss.target): y}
    env, batched = run_program_batch(equations(d), env, net.sizes, BATCH_SIZE)
    env["yhat"] = env[str(net.output)]
    batched.add("yhat")
    for sym, value in net.sizes.items():
        env.setdefault(str(sym), np.array(float(value)))
    return env, batched


def _random_env(d: Derivation, net: Network, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if _coupled(net):  # one sample of a batch (its statistics couple the samples)
        env, batched = _random_batch(d, net, rng)
        return {k: v[0] if k in batched else v for k, v in env.items()}
    params = {p.name: rng.uniform(-1.0, 1.0, net.shape(p)) for p in net.params}
    x = rng.normal(0.0, 1.0, net.size(net.input_width))
    y = random_targets(net, 1, rng)[0]
    _, env = run_derivation(d, params, x, y)  # a conv net's x is reshaped to its input shape
    env["yhat"] = env[str(net.output)]
    for sym, value in net.sizes.items():  # widths by name (n_2), as symgrad prints them
        env.setdefault(str(sym), np.array(float(value)))
    return env


_CACHE: dict[tuple[int, int], tuple[Network, Network, Derivation]] = {}


def _derivation(net: Network, seed: int) -> tuple[Network, Derivation]:
    """The (concrete) network and its derivation; the last few are kept for repeated checks."""
    key = (id(net), seed)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is net:
        return hit[1], hit[2]
    sized = concrete_sizes(net, seed)
    if _coupled(sized):  # batch statistics: the steps through them are checked on a batch
        sized = replace(sized, sizes={**sized.sizes, BATCH: BATCH_SIZE})
    d = derive(sized)
    if len(_CACHE) >= 8:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = (net, sized, d)
    return sized, d
