"""The symgrad compiler driver: the pipeline, one call per stage.

The output of each stage is the input of the next:

1. **parse**   ``frontend``: a TOML spec or ``file.py:NAME`` -> a checked spec
2. **IR**      ``ir``: the component-form network (layers are sugar over equations
               ``out[i] = body``; ops come from the registry in ``ir/ops.py``)
3. **derive**  ``calculus/reverse.py``: reverse accumulation in index notation, with the
               simplification passes ``contraction`` (Kronecker deltas), ``forward_values``
               (derivatives in forward values) and loss fusion
4. **matrix**  ``calculus/matrix_form.py``: component form -> per-sample vector algebra
5. **lower**   ``calculus/lower.py``: the lowered program, target-free: the batched,
               row-major layout (``layout.py``, samples as rows), einsum lowering of
               component fallbacks (``einsum.py``) and the stability rewrites
6. **print**   ``backends``: a backend's printer (CSE, in-place updates) prints the
               lowered program into its templates (``templates/``)
7. **render**  ``documents``: LaTeX, Markdown, text and the graph, from the same derivation
8. **verify**  ``verify``: generated or hand-written code against numerics; formulas
               against the derivation (``check``)

The command line, the Python API (:func:`symgrad.derive`), ``verify`` and ``check`` all
call these functions, so a command derives a network once and every output reads that
one derivation. Stages 3-4 are :func:`derive` and the two derivations code generation
adds, :func:`derive_stable` (the stability rewrites) and :func:`derive_vjp` (the
vector-Jacobian program); stage 5 is :func:`lower` (and :func:`lower_vjp`,
:func:`lower_hvp`, :func:`lower_ggn` for the autograd targets and ``--hvp``), all memoised
in ``symgrad/derivations.py``: no consumer (backends, documents, verify, learn) runs the
calculus itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from symgrad.calculus.program import Program, program
from symgrad.calculus.reverse import Derivation
from symgrad.derivations import (
    derive,
    derive_stable,
    derive_vjp,
    lower,
    lower_ggn,
    lower_hvp,
    lower_vjp,
)
from symgrad.ir.network import Network


def parse(spec: str | Network) -> Network:
    """Stages 1-2: a spec path (``.toml`` or ``file.py:NAME``) or a built network -> the IR."""
    if isinstance(spec, Network):
        return spec
    from symgrad.frontend.spec import load_spec

    return load_spec(spec)


def generate_code(
    d: Derivation | Network,
    *,
    target: str = "numpy",
    optimizer: str | None = None,
    source: str | None = None,
    hvp: bool = False,
) -> str:
    """Stages 5-6: the lowered program (:func:`lower`) printed by the target's printer
    into its template.

    ``d`` may be a network (derived first, through :func:`derive`'s memo). ``target`` is a
    registered target's name (``backends/registry.py``: numpy, torch, jax, cupy; the C
    target writes two files and is refused here); ``hvp`` adds ``hvp`` and ``ggnvp``
    (second order) where the target's record offers it.
    """
    from symgrad.backends.emit import generate

    if isinstance(d, Network):
        d = derive(d)
    return generate(d, optimizer=optimizer, source=source, target=target, hvp=hvp)


#: The Python API's name for :func:`generate_code`.
generate = generate_code


def render_document(
    d: Derivation, *, to: str = "text", form: str = "both", standalone: bool = True
) -> str:
    """Stage 7: the derivation as a document (``latex``, ``markdown`` or ``text``)."""
    from symgrad.documents.render import render

    return render(d, to=to, form=form, standalone=standalone)


def render_graph(d: Derivation) -> str:
    """Stage 7: the computational graph as Graphviz DOT."""
    from symgrad.documents.graph import to_dot

    return to_dot(d)


@dataclass(frozen=True)
class Compilation:
    """A parsed and derived network: every output is rendered from this one derivation."""

    network: Network
    derivation: Derivation
    source: str

    def code(
        self, *, target: str = "numpy", optimizer: str | None = None, hvp: bool = False
    ) -> str:
        d, src = self.derivation, self.source
        return generate_code(d, target=target, optimizer=optimizer, source=src, hvp=hvp)

    def document(self, *, to: str = "text", form: str = "both", standalone: bool = True) -> str:
        return render_document(self.derivation, to=to, form=form, standalone=standalone)

    def graph(self) -> str:
        return render_graph(self.derivation)

    def program(self) -> Program:
        """The derivation as one program of equations (forward, loss, adjoints)."""
        return program(self.derivation)


def compile(spec: str | Network) -> Compilation:  # noqa: A001 - the driver's verb
    """Run the pipeline up to the derivation (stages 1-4); outputs are methods of the result."""
    net = parse(spec)  # 1-2
    d = derive(net)  # 3-4
    return Compilation(net, d, spec if isinstance(spec, str) else net.source)


__all__ = [
    "Compilation",
    "compile",
    "derive",
    "derive_stable",
    "derive_vjp",
    "generate",
    "generate_code",
    "lower",
    "lower_ggn",
    "lower_hvp",
    "lower_vjp",
    "parse",
    "render_document",
    "render_graph",
]
