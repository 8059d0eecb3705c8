# ruff: noqa: UP031 - %-formatting keeps LaTeX braces readable (no {{ }} doubling)
"""The backward pass, step by step: the loss gradient, each step through a stage to its
input, each parameter gradient. A step shows its local derivative (with its reason,
``doc_local``), the chain rule with that derivative substituted, and its matrix forms;
an explanation that recurs (the chain rule, the Hadamard product, the batch's 1/N, a
shared parameter's sum over the samples) is given at its first step only.
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy as sp

from symgrad.calculus.reasons import Contraction
from symgrad.calculus.reverse import Step
from symgrad.documents import prose
from symgrad.documents.doc_lets import NamedSteps
from symgrad.documents.doc_local import LocalWhy
from symgrad.documents.doc_tensor import TensorSteps
from symgrad.documents.latex_printer import paren, quantity
from symgrad.documents.lets import MatrixNames, NamedStage
from symgrad.documents.model import Eq, Item, M, Part, Section, dedupe
from symgrad.documents.renamed_print import print_key
from symgrad.documents.structure import (
    SPARE,
    I,
    is_additive,
    is_permutation,
    is_weight,
    swap_ik,
)

#: Placeholders for a stage's names (a step's pattern, see ``BackwardSteps._pattern``).
_PH = tuple(sp.IndexedBase(f"_ph{n}", real=True) for n in range(12))
_PH_SCALAR = tuple(sp.Symbol(f"_ps{n}", real=True) for n in range(10))
_PH_WIDTH = tuple(sp.Symbol(f"_pw{n}", integer=True, positive=True) for n in range(2))


def merge_repeated(s: Section) -> None:
    """A step that repeats an earlier one with this layer's names, shown as its component
    rows then its matrix rows, becomes one display (set in two columns where it fits)."""
    tail = s.items[-4:]
    kinds = [it.kind for it in tail]
    if kinds != ["label", "math", "label", "math"] or tail[0].parts[:1] != ("As for ",):
        return
    label, comp, _, mat = tail
    s.items[-4:] = [
        Item("label", (*label.parts, " (both forms)")),
        Item("math", eqs=(*comp.eqs, *mat.eqs)),
    ]


class BackwardSteps(LocalWhy, TensorSteps, NamedSteps):
    """The backward-pass sections."""

    def backward(self) -> None:
        s = self.section(["Backward pass"])
        if self.comp:
            s.items.append(Item("para", tuple(prose.chain_rule_parts())))
        for st in self.d.steps:
            self.naming = NamedStage.of(st.stage)
            self.matrix_naming = MatrixNames.of(self.forward_of(st.stage))
            if st.kind == "loss":
                self.loss_step(st)
            elif st.kind == "param":
                self.param_step(st)
            else:
                self.input_step(st)
        self.naming = None
        self.matrix_naming = None

    # -- the loss gradient ----------------------------------------------------------------
    def loss_step(self, st: Step) -> None:
        s = self.step_section(st, "loss gradient")
        if not st.needed:
            s.items.append(
                Item(
                    "para",
                    (
                        "Not materialised in the code: it is substituted into the next "
                        "step (fused).",
                    ),
                )
            )
        if self.comp:
            s.items.append(Item("label", ("Component form",)))
            loss = self.d.loss
            # the loss's own summation index must not be the derivative's free index i
            dummies = {lim[0] for sm in loss.atoms(sp.Sum) for lim in sm.limits}
            if I in dummies:
                loss = loss.xreplace({I: next(j for j in SPARE if j not in dummies)})
            sides = [
                self.dq(st.wrt, "component", ["i"]),
                M(
                    quantity("d" + st.wrt, "component", ["i"], yhat=self.yhat),
                    f"d{self.loss_txt}/dyhat[i]",
                ),
                M(
                    lambda: (
                        r"\frac{\partial}{\partial \hat{y}_{i}} %s"
                        % paren(self.tex(loss, yhat=True))
                    ),
                    lambda: f"d/dyhat[i] ({self.text(loss)})",
                ),
            ]
            raw = st.local_raw
            ren: dict[sp.Basic, sp.Basic] = {}
            if raw is not None:  # the sum's index as in the loss shown beside it
                ours = [lim[0] for sm in loss.atoms(sp.Sum) for lim in sm.limits]
                theirs = [lim[0] for sm in raw.atoms(sp.Sum) for lim in sm.limits]
                if len(ours) == len(theirs) == 1:
                    ren = {theirs[0]: ours[0]}
                    raw = raw.xreplace(ren)
            if raw is not None and raw.has(sp.KroneckerDelta):
                sides.append(self.ex(raw, yhat=True))
            sides.append(self.ex(st.component, yhat=True))
            s.items.append(Item("math", eqs=(Eq(tuple(dedupe(sides))),)))
            s.items.append(Item("para", self.rules_para(st.rules)))
            if raw is not None and raw.has(sp.KroneckerDelta):
                s.items.append(Item("para", self.kronecker_text(st.contraction, "i", ren)))
        if self.mat:
            s.items.append(Item("label", ("Matrix form, per sample and batched",)))
            eqs = (
                Eq((self.dq(st.wrt, "vector"), self.ex(st.matrix, "vector", yhat=True))),
                Eq(
                    (self.dq(st.wrt, "batched"), self.ex(self.batched_of(st), "batched", yhat=True))
                ),
            )
            s.items.append(Item("math", eqs=eqs))
            if self.has_params:
                s.items.append(Item("para", tuple(prose.batch_mean_parts())))

    # -- the chain rule ---------------------------------------------------------------------
    def kronecker_text(
        self,
        c: Contraction | None,
        survivor: str,
        names: dict[sp.Basic, sp.Basic] | None = None,
    ) -> tuple:
        """What the bracket does to the chain rule's sum (the step's record of the
        contraction, its indices renamed by ``names`` as shown): it collapses the sum only
        where every term carries it; otherwise it picks one term and a sum remains."""
        if c is None:
            return ()
        if names:
            c = c.renamed(names)
        a_, b_ = (self.tex(x) for x in c.brackets[0].args)
        dummy = str(c.dummy)
        bracket = M(r"[%s = %s]" % (a_, b_), f"[{a_} == {b_}]")
        if c.collapses:
            if self.once("bracket collapses a sum", None) is not None:  # explained above
                return (
                    "The sum over ",
                    M(dummy, dummy),
                    " collapses to the term ",
                    M(f"{dummy} = {survivor}", f"{dummy} = {survivor}"),
                    " (the bracket ",
                    bracket,
                    ").",
                )
            return (
                "The bracket ",
                bracket,
                " is zero unless ",
                M(f"{a_} = {b_}", f"{a_} = {b_}"),
                ", and every term carries it: the sum over ",
                M(dummy, dummy),
                " collapses to the term ",
                M(f"{dummy} = {survivor}", f"{dummy} = {survivor}"),
                ".",
            )
        if self.once("bracket picks a term", None) is not None:  # explained above
            return (
                "The bracket ",
                bracket,
                " picks the term ",
                M(f"{dummy} = {survivor}", f"{dummy} = {survivor}"),
                "; a sum over ",
                M(dummy, dummy),
                " remains.",
            )
        return (
            "The bracket ",
            bracket,
            " picks the term ",
            M(f"{dummy} = {survivor}", f"{dummy} = {survivor}"),
            " out of the terms that carry it; the other terms keep their sum over ",
            M(dummy, dummy),
            ", because every output of the stage depends on every input.",
        )

    def chain(self, st: Step, oi: str, ii: Sequence[str]) -> tuple[M, M]:
        """``sum_i up_i d out_i / d in_k`` and the same with the local derivative substituted."""
        stage = st.stage
        assert stage is not None and st.upstream is not None and st.local is not None
        up = self.q(st.upstream, "component", [oi])
        loc = self.local_name(stage.name, st.wrt, [oi], ii, "component")
        lo = "0" if self.zero_based else "1"

        def hi() -> str:
            return self.tex(stage.width - 1 if self.zero_based else stage.width)

        chain = M(
            lambda: r"\sum_{%s=%s}^{%s} %s %s" % (oi, lo, hi(), up.tex, loc.tex),
            f"sum_{oi} ({up.txt}*{loc.txt})",
        )
        g = sp.IndexedBase(st.upstream, real=True)
        return chain, self.ex(sp.Sum(g[I] * st.local, (I, 0, stage.width - 1)))

    def _pattern(self, st: Step) -> tuple:
        """A step's local derivative with its stage's names replaced by placeholders: equal
        for the same kind of stage in another layer (a deep network repeats a few)."""
        stage = st.stage
        assert stage is not None and st.local is not None
        ren: dict[sp.Basic, sp.Basic] = {stage.inp: _PH[0], stage.out: _PH[1]}
        for n, p in enumerate(stage.params):
            ren[p.base] = _PH_SCALAR[n] if isinstance(p.base, sp.Symbol) else _PH[2 + n]
        for n, w in enumerate((stage.width, stage.in_width)):
            if not sp.sympify(w).is_Integer:
                ren[w] = _PH_WIDTH[n]
        # the same structure with the same renamed atoms renames to the same expression:
        # rebuilt once per structure
        structure, atoms, _ = print_key(st.local)
        key = ("pattern", structure, tuple(ren.get(a, a) for a in atoms))
        if key not in self._found:
            self._found[key] = st.local.xreplace(ren)
        return (st.kind, st.jacobian, stage.kind, stage.label, self._found[key])

    def _repeated(self, st: Step, names: list[str], final: sp.Expr, where: Step) -> list[Item]:
        """A step like an earlier one: its local derivative and result, referring back to
        the step where the derivation is shown."""
        stage = st.stage
        assert stage is not None and st.local is not None
        loc = self.local_name(stage.name, st.wrt, ["i"], names, "component")
        lhs = self.grad_lhs(st, "component", names)
        return [
            Item("label", ("As for ", self.step_name(where), ", with this layer's names")),
            Item(
                "math",
                eqs=(
                    Eq((loc, self.ex(st.local))),
                    Eq(tuple(dedupe([*lhs, self.ex(final)]))),
                ),
            ),
        ]

    def _component_chain(self, st: Step, names: list[str], final: sp.Expr) -> list[Item]:
        where = self.once(("step", self._pattern(st)), st)
        if isinstance(where, Step):
            return self._repeated(st, names, final, where)
        items: list[Item] = [Item("label", ("Local derivative",))]
        leqs, why = self.local_why(st, names)
        items.append(Item("math", eqs=tuple(leqs)))
        items.extend(why)
        items.append(Item("label", ("Chain rule, component form",)))
        chain, subst = self.chain(st, "i", names)
        lhs = self.grad_lhs(st, "component", names)
        items.append(Item("math", eqs=(Eq(tuple(dedupe([*lhs, chain, subst, self.ex(final)]))),)))
        if st.contraction is not None:
            items.append(Item("para", self.kronecker_text(st.contraction, names[0])))
        return items

    # -- through a stage to its input -------------------------------------------------------
    def _input_kind(self, st: Step) -> str:
        stage = st.stage
        assert stage is not None
        if is_permutation(st):
            return f"through {stage.label}: a permutation, entries moved back"
        return {
            "diagonal": f"through {stage.label}: diagonal Jacobian",
            "full": f"through {stage.label}: full Jacobian",
            "linear": f"through {stage.label}: linear, the Jacobian is a weight matrix",
        }.get(st.jacobian, f"through {stage.label}")

    def input_step(self, st: Step) -> None:
        stage = st.stage
        assert stage is not None
        s = self.step_section(st, self._input_kind(st))
        if not st.needed:
            text = (
                "Not needed to train the parameters, so the generated code does not compute "
                "it; shown for completeness."
                if self.has_params
                else "The network has no parameters: this input gradient is the result."
            )
            s.items.append(Item("para", (text,)))
        if stage.indices or stage.in_shape:
            self.tensor_step(st, s)
            return
        if stage.sample is not None:
            self.sample_step(st, s)
            return
        if self.comp:
            final = swap_ik(st.unfused if st.fused and st.unfused is not None else st.component)
            s.items.extend(self._component_chain(st, ["k"], final))
            if st.fused and st.unfused is not None:
                s.items.extend(self.fused_lines(st, self.grad_lhs(st, "component", ["k"])[0]))
            self.named_backward(st, s)
        if self.mat:
            self._input_matrix(st, s)

    def _input_matrix(self, st: Step, s: Section) -> None:
        stage = st.stage
        assert stage is not None
        s.items.append(Item("label", ("Matrix form, per sample, then batched",)))
        eqs = []
        J = self.local_name(stage.name, st.wrt, [], [], "vector")
        jm = st.local_matrix
        up = self.q(st.upstream or "", "vector")
        sides: list[M] = [
            *self.grad_lhs(st, "vector", []),
            M(lambda: r"\left(%s\right)^{\top} %s" % (J.tex, up.tex), f"({J.txt}).T @ {up.txt}"),
        ]
        diagonal = st.jacobian == "diagonal" and jm is not None
        if jm is not None:
            jmm = self.ex(jm, "vector")
            eqs.append(Eq((J, jmm)))
        if diagonal and jm is not None:
            jtp = (lambda: paren(jmm.tex)) if jm.is_Add else (lambda: jmm.tex)
            jtx = (lambda: f"({jmm.txt})") if jm.is_Add else (lambda: jmm.txt)
            sides.append(
                M(lambda: r"%s^{\top} %s" % (jtp(), up.tex), lambda: f"{jtx()}.T @ {up.txt}")
            )
            sides.append(M(lambda: r"%s %s" % (jtp(), up.tex), lambda: f"{jtx()} @ {up.txt}"))
        if st.fused and st.unfused_matrix is not None:  # (no matrix form: left out)
            sides.append(self.ex(st.unfused_matrix, "vector"))
        sides.append(self.ex(st.matrix, "vector"))
        eqs.append(Eq(tuple(dedupe(sides))))
        blhs = self.grad_lhs(st, "batched", [])
        eqs.append(Eq((*blhs, self.ex(self.batched_of(st), "batched"))))
        s.items.append(Item("math", eqs=tuple(eqs)))
        merge_repeated(s)
        if diagonal:
            where = self.once("hadamard", st)
            if where is None:
                s.items.append(Item("para", tuple(prose.hadamard_parts())))
        if st.jacobian == "linear" and self.once("mistake: transpose", st) is None:
            s.items.append(
                Item(
                    "para",
                    prose.mistake(
                        "forgetting the transpose. The adjoint goes back through the "
                        "transposed weight matrix (the sum runs over the weight's first "
                        "index, the output's); the shapes only fit for square layers "
                        "otherwise, and then the result is silently wrong.",
                        "",
                    ),
                )
            )

    # -- the loss gradient fused into the last stage ----------------------------------------
    def _substituted(self, st: Step, loss_step: Step) -> list[M]:
        """The loss gradient substituted, the cancellation, then the expanded form."""
        assert st.unfused is not None and st.local is not None
        lines: list[M] = []
        g_i = loss_step.component  # in i
        local = st.local
        lines.append(
            M(
                lambda: r"\sum_{i} %s %s" % (paren(self.tex(g_i)), paren(self.tex(local))),
                lambda: f"sum_i (({self.text(g_i)})*({self.text(local)}))",
            )
        )
        lines.extend(self.ex(form) for form in self.d.fusion(st))
        return lines

    def fused_lines(self, st: Step, lhs: M) -> list[Item]:
        """The loss gradient substituted into the step, the factors that cancel, then the
        simplified form: ``-y_k + a_k sum_i y_i``, and ``sum_i y_i = 1`` gives ``a_k - y_k``."""
        loss_step = next((x for x in self.d.steps if x.kind == "loss"), None)
        assert st.unfused is not None
        final = swap_ik(st.component)
        if loss_step is None:
            return []
        parts: list[Part] = [
            "Substituting the loss gradient ",
            M(
                lambda: (
                    r"%s = %s"
                    % (quantity(loss_step.grad, "component", ["i"]), self.tex(loss_step.component))
                ),
                lambda: f"{loss_step.grad}[i] = {self.text(loss_step.component)}",
            ),
            " (fused: the code never forms it)",
        ]
        lines = self._substituted(st, loss_step)
        if any(kind == "sum_y_is_1" for kind, _ in self.net.loss.identities):
            parts += [
                " and using ",
                M(r"\sum_i y_i = 1", "sum_i y_i = 1"),
                " (targets are one-hot or probabilities)",
            ]
        parts.append(":")
        items = [
            Item("para", tuple(parts)),
            Item("math", eqs=(Eq(tuple(dedupe([lhs, *lines, self.ex(final)]))),)),
        ]
        out = self.net.output
        divides = any(
            isinstance(p, sp.Pow) and p.exp.is_negative and p.base.has(out)
            for p in sp.preorder_traversal(loss_step.component)
        )
        if divides and not any(
            isinstance(p, sp.Pow) and p.exp.is_negative and p.base.has(out)
            for p in sp.preorder_traversal(st.component)
        ):
            items.append(
                Item(
                    "para",
                    (
                        "The outputs the loss gradient divides by cancel against the factor "
                        "the local derivative multiplies by. That is why the two steps are "
                        "fused: computed apart, the loss gradient divides by a probability "
                        "that can underflow to 0 (an infinite or wildly inaccurate "
                        "gradient); fused, nothing is divided and the result is bounded.",
                    ),
                )
            )
        return items

    # -- parameter gradients ---------------------------------------------------------------
    def param_step(self, st: Step) -> None:
        stage = st.stage
        assert stage is not None
        what = (
            "weight gradient"
            if is_weight(st)
            else "bias gradient"
            if is_additive(st)
            else "parameter gradient"
        )
        s = self.step_section(st, what)
        names = [str(i) for i in st.indices]
        if stage.indices or stage.in_shape:
            self.tensor_step(st, s)
            return
        if stage.sample is not None:
            self.sample_step(st, s)
            return
        if self.comp:
            s.items.extend(self._component_chain(st, names, st.component))
        if self.mat:
            lhs = self.grad_lhs(st, "vector", [])
            per = self.ex(st.matrix, "vector")
            first = self.once("shared parameter", st) is None
            sides = [*self.grad_lhs(st, "batched", []), self.ex(self.batched_of(st), "batched")]
            if first:  # the mean of the per-sample gradients, shown where it is explained
                sides.append(
                    M(
                        lambda: r"\frac{1}{N} \sum_{s=1}^{N} \left(%s\right)^{(s)}" % per.tex,
                        lambda: f"mean_s (({per.txt})(s))",
                    )
                )
            label = "Matrix form, per sample, then batched (summed over the rows)"
            s.items.append(Item("label", (label,)))
            s.items.append(Item("math", eqs=(Eq((*lhs, per)), Eq(tuple(sides)))))
            merge_repeated(s)
            if first:
                s.items.append(Item("para", tuple(prose.shared_param_parts())))
                s.items.append(
                    Item(
                        "para",
                        prose.mistake(
                            "dividing by the batch size twice (once in the loss gradient, "
                            "again in the parameter gradient): the gradient comes out N times "
                            "too small.",
                            "",
                        ),
                    )
                )
