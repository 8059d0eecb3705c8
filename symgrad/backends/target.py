"""A code-generation target as one record: what a backend is, in one place.

A :class:`Target` names the printer class that spells the target-free program in the
target's array library, the template(s) that lay the printed statements out as a file,
the file's comment syntax, the API features its module offers and how the printer may
reuse memory. ``backends/registry.py`` registers every target; the command line, the
driver and the code generators read the records and never test a target's name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The API features a target's module may offer (``Target.features``).
FEATURES = ("optimizer", "hvp", "vjp")


@dataclass(frozen=True)
class Target:
    """One code-generation backend.

    Attributes:
        name: the ``codegen --target`` name and ``generate_code(target=...)``.
        printer: the SymPy printer class that prints the program's expressions, or its
            ``"module:Class"`` path (imported when first printed with, so that listing
            the targets stays cheap).
        templates: the file template(s) under ``templates/``; the first is the module.
        full: the target's spelling of "broadcast ``{value}`` to ``{shape}`` in the
            working dtype" (a constant gradient widened to its array's shape).
        comment: the line-comment prefix of the generated file (its header, notes).
        marker: the kind of :func:`symgrad.files.marker_line` that marks the file as
            generated (``"python"``, ``"dot"``).
        features: the API the module offers beyond ``loss``/``loss_and_grads``:
            ``"optimizer"`` (a training step), ``"hvp"`` (``hvp``/``ggnvp``), ``"vjp"``
            (the network's VJP, for autograd: the input gradient and the loss's seed).
        inplace: statements update their own fresh arrays (``a *= b``).
        inplace_add: a sum may be accumulated in place too (torch keeps ``V W^T + b`` one
            fused ``addmm``).
        buffers: statements write into dead buffers (``out=``).
        autograd_inplace: in-place updates inside the autograd Functions' passes, which
            run with autograd off.
        recompute_scalars: the backward pass recomputes the scalar forward values it
            reads (autograd saves tensors only).
        extended: the module template reads the extended context (``target``, the VJP,
            ``hvp``) even without ``--hvp``.
        write: writes the target's files itself (``write(d, output, *, dtype, optimizer,
            source, force)`` returning the paths written; a callable or its
            ``"module:function"`` path), for a target that is not one Python module;
            ``None``: the module text goes to one file.
        suffixes: the file suffix of each template's output.
        template_dir: a folder searched for the templates before symgrad's own
            ``templates/`` (a backend kept outside symgrad); ``None``: ``templates/``.
    """

    name: str
    printer: type | str
    templates: tuple[str, ...]
    full: str = ""
    comment: str = "# "
    marker: str = "python"
    features: frozenset[str] = frozenset()
    inplace: bool = False
    inplace_add: bool = True
    buffers: bool = False
    autograd_inplace: bool = False
    recompute_scalars: bool = False
    extended: bool = True
    write: Callable[..., Any] | str | None = field(default=None, compare=False)
    suffixes: tuple[str, ...] = (".py",)
    template_dir: Path | None = None

    def __post_init__(self) -> None:
        unknown = set(self.features) - set(FEATURES)
        if unknown:
            raise ValueError(f"target '{self.name}': unknown features {sorted(unknown)}")
        if len(self.suffixes) != len(self.templates):
            raise ValueError(f"target '{self.name}': one suffix per template")

    def supports(self, feature: str) -> bool:
        return feature in self.features

    def printer_class(self) -> type:
        """The printer class (imported from its path the first time)."""
        return _resolve(self.printer)

    def writer(self) -> Callable[..., Any]:
        """The function that writes the target's files (see ``write``)."""
        if self.write is None:
            raise ValueError(f"target '{self.name}' writes one module, not files of its own")
        return _resolve(self.write)


def _resolve(obj: Any) -> Any:
    """``obj`` itself, or the object a ``"module:attr"`` path names."""
    if not isinstance(obj, str):
        return obj
    module, _, attr = obj.partition(":")
    return getattr(importlib.import_module(module), attr)


#: The NumPy target: the default printer of the target-free program (``codegen``'s shape
#: probe and the C target's shared statements print with it).
NUMPY = Target(
    "numpy",
    "symgrad.backends.numpy_printer:SymgradNumPyPrinter",
    ("module.py.j2",),
    full="np.full({shape}, {value}, dtype=X.dtype)",
    features=frozenset({"optimizer", "hvp"}),
    inplace=True,
    buffers=True,
    extended=False,
)

__all__ = ["FEATURES", "NUMPY", "Target"]
