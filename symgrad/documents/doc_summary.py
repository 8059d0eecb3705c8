# ruff: noqa: UP031 - %-formatting keeps LaTeX braces readable (no {{ }} doubling)
"""The document's summaries: the four equations of backpropagation (in general and for
this network) with the recipe, the layer-by-layer Jacobians and each parameter's gradient
as a product chain, and the backward pass as the generated code computes it."""

from __future__ import annotations

import sympy as sp

from symgrad.calculus.matrix_form import Vec
from symgrad.calculus.reverse import Step
from symgrad.documents import prose
from symgrad.documents.batched_display import Entries
from symgrad.documents.doc_base import DocBase
from symgrad.documents.latex_breaking import visual_width
from symgrad.documents.latex_printer import paren, quantity
from symgrad.documents.lets import MatrixNames
from symgrad.documents.model import Eq, Item, M
from symgrad.documents.statistics import BatchStatistics
from symgrad.documents.structure import (
    Grouped,
    bp_tag,
    is_additive,
    pass_back,
    readers,
    swap_ik,
)
from symgrad.ir.network import Stage


def _colour(colour: str, tex: str) -> str:
    """``tex`` in colour; a product too long for one line is left black, so that the line
    breaker can split it (a coloured group is one unbreakable box)."""
    if visual_width(tex) > 60:
        return tex
    return r"\textcolor{%s}{%s}" % (colour, tex)


def _coloured(colour: str, m: M) -> M:
    return M(lambda: _colour(colour, m.tex), lambda: m.txt)


def _parenthesised(m: M) -> M:
    return M(lambda: paren(m.tex), lambda: f"({m.txt})")


class Summaries(DocBase):
    """BP1-BP4, the layer Jacobians, the backward pass as computed."""

    def _layers(self) -> list[list[Stage]]:
        """The stages grouped by layer number, in forward order."""
        groups: dict[int, list[Stage]] = {}
        for st in self.net.stages:
            groups.setdefault(st.layer, []).append(st)
        return [groups[k] for k in sorted(groups)]

    def _stage_jacobian(self, stage: Stage) -> M | None:
        """The whole-stage matrix ``d out / d in`` (``diag(a (1 - a))``, ``W``), as one
        factor of a product (parenthesised when a sum)."""
        for st in self.input_steps(stage):
            if st.local is not None:
                jm = st.local_matrix
                if jm is None:
                    return None
                # in the stage's names (mu, sigma^2, ...), as its own step writes it
                outer, self.matrix_naming = (
                    self.matrix_naming,
                    MatrixNames.of(self.forward_of(stage)),
                )
                try:
                    m = self.ex(jm, "vector")
                finally:
                    self.matrix_naming = outer
                if jm.is_Add:
                    return _parenthesised(m)
                return m
        return None

    @staticmethod
    def _param_jacobian_name(out: str, param: str, matrix: bool) -> M:
        o = quantity(out, "vector")
        p = quantity(param, "vector", matrix=matrix)
        return M(r"\frac{\partial %s}{\partial %s}" % (o, p), f"d{out}/d{param}")

    @staticmethod
    def _product(factors: list[M], extra: tuple[str, str] | None = None) -> M:
        def tex() -> str:
            return " ".join([*(f.tex for f in factors), *([extra[0]] if extra else [])])

        def txt() -> str:
            return " @ ".join([*(f.txt for f in factors), *([extra[1]] if extra else [])])

        return M(tex, txt)

    def _layer_eqs(self, group: list[Stage]) -> list[Eq]:
        first, last = group[0], group[-1]
        out, inp = last.name, str(first.inp)
        eqs: list[Eq] = []
        factors = [self._stage_jacobian(st) for st in reversed(group)]
        lhs = self.local_name(out, inp, [], [], "vector")
        if all(f is not None for f in factors):  # no matrix form: nothing to show
            prod = self._product([f for f in factors if f is not None])
            eqs.append(
                Eq(
                    (
                        M(
                            lambda: r"J^{[%s]} = %s" % (first.layer, lhs.tex),
                            f"J{first.layer} = {lhs.txt}",
                        ),
                        _coloured("blue", prod),
                    )
                )
            )
        for k, st in enumerate(group):
            for p in st.params:
                after = [self._stage_jacobian(x) for x in reversed(group[k + 1 :])]
                if not after or any(f is None for f in after):
                    continue  # the parameter's own stage ends the layer: nothing to expand
                own = self._param_jacobian_name(out, p.name, len(p.shape) != 1)
                pstep = next((x for x in self.param_steps(p.name) if x.param == p), None)
                pm = quantity(p.name, "vector", matrix=len(p.shape) != 1)
                # an additive parameter (z = ... + b): dz/db is the identity
                dz = (
                    None
                    if pstep is not None and is_additive(pstep)
                    else (
                        r"\frac{\partial %s}{\partial %s}" % (quantity(st.name, "vector"), pm),
                        f"d{st.name}/d{p.name}",
                    )
                )
                prod = self._product([f for f in after if f is not None], dz)
                rhs = _coloured("red", prod)
                eqs.append(Eq((own, rhs)))
        return eqs

    def layer_jacobians(self) -> None:
        if not (self.mat and self.has_params):
            return
        layers = self._layers()
        eqs = [eq for group in layers for eq in self._layer_eqs(group)]
        if not eqs:
            return
        s = self.section(["Layer by layer: the Jacobians"])
        s.items.append(Item("para", prose.layer_jacobians_intro()))
        s.items.append(Item("math", eqs=tuple(eqs)))
        chain_eqs: list[Eq] = []
        L = len(layers)
        top = quantity("d" + str(self.net.output), "vector")
        for li, group in enumerate(layers):
            out = group[-1].name
            for st in group:
                for p in st.params:
                    above = [layers[m][0].layer for m in range(L - 1, li, -1)]
                    own = self._param_jacobian_name(out, p.name, len(p.shape) != 1)
                    blue = r"\textcolor{blue}{%s} " % " ".join(r"J^{[%s]}" % a for a in above)
                    tex = r"%s^{\top} %s%s" % (
                        paren(top),
                        blue if above else "",
                        r"\textcolor{red}{%s}" % own.tex,
                    )
                    txt = " @ ".join(
                        [
                            f"(d{self.loss_txt}/d{self.net.output}).T",
                            *(f"J{a}" for a in above),
                            own.txt,
                        ]
                    )
                    chain_eqs.append(Eq((self.dq(p.name, "vector"), M(tex, txt))))
        s.items.append(Item("label", ("Each parameter's gradient as a product chain",)))
        s.items.append(Item("math", eqs=tuple(chain_eqs)))
        s.items.append(Item("para", prose.chain_reading()))

    # -- BP1-BP4 ----------------------------------------------------------------------------
    def _bp_eq(self, st: Step) -> Eq | None:
        tag = bp_tag(self.d, st)
        if st.kind == "input" and st.jacobian == "linear":
            nxt = readers(self.d, st.grad)
            if nxt and bp_tag(self.d, nxt[0]) == "BP2":
                return None  # shown inside BP2
        rhs = st.matrix
        if rhs is None:  # no matrix form: components only
            return None
        if tag == "BP2":
            pb = pass_back(self.d, st)
            if pb is not None and pb.matrix is not None:
                rhs = rhs.xreplace({Vec(pb.grad): Grouped(pb.matrix)})
        lhs = self.grad_lhs(st, "vector", [])[0]
        shown = self.ex(rhs, "vector")
        stats = BatchStatistics.of(st.stage) if st.stage is not None else None
        if stats is not None and st.upstream is not None:  # in the named statistics
            forms = stats.forms(st.component, st.upstream)
            if forms:
                lhs = self.grad_lhs(st, "component", [str(i) for i in st.indices])[0]
                shown = self.ex(forms[-1])
        label = r"\text{%s}\quad " % tag if tag else ""
        return Eq((M(lambda: label + lhs.tex, (tag + "  " if tag else "") + lhs.txt), shown))

    def summary_per_sample(self) -> None:
        if not self.has_params:
            return
        s = self.section(
            ["Summary per sample: the four equations of backpropagation"], anchor="bp-summary"
        )
        s.boxed = True
        s.items.append(Item("para", prose.bp_intro()))
        s.items.append(Item("math", eqs=prose.bp_general(self.mat)))
        # the box holds the four general equations; this network's instances can be long
        # (one line per step) and follow outside it, where a page may break
        s = self.section(["BP1-BP4 for this network, and the recipe"], 2, anchor="bp-network")
        if self.mat:
            eqs = [eq for st in self.d.steps if st.needed for eq in [self._bp_eq(st)] if eq]
            s.items.append(Item("label", ("For this network",)))
            s.items.append(Item("math", eqs=tuple(eqs)))
        s.items.append(Item("label", ("The recipe, layer by layer",)))
        s.items.append(Item("list", entries=prose.recipe()))

    def summary(self) -> None:
        s = self.section(["Summary: the backward pass as computed"])
        steps = [st for st in self.d.steps if st.needed]
        if not self.has_params:  # no parameters: the input gradient is the result
            steps += [st for st in self.d.steps if not st.needed and st.kind == "input"][-1:]
        eqs = []
        if self.mat:
            s.items.append(Item("label", ("Batched (the generated code)",)))
            for st in steps:
                lhs = self.grad_lhs(st, "batched", [])
                stats = BatchStatistics.of(st.stage) if st.stage is not None else None
                forms = stats.forms(st.component, st.upstream or "") if stats is not None else []
                if forms:  # the rows in the statistics' names: the entries of the array
                    rhs = self.ex(Entries(forms[-1], sp.Tuple(*st.indices)), "batched")
                else:
                    rhs = self.ex(self.batched_of(st), "batched")
                eqs.append(Eq((lhs[0], rhs)))  # batch statistics: the rows in their names
        else:
            s.items.append(Item("label", ("Component form",)))
            for st in steps:
                idx = [str(i) for i in st.indices]
                expr = st.component
                stage = st.stage
                plain = (
                    stage is not None
                    and stage.sample is None
                    and not (stage.indices or stage.in_shape)
                )
                if st.kind == "input" and plain:
                    idx, expr = ["k"], swap_ik(st.component)
                eqs.append(Eq((self.grad_lhs(st, "component", idx)[0], self.ex(expr))))
        s.items.append(Item("math", eqs=tuple(eqs)))
