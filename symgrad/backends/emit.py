"""Stage 6, emit: the derivation printed as a module for one target.

``codegen.build_context`` prints the target-free program (statements as SymPy
expressions after the stability rules and CSE) with the target's printer;
``targets.target_context`` adds what the torch, JAX and CuPy modules and ``--hvp``
need. This module picks the context and the template for a target and renders it.
"""

from __future__ import annotations

from symgrad.backends.codegen import OPTIMIZERS, TARGETS, build_context
from symgrad.backends.targets import target_context
from symgrad.calculus.reverse import Derivation
from symgrad.errors import SpecError
from symgrad.names import check_network
from symgrad.templating import environment


def generate(
    d: Derivation,
    *,
    optimizer: str | None = None,
    source: str | None = None,
    target: str = "numpy",
    hvp: bool = False,
) -> str:
    """The source text of the standalone module for the derivation ``d`` (the pipeline's
    stages 5-6; :func:`symgrad.pipeline.generate` takes a network too): NumPy, or
    ``target``'s (torch, jax, cupy; see ``targets.py``), with ``hvp`` and ``ggnvp`` when
    ``hvp``."""
    check_network(d.network)  # names pasted into code: identifiers only, whatever built it
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise SpecError(f"unknown optimizer '{optimizer}' (known: {', '.join(OPTIMIZERS)})")
    if target not in TARGETS:
        raise SpecError(f"unknown target '{target}' (known: {', '.join(TARGETS)})")
    if target == "numpy" and not hvp:
        ctx = build_context(d, optimizer=optimizer, source=source)
    else:
        ctx = target_context(d, target, optimizer=optimizer, source=source, hvp=hvp)
    return environment().get_template(TARGETS[target][1]).render(**ctx)


__all__ = ["generate"]
