# ruff: noqa: UP031 - %-formatting keeps LaTeX braces readable (no {{ }} doubling)
"""Steps through stages with several indices: a (channels, [height,] width) stage (conv,
pooling, flatten), shown in components and in correlation form with one plain sentence
on what the step does, and a stage that couples the samples (batch norm in training
mode), whose chain rule sums over the batch as well as the components."""

from __future__ import annotations

from symgrad.calculus.conv_form import (
    CorrInputGrad,
    CorrWeightGrad,
    Unflatten,
    WindowMaxGrad,
    WindowSumGrad,
)
from symgrad.calculus.layout import N
from symgrad.calculus.reverse import Step
from symgrad.documents import batched_display
from symgrad.documents.doc_base import DocBase
from symgrad.documents.model import Eq, Item, M, Section
from symgrad.documents.statistics import BatchStatistics
from symgrad.ir.indices import idx as idx_

_WHAT = (
    (
        Unflatten,
        "Flatten only rearranges entries: its Jacobian is a permutation matrix (one 1 in "
        "every row and column), so the backward pass puts each entry of the adjoint back "
        "where it came from (the inverse reshape).",
    ),
    (
        WindowMaxGrad,
        "Max pooling passes each window's adjoint to the position of the window's maximum "
        "(its arg-max); the other positions of the window receive 0.",
    ),
    (
        WindowSumGrad,
        "Sum pooling passes each window's adjoint unchanged to every position of the window.",
    ),
    (
        CorrInputGrad,
        "The adjoint of a conv layer's input is the transposed correlation: every input "
        "position collects the adjoints of the output positions whose windows read it, each "
        "weighted by the kernel entry that connected them.",
    ),
    (
        CorrWeightGrad,
        "A kernel entry is used at every output position, so its gradient is the sum over "
        "the positions (and the samples) of the adjoint times the input value it met: the "
        "correlation of the adjoint with the input.",
    ),
)


#: How to read a batched line whose quantities are a matrix per sample (a sequence).
_PER_SAMPLE = Item(
    "para",
    (
        "In the batched line each sample's quantity is a matrix, its rows the positions "
        "(or a stack of matrices, one per leading index such as a head): a product such as ",
        M(r"A B^{\top}", "A @ B.mT"),
        " multiplies each sample's matrices, ",
        M(r"M^{\top}", "M.mT"),
        " is each sample's matrix transposed, ",
        M(r"\odot", "*"),
        " is the elementwise product, ",
        M(r"\operatorname{rowsum}(M) = M \mathbf{1}", "rowsum(M) = M @ 1"),
        " sums each row into a column, which ",
        M(r"\mathbf{1}^{\top}", "1^T"),
        " repeats along the rows (broadcasting, in the code).",
    ),
)


class TensorSteps(DocBase):
    """Conv, pooling and flatten steps; steps through batch statistics."""

    def _star(self) -> list[Item]:
        return self.star_definition()

    def _what(self, st: Step) -> list[Item]:
        forms = [self.batched_of(st)]
        if st.matrix is not None:
            forms.append(st.matrix)
        for cls, text in _WHAT:
            if any(f.atoms(cls) for f in forms):
                return [Item("para", (text,))]
        return []

    def tensor_step(self, st: Step, s: Section) -> None:
        """A step of a (channels, [height,] width) stage (conv, pooling, flatten): its local
        derivative and the contracted gradient, whose deltas were solved through the index
        arithmetic (bracketed range conditions), then the correlation form."""
        stage = st.stage
        assert stage is not None and st.local is not None
        names = [str(i) for i in st.indices]
        s.items.extend(self._what(st))
        if self.comp:
            s.items.append(Item("label", ("Component form (positions outside a quantity are 0)",)))
            nl = len(st.local_indices) - len(names)
            lo, li = st.local_indices[:nl], st.local_indices[nl:]
            loc = self.local_name(
                stage.name, st.wrt, [str(i) for i in lo], [str(i) for i in li], "component"
            )
            eq = Eq((*self.grad_lhs(st, "component", names), self.ex(st.component)))
            s.items.append(Item("math", eqs=(Eq((loc, self.ex(st.local))), eq)))
        if self.mat:
            products = batched_display.matrix_products(st.batched)
            what = "Matrix" if products else "Correlation"
            s.items.append(Item("label", (f"{what} form, per sample and batched",)))
            eqs = (
                Eq((*self.grad_lhs(st, "vector", []), self.ex(st.matrix, "vector"))),
                Eq((*self.grad_lhs(st, "batched", []), self.ex(self.batched_of(st), "batched"))),
            )
            s.items.append(Item("math", eqs=eqs))
            if any(f.atoms(CorrInputGrad, CorrWeightGrad) for f in (self.batched_of(st),)):
                s.items.extend(self._star())
            if products and self.once("per-sample matrices", st) is None:
                s.items.append(_PER_SAMPLE)

    def sample_step(self, st: Step, s: Section) -> None:
        """A step through a stage that couples the samples (batch norm in training mode):
        the sample index is explicit, and the chain rule sums over every sample of the
        batch as well as every component, since each output depends on every sample. The
        batch statistics are named (mean, variance, normalised input) where the stage's
        expression has them, and the result is restated in them."""
        stage = st.stage
        assert stage is not None and st.local is not None and st.upstream is not None
        names = [str(i) for i in st.indices]
        w, n = self.tex(stage.width), self.tex(N)
        stats = BatchStatistics.of(stage)
        if st.kind == "input":
            # d(out[t, k]) / d(in[s, i]): the output indices summed over, the input's free
            sw, iw, tw, kw = (idx_(nm) for nm in ("s", "i", "t", "k"))
            local = st.local.xreplace({sw: tw, iw: kw, tw: sw, kw: iw})
            oi = ["t", "k"]
            sums = (r"\sum_{t=1}^{%s} \sum_{k=1}^{%s}" % (n, w), "sum_t sum_k")
        else:
            local = st.local
            oi = ["s", "i"]
            sums = (r"\sum_{s=1}^{%s} \sum_{i=1}^{%s}" % (n, w), "sum_s sum_i")
        loc = self.local_name(stage.name, st.wrt, oi, names, "component")
        if stats is not None and self.once("batch statistics", st) is None:
            s.items.extend(stats.definition_items(self))
        if self.comp:
            s.items.append(Item("label", ("Local derivative (the sample index explicit)",)))
            shown = stats.name(local) if stats is not None else local
            s.items.append(Item("math", eqs=(Eq((loc, self.ex(shown))),)))
            up = self.q(st.upstream, "component", oi)
            chain = M(
                lambda: r"%s %s %s" % (sums[0], up.tex, loc.tex), f"{sums[1]} ({up.txt}*{loc.txt})"
            )
            s.items.append(Item("label", ("Chain rule over the batch, component form",)))
            lhs = self.grad_lhs(st, "component", names)
            named = stats.forms(st.component, st.upstream) if stats is not None else []
            # in the named statistics only: spelt out, the same sum is a restatement
            sides = [*lhs, chain, *([self.ex(f) for f in named] or [self.ex(st.component)])]
            s.items.append(Item("math", eqs=(Eq(tuple(sides)),)))
            s.items.append(Item("para", self._batch_sentence(st, oi[0])))
        forms = stats.forms(st.component, st.upstream or "") if stats is not None else []
        shown = self.comp and (forms or st.kind == "param")  # the last line above says it
        if self.mat and not shown:
            s.items.append(Item("label", ("Batched: the sums over the batch are over the rows",)))
            if forms:  # the rows are the samples: the component form in the statistics
                eqs = (Eq((*self.grad_lhs(st, "batched", []), self.ex(forms[-1]))),)
            else:
                eqs = (
                    Eq(
                        (*self.grad_lhs(st, "batched", []), self.ex(self.batched_of(st), "batched"))
                    ),
                )
            s.items.append(Item("math", eqs=eqs))

    def _batch_sentence(self, st: Step, sample: str) -> tuple:
        stage = st.stage
        assert stage is not None
        where = self.once("batch coupling", st)
        tail = (
            "No further sum over the samples is added in the batched code, which computes the "
            "last line as it stands."
            if st.kind == "param"
            else "In the batched code the sample index is the rows' axis: the last line, row by "
            "row, is the batched adjoint."
        )
        if isinstance(where, Step):
            return (
                "The chain rule sums over the samples as for ",
                self.step_name(where),
                ". " + tail,
            )
        return (
            f"The batch statistics of {stage.label} are sums over the ",
            M(self.tex(N), str(N)),
            " samples of the batch, so every output depends on every sample: the chain rule "
            "sums over the samples ",
            M(sample, sample),
            " as well as the components. " + tail,
        )
