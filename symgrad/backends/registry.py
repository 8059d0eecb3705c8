"""Every code-generation target, registered in one place.

Adding a backend is its :class:`~symgrad.backends.target.Target` record (registered here,
or by :func:`register` from a plug-in), its printer and its template; the command line's
``--target`` choices, :func:`symgrad.pipeline.generate_code` and the code generators read
the records. The built-in records name their printers and writers by ``"module:name"``
paths, so that listing the targets (the command line's start-up) imports no printer.
"""

from __future__ import annotations

from symgrad.backends.target import NUMPY, Target
from symgrad.errors import SpecError

_TARGETS: dict[str, Target] = {}


def register(target: Target) -> Target:
    """Add (or replace) a target; returns it."""
    _TARGETS[target.name] = target
    return target


def unregister(name: str) -> None:
    """Remove a target (a plug-in's, or a test's)."""
    _TARGETS.pop(name, None)


def lookup(target: str | Target) -> Target:
    """The record of a target name (a record is returned as is); an unknown name is a
    :class:`~symgrad.errors.SpecError` listing the known ones."""
    if isinstance(target, Target):
        return target
    rec = _TARGETS.get(target)
    if rec is None:
        raise SpecError(f"unknown target '{target}' (known: {', '.join(_TARGETS)})")
    return rec


def names() -> tuple[str, ...]:
    """The registered target names, in registration order."""
    return tuple(_TARGETS)


def supporting(feature: str) -> tuple[str, ...]:
    """The names of the targets that offer ``feature`` (``Target.features``)."""
    return tuple(n for n, t in _TARGETS.items() if t.supports(feature))


register(NUMPY)
register(
    Target(
        "torch",
        "symgrad.backends.torch_printer:TorchPrinter",
        ("torch_module.py.j2",),
        # (torch.full takes a number only; the value may be a row or column tensor.)
        full="torch.as_tensor({value}, dtype=X.dtype, device=X.device).expand({shape})",
        features=frozenset({"hvp", "vjp"}),
        inplace_add=False,
        autograd_inplace=True,
        recompute_scalars=True,
    )
)
register(
    Target(
        "jax",
        "symgrad.backends.jax_printer:JaxPrinter",
        ("jax_module.py.j2",),
        full="jnp.full({shape}, {value}, dtype=X.dtype)",
        features=frozenset({"hvp", "vjp"}),
    )
)
register(
    Target(
        "cupy",
        "symgrad.backends.jax_printer:CupyPrinter",
        ("cupy_module.py.j2",),
        full="cp.full({shape}, {value}, dtype=X.dtype)",
        features=frozenset({"hvp"}),
        inplace=True,
        buffers=True,
    )
)
register(
    Target(
        "c",
        "symgrad.backends.c_printer:SymgradCPrinter",
        ("c/net.c.j2", "c/net.h.j2"),
        comment="// ",
        marker="dot",
        features=frozenset({"optimizer"}),
        write="symgrad.backends.c_emit:write_c",
        suffixes=(".c", ".h"),
    )
)

__all__ = ["lookup", "names", "register", "supporting", "unregister"]
