"""The random point a module is verified at: parameters, inputs X and targets Y.

Targets are drawn from a domain the loss accepts (:func:`target_domain`): probabilities
for cross-entropy, (0, 1) for a binary cross-entropy, real numbers otherwise, or what
``--targets`` / the spec's ``targets`` say.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import sympy as sp

from symgrad.errors import SpecError
from symgrad.ir.layers import y_s
from symgrad.ir.network import Network
from symgrad.verify.module_process import LocalModule, ModuleError, ModuleProcess

#: Target domains (``--targets``, the spec's ``targets``): what Y is drawn from.
TARGET_DOMAINS = ("real", "positive", "unit", "onehot", "probabilities")


def target_domain(net: Network, targets: str | None = None) -> str:
    """The domain Y is drawn from: ``targets`` if given, else the spec's ``targets`` field,
    else what the loss needs (probabilities for cross-entropy, (0, 1) for bce, else real)."""
    chosen = targets or getattr(net, "targets", None)
    if chosen and chosen != "auto":
        if chosen not in TARGET_DOMAINS:
            raise SpecError(
                f"unknown target domain {chosen!r} (choose from {', '.join(TARGET_DOMAINS)})",
                field="--targets",
            )
        return chosen
    if net.loss.requires_softmax or any(k == "sum_y_is_1" for k, _ in net.loss.identities):
        return "probabilities"
    elem = net.loss.elementwise
    if elem is not None and elem.has(sp.log) and elem.has(1 - y_s):  # y and 1 - y: BCE-like
        return "unit"
    return "real"


def random_targets(
    net: Network, n: int, rng: np.random.Generator, targets: str | None = None
) -> np.ndarray:
    """Targets from the network's target domain (:func:`target_domain`)."""
    C = net.size(net.output_width)
    domain = target_domain(net, targets)
    if domain == "probabilities":
        y = rng.uniform(0.05, 1.0, (n, C))
        return y / y.sum(axis=1, keepdims=True)
    if domain == "onehot":
        return np.eye(C)[rng.integers(0, C, n)]
    if domain == "unit":
        return rng.uniform(0.05, 0.95, (n, C))
    if domain == "positive":
        return rng.uniform(0.1, 2.0, (n, C))
    return rng.normal(0.0, 1.0, (n, C))


def random_point(
    net: Network,
    mod: ModuleType | ModuleProcess | LocalModule | None,
    seed: int,
    batch: int,
    targets: str | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Float64 parameters (from ``mod.init_params`` plus noise), inputs X and targets Y."""
    rng = np.random.default_rng(seed + 12345)
    if isinstance(mod, ModuleProcess | LocalModule):
        base = mod.call("init_params", seed, np.float64)
    elif mod is not None:
        base = mod.init_params(seed, np.float64)
    else:
        base = {p.name: rng.uniform(-0.5, 0.5, net.shape(p)) for p in net.params}
    if not isinstance(base, dict):
        raise ModuleError(f"init_params returned {type(base).__name__}, expected a dict")
    params = {}
    for k, v in base.items():
        arr = np.asarray(v)
        if arr.dtype.kind not in "biuf":
            raise ModuleError(f"init_params returned {k!r} of dtype {arr.dtype}")
        params[str(k)] = arr.astype(np.float64)
    # A little noise: parameters initialised to constants (zeros, ones) hide transposes.
    for k in params:
        # (np.asarray: a 0-dim parameter plus noise is a NumPy scalar, not an array)
        params[k] = np.asarray(params[k] + rng.normal(0.0, 0.1, params[k].shape))
    X = rng.normal(0.0, 1.0, (batch, *(net.input_shape or (net.size(net.input_width),))))
    Y = random_targets(net, batch, rng, targets)
    return params, X, Y
