"""Stage 6, emit: the derivation printed as a module for one target.

``codegen.build_context`` prints the target-free program (statements as SymPy
expressions after the stability rules and CSE) with the target's printer;
``targets.target_context`` adds what the torch, JAX and CuPy modules and ``--hvp``
need. This module picks the context and the template for a target and renders it.
"""

from __future__ import annotations

from symgrad.backends.codegen import OPTIMIZERS, build_context
from symgrad.backends.registry import lookup
from symgrad.backends.target import Target
from symgrad.backends.targets import refuse_unsupported, target_context
from symgrad.calculus.reverse import Derivation
from symgrad.errors import SpecError
from symgrad.names import check_network
from symgrad.templating import environment


def generate(
    d: Derivation,
    *,
    optimizer: str | None = None,
    source: str | None = None,
    target: str | Target = "numpy",
    hvp: bool = False,
) -> str:
    """The source text of the standalone module for the derivation ``d`` (the pipeline's
    stages 5-6; :func:`symgrad.pipeline.generate` takes a network too): NumPy, or
    ``target``'s (torch, jax, cupy; see ``targets.py``), with ``hvp`` and ``ggnvp`` when
    ``hvp``."""
    check_network(d.network)  # names pasted into code: identifiers only, whatever built it
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise SpecError(f"unknown optimizer '{optimizer}' (known: {', '.join(OPTIMIZERS)})")
    rec = lookup(target)
    if rec.write is not None:
        files = " and ".join(f"NAME{s}" for s in rec.suffixes)
        raise SpecError(
            f"target '{rec.name}' writes {files}, not one module: "
            f"use codegen --target {rec.name} -o NAME"
        )
    refuse_unsupported(rec, optimizer=optimizer, hvp=hvp)
    if rec.extended or hvp:
        ctx = target_context(d, rec, optimizer=optimizer, source=source, hvp=hvp)
    else:
        ctx = build_context(d, optimizer=optimizer, source=source, target=rec)
    return environment(rec.template_dir).get_template(rec.templates[0]).render(**ctx)


__all__ = ["generate"]
