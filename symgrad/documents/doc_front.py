# ruff: noqa: UP031 - %-formatting keeps LaTeX braces readable (no {{ }} doubling)
"""The document's front matter: the network and its notation (stated once for the whole
document), the forward pass, the loss, and the notes at the end."""

from __future__ import annotations

import re

import sympy as sp

from symgrad.calculus.conv_form import Correlate
from symgrad.documents import prose
from symgrad.documents.doc_base import DocBase
from symgrad.documents.doc_lets import forward_rows, statistics_parts
from symgrad.documents.latex_printer import BATCH_LOSS, LOSS, quantity
from symgrad.documents.lets import MatrixNames
from symgrad.documents.model import Eq, Item, M, Part
from symgrad.documents.statistics import BatchStatistics
from symgrad.documents.structure import free_names
from symgrad.errors import DerivationError
from symgrad.ir.network import Stage
from symgrad.ir.ops import step as step_fn


def _note_parts(note: str) -> tuple[Part, ...]:
    parts: list[Part] = []
    last = 0
    for m in re.finditer(r"sum_k y_k = 1", note):
        parts.append(note[last : m.start()])
        parts.append(M(r"\sum_k y_k = 1", "sum_k y_k = 1"))
        last = m.end()
    parts.append(note[last:])
    text = [p for p in parts if p != ""]
    if text and isinstance(text[0], str):
        text[0] = text[0][:1].upper() + text[0][1:]
    return (*text, ".")


class FrontMatter(DocBase):
    """Network and notation, forward pass, loss, notes."""

    def notes(self) -> None:
        """The derivation's notes not already shown at the step that used them."""
        fused = any(st.fused for st in self.d.steps)
        rest = [n for n in self.d.notes if not (fused and "y_k" in n)]
        if rest:
            s = self.section(["Notes"])
            for n in rest:
                s.items.append(Item("para", _note_parts(n)))

    def _width(self, w: sp.Expr) -> M:
        """``n_1 = 4``, or just ``4`` for a width that is a number."""
        if "sizes" not in self._found:  # one substitution for every width (not one per layer)
            self._found["sizes"] = {k: sp.Integer(n) for k, n in self.net.sizes.items()}
        v = sp.sympify(w).xreplace(self._found["sizes"])
        if str(v) == str(w):
            return M(str(v), str(v))
        return M(r"%s = %s" % (self.tex(w), v), f"{w} = {v}")

    def _width_parts(self) -> list[Part]:
        """``n_0 = 3`` (input), then each layer's output width, by layer number."""
        net = self.net
        sizes = {str(k) for k in net.sizes}
        parts: list[Part] = ["Widths: ", self._width(net.input_width), " (the input)"]
        by_layer: dict[int, Stage] = {}
        for st in net.stages:
            by_layer[st.layer] = st  # the layer's last stage: its output
        symbolic = False
        for layer, st in sorted(by_layer.items()):
            w = st.width
            parts += [f"; layer {layer}: ", self._width(w)]
            symbolic = symbolic or not sp.sympify(w).is_Integer
            if str(w) != f"n_{layer}" and str(w) in sizes:
                parts.append(" (keeps the width of its input)")
        parts.append(". ")
        if symbolic:
            parts += [
                M("n_l", "n_l"),
                " is the width of the output of layer ",
                M("l", "l"),
                "; a layer that keeps its input's width shares its symbol.",
            ]
        return parts

    def _network_parts(self) -> tuple[Part, ...]:
        net = self.net
        layers = "; ".join(f"{st.name}: {st.label} ({st.kind})" for st in net.stages)
        shape = (
            r" \times ".join(map(str, net.input_shape))
            if net.input_shape
            else self.tex(net.input_width)
        )
        return (
            f"Network {net.name}: input ",
            M(r"\mathbf{x} \in \mathbb{R}^{%s}" % shape, f"x in R^{net.input_width}"),
            f", {net.n_layers} layer(s), loss {net.loss.name}. Stages: {layers}.",
        )

    def _param_parts(self) -> tuple[Part, ...]:
        net = self.net
        if not net.params:
            return (
                "The network has no parameters: it is a function of its input, and the "
                "gradient of interest is the one with respect to the input, ",
                M(r"\partial %s / \partial \mathbf{x}" % LOSS, "dl/dx"),
                ".",
            )
        parts: list[Part] = ["Parameters: "]
        for n, p in enumerate(net.params):
            if n:
                parts.append(", ")
            shape = r" \times ".join(self.tex(w) for w in p.shape) or "1"
            kern = quantity(p.name, "vector", matrix=len(p.shape) != 1)
            parts.append(M(r"%s \in \mathbb{R}^{%s}" % (kern, shape), f"{p.name}: {p.shape}"))
        parts.append(".")
        return tuple(parts)

    def intro(self) -> None:
        s = self.section(["Network and notation"])
        s.items.append(Item("para", self._network_parts()))
        s.items.append(Item("para", tuple(self._width_parts())))
        s.items.append(Item("para", self._param_parts()))
        last = str(self.net.output)
        conv = prose.notation_parts(quantity(last), last)
        if self.uses(sp.KroneckerDelta) and self.comp:
            conv += prose.index_parts(self.zero_based)
        if self.uses(step_fn):
            conv += [" ", M(r"[z > 0]", "[z > 0]"), " is an Iverson bracket (1 if true, else 0)."]
        s.items.append(Item("para", tuple(conv)))
        if self.mat:
            w = self.net.input_width
            parts = prose.matrix_parts(self.tex(w), str(w))
            if self.coupled:
                parts.append(
                    " A stage here couples the samples, so no sample has a loss of its own: "
                    "every adjoint, per sample too, is a derivative of the mean loss."
                )
            s.items.append(Item("para", tuple(parts)))

    def forward(self) -> None:
        s = self.section(["Forward pass"])
        if self.comp:
            s.items.append(Item("label", ("Component form",)))
            eqs: list[Eq] = []
            for f in self.d.forward:
                named = forward_rows(self, f.stage)
                out = self.q(f.stage.name, "component", free_names(f.stage))
                stats = BatchStatistics.of(f.stage)
                if stats is not None and not named:  # the statistics named once, here
                    items = stats.definition_items(self)
                    self.once("batch statistics", None)
                    s.items.extend(items[:1])
                    eqs.extend(items[1].eqs)
                    named = [Eq((out, self.ex(stats.name(f.component))))]
                eqs.extend(named or [Eq((out, self.ex(f.component)))])
            s.items.append(Item("math", eqs=tuple(eqs)))
            said = statistics_parts(self, self.net.stages)
            if said:
                s.items.append(Item("para", said))
        if self.mat:
            s.items.append(Item("label", ("Matrix form, per sample",)))
            eqs = []
            for f in self.d.forward:
                eqs.extend(
                    self._named_rows(f, "vector")
                    or [
                        self._coupled_row(f, per_sample=True)
                        or Eq((self.q(f.stage.name, "vector"), self.ex(f.matrix, "vector")))
                    ]
                )
            s.items.append(Item("math", eqs=tuple(eqs)))
            s.items.append(Item("label", ("Batched, samples as rows",)))
            beqs = []
            for f in self.d.forward:
                try:
                    b = f.batched
                except ValueError:
                    continue
                beqs.extend(
                    self._named_rows(f, "batched")
                    or [
                        self._coupled_row(f)
                        or Eq((self.q(f.stage.name, "batched"), self.ex(b, "batched")))
                    ]
                )
            s.items.append(Item("math", eqs=tuple(beqs)))
            if any(f.matrix is not None and f.matrix.has(Correlate) for f in self.d.forward):
                s.items.extend(self.star_definition())  # where the correlation first appears

    def _named_rows(self, f, notation: str) -> list[Eq]:
        """A stage with names in its matrix forms: each name's row, then the stage in
        them (per sample: ``notation`` "vector"; or "batched"). Empty where it has none."""
        names = MatrixNames.of(f)
        defs = names.definitions(notation) if names is not None else ()
        if names is None or not defs:
            return []
        try:
            form = f.matrix if notation == "vector" else f.batched
        except ValueError:
            return []
        rows = [Eq((self.ex(sym, notation), self.ex(e, notation))) for sym, e in defs]
        named = names.name(form, notation)
        rows.append(Eq((self.q(f.stage.name, notation), self.ex(named, notation))))
        return rows

    def _coupled_row(self, f, per_sample: bool = False) -> Eq | None:
        """A stage with batch statistics has no per-sample form (it reads the batch); its
        batched form is its component form, the rows being the samples."""
        stats = BatchStatistics.of(f.stage)
        if stats is None:
            return None
        if per_sample:
            why = "see the component form"
            return Eq((self.q(f.stage.name, "vector"), M(r"\text{%s}" % why, why)))
        out = self.q(f.stage.name, "component", free_names(f.stage))
        return Eq((out, self.ex(stats.name(f.component))))

    def _loss_matrix(self) -> sp.Expr | None:
        return self.d.loss_matrix  # None for a loss without matrix form: components only

    def _batch_mean(self) -> M | None:
        try:
            return self.ex(self.d.loss_batched, "batched", yhat=True)
        except (DerivationError, ValueError):
            return None

    def loss(self) -> None:
        s = self.section(["Loss (", self.net.loss.name, ")"])
        ell = M(r"\ell", "l")
        forms: list[str] = []  # one display: the forms of one sample's loss, the batch mean
        eqs: list[Eq] = []
        if self.comp:
            forms.append("component form")
            eqs.append(Eq((ell, self.ex(self.d.loss, yhat=True))))
        m = self._loss_matrix()
        if self.mat and m is not None:
            forms.append("matrix form")
            eqs.append(Eq((ell, self.ex(m, "vector", yhat=True))))
            sides = [
                M(BATCH_LOSS, "L"),
                M(r"\frac{1}{N} \sum_{s=1}^{N} %s^{(s)}" % LOSS, "mean_s l(s)"),
            ]
            bm = self._batch_mean()
            if bm is not None:
                sides.append(bm)
            eqs.append(Eq(tuple(sides)))
        if eqs:
            label = "Per sample (%s)" % ", then ".join(forms)
            if len(eqs) > len(forms):
                label += ", then the batch mean"
            s.items.append(Item("label", (label,)))
            s.items.append(Item("math", eqs=tuple(eqs)))
