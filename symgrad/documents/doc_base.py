# ruff: noqa: UP031 - %-formatting keeps LaTeX braces readable (no {{ }} doubling)
"""The document builder's base: the derivation being written up, the printing helpers
every section uses (expressions, quantity names, adjoints, local derivatives), and the
record of what has been explained already, so that an explanation is given once and later
steps refer back to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sympy as sp

from symgrad.calculus.reverse import Derivation, Forward, Step
from symgrad.documents import batched_display
from symgrad.documents.latex_names import BATCH_LOSS_TEXT, LOSS_TEXT
from symgrad.documents.latex_printer import BATCH_LOSS, LOSS, latex, quantity, split_name
from symgrad.documents.lets import MatrixNames, NamedStage
from symgrad.documents.model import Item, M, Part, Section
from symgrad.documents.renamed_print import RenamedPrinter
from symgrad.ir.network import Stage
from symgrad.ir.plain import TextPrinter


class DocBase:
    """State and printing helpers shared by the parts of a document."""

    def __init__(self, d: Derivation, form: str) -> None:
        self.d = d
        self.net = d.network
        self.form = form
        self.params = tuple(self.net.param_names)
        self.yhat = str(self.net.output)
        self.sections: list[Section] = []
        self.has_params = bool(self.params)
        #: what has been explained, and the title of the step that explained it
        self.explained: dict[object, Step | None] = {}
        #: a document with index arithmetic (conv) counts from 0 everywhere
        self.zero_based = any(st.indices or st.in_shape for st in self.net.stages)
        #: a stage couples the samples (batch norm): no loss of one sample is separable, so
        #: every adjoint is of the batch's mean loss
        self.coupled = any(st.sample is not None for st in self.net.stages)
        self.loss_tex = BATCH_LOSS if self.coupled else LOSS
        self.loss_txt = BATCH_LOSS_TEXT if self.coupled else LOSS_TEXT
        self._text = RenamedPrinter(TextPrinter())  # each formula's shape printed once
        self._memo: dict[tuple, M] = {}
        self._atoms: dict[tuple, str] = {}
        self._rank = {p.name: len(p.shape) for p in self.net.params}
        #: the named sub-expressions of the stage being written up (component forms are
        #: shown in its names), or None
        self.naming: NamedStage | None = None
        #: the same stage's names in its matrix forms, or None
        self.matrix_naming: MatrixNames | None = None
        #: lookups and forms a document asks for more than once, made once (by identity)
        self._found: dict[object, object] = {}

    # -- printing helpers ---------------------------------------------------------------
    @property
    def comp(self) -> bool:
        return self.form in ("component", "both")

    @property
    def mat(self) -> bool:
        return self.form in ("matrix", "both")

    def text(self, e: sp.Basic) -> str:
        return self._text(e)

    def tex(self, e: sp.Basic, notation: str = "component", yhat: bool = False) -> str:
        if e.is_Atom:  # indices and widths recur: printed once
            key = (e, notation, yhat)
            if key not in self._atoms:
                self._atoms[key] = self._latex(e, notation, yhat)
            return self._atoms[key]
        return self._latex(e, notation, yhat)

    def _latex(self, e: sp.Basic, notation: str, yhat: bool) -> str:
        return latex(
            e,
            notation,
            yhat=self.yhat if yhat else None,
            params=self.params,
            zero_based=self.zero_based,
            batch_loss=self.coupled,
        )

    def ex(self, e: sp.Expr, notation: str = "component", yhat: bool = False) -> M:
        """``e`` as math, printed lazily and once per document."""
        if self.naming is not None and notation == "component":
            e = self.naming.display(self.naming.name(e))
        elif self.matrix_naming is not None and notation in ("vector", "batched"):
            e = self.matrix_naming.name(e, notation, through=True)
        e = batched_display.shown(e)
        key = (e, notation, yhat)
        hit = self._memo.get(key)
        if hit is None:
            hit = M(lambda: self.tex(e, notation, yhat), lambda: self.text(e), key=key)
            self._memo[key] = hit
        return hit

    def q(
        self,
        name: str,
        notation: str = "component",
        idx: Sequence[str] = (),
        yhat: bool = False,
        matrix: bool = False,
    ) -> M:
        y = self.yhat if yhat else None
        return M(
            lambda: quantity(name, notation, idx, yhat=y, matrix=matrix, batch_loss=self.coupled),
            name + (f"[{', '.join(idx)}]" if idx else ""),
        )

    def dq(self, name: str, notation: str = "component", idx: Sequence[str] = ()) -> M:
        """dL/d(name); parameters are shared by the samples: never capitalised."""
        batch = notation == "batched"
        if batch and name in self.params:
            notation = "vector"
        matrix = self.is_matrix(name, notation)
        return M(
            lambda: quantity(
                "d" + name, notation, idx, matrix=matrix, batch_loss=batch or self.coupled
            ),
            f"d{BATCH_LOSS_TEXT if batch else self.loss_txt}/d{name}"
            + (f"[{', '.join(idx)}]" if idx else ""),
        )

    def star_definition(self) -> list[Item]:
        """What the correlation ``W star a`` and its transpose are, where first used."""
        if self.once("star", None) is not None:
            return []
        return [
            Item(
                "para",
                (
                    M(r"W \star \mathbf{a}", "corr(W, a)"),
                    " is the cross-correlation: ",
                    M(
                        r"(W \star \mathbf{a})_{o,h,w} = \sum_{c,u,v} W_{o,c,u,v}\, "
                        r"a_{c,\,h+u,\,w+v}",
                        "corr(W, a)[o, h, w] = sum_{c,u,v} W[o, c, u, v]*a[c, h+u, w+v]",
                    ),
                    " (the kernel slid over the input, not flipped; a stride or a dilation "
                    "scales the positions). ",
                    M(r"W \star^{\top} \boldsymbol{\delta}", "corr_T(W, delta)"),
                    " is its transpose: it sends each output position's adjoint back to the "
                    "input positions its window read, weighted by the kernel.",
                ),
            )
        ]

    def is_matrix(self, name: str, notation: str) -> bool:
        if notation == "component":
            return False
        return self._rank.get(name, 1) != 1

    @staticmethod
    def local_name(out: str, inp: str, oi: Sequence[str], ii: Sequence[str], notation: str) -> M:
        """The local derivative ``d out_oi / d inp_ii``."""
        to = out + (f"[{', '.join(oi)}]" if oi else "")
        ti = inp + (f"[{', '.join(ii)}]" if ii else "")
        return M(
            lambda: (
                r"\frac{\partial %s}{\partial %s}"
                % (quantity(out, notation, oi), quantity(inp, notation, ii))
            ),
            f"d({to})/d({ti})",
        )

    def section(self, title: Iterable[Part], level: int = 1, anchor: str = "") -> Section:
        s = Section(tuple(title), level, anchor=anchor)
        self.sections.append(s)
        return s

    def uses(self, cls: type) -> bool:
        if "types" not in self._found:  # every node's type, in one walk for every question
            exprs: list[sp.Basic] = [f.component for f in self.d.forward]
            for st in self.d.steps:
                exprs.append(st.component)
                if st.local is not None:
                    exprs.append(st.local)
            self._found["types"] = {type(n) for e in exprs for n in sp.preorder_traversal(e)}
        types: set[type] = self._found["types"]  # type: ignore[assignment]
        return any(issubclass(t, cls) for t in types)

    # -- lookups made once per document (a deep network asks them once per layer) -------
    def _steps_by(self, what: str) -> dict:
        key = ("steps by", what)
        if key not in self._found:
            index: dict = {}
            for st in self.d.steps:
                if what == "stage" and st.kind == "input" and st.stage is not None:
                    index.setdefault(id(st.stage), []).append(st)
                elif what == "param" and st.kind == "param":
                    index.setdefault(st.wrt, []).append(st)
            self._found[key] = index
        return self._found[key]  # type: ignore[return-value]

    def input_steps(self, stage: Stage) -> list[Step]:
        """The steps through ``stage`` to its input, in order."""
        return self._steps_by("stage").get(id(stage), [])

    def param_steps(self, name: str) -> list[Step]:
        """The steps of the parameter called ``name``, in order."""
        return self._steps_by("param").get(name, [])

    def forward_of(self, stage: Stage | None) -> Forward | None:
        """The forward record of ``stage`` (None for the loss step)."""
        if "forward by stage" not in self._found:
            self._found["forward by stage"] = {id(f.stage): f for f in self.d.forward}
        index: dict[int, Forward] = self._found["forward by stage"]  # type: ignore[assignment]
        return index.get(id(stage))

    def batched_of(self, st: Step) -> sp.Expr:
        """``st.batched`` (the step and the summary both show it), made once."""
        key = ("batched", id(st))
        if key not in self._found:
            self._found[key] = st.batched
        return self._found[key]

    def once(self, what: object, where: Step | None) -> Step | bool | None:
        """None the first time ``what`` is explained (recorded as explained at the step
        ``where``); afterwards that step (True where none was recorded), to refer back to."""
        if what in self.explained:
            return self.explained[what] or True
        self.explained[what] = where
        return None

    # -- step headings ------------------------------------------------------------------
    def grad_lhs(self, st: Step, notation: str, idx: Sequence[str]) -> list[M]:
        """``delta^{[2]}_k = dL/dz^{[2]}_k`` or just ``dL/da^{[1]}_k``."""
        adj = self.dq(st.wrt, notation, idx)  # a parameter's: of the batch loss, not bold
        if st.kind == "param" and notation == "batched":
            notation = "vector"
        matrix = st.kind == "param" and self.is_matrix(st.wrt, notation)
        if st.grad == "d" + st.wrt:  # the adjoint's own name is dL/d(wrt)
            return [adj]
        return [self.q(st.grad, notation, idx, matrix=matrix), adj]

    def step_name(self, st: Step) -> M:
        """How a step is referred to: ``delta^{[2]}`` / ``dL/da^{[1]}``."""
        _, base, _ = split_name(st.grad)
        if base == "delta":
            return M(quantity(st.grad, "component"), st.grad)
        return M(
            r"\partial %s / \partial %s" % (self.loss_tex, quantity(st.wrt, "component")),
            f"d{self.loss_txt}/d{st.wrt}",
        )

    def step_title(self, st: Step, what: str) -> list[Part]:
        _, base, _ = split_name(st.grad)
        lhs = quantity(st.grad, "component")
        adj = r"\partial %s / \partial %s" % (self.loss_tex, quantity(st.wrt, "component"))
        if base == "delta":
            return [M(f"{lhs} = {adj}", f"{st.grad} = d{self.loss_txt}/d{st.wrt}"), f" ({what})"]
        return [M(adj, f"d{self.loss_txt}/d{st.wrt}"), f" ({what})"]

    def step_section(self, st: Step, what: str) -> Section:
        return self.section(self.step_title(st, what), 2, anchor=f"step-{st.grad}")

    def step_ref(self, st: Step) -> str:
        return st.grad
