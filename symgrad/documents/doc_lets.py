# ruff: noqa: UP031 - %-formatting keeps LaTeX braces readable (no {{ }} doubling)
"""The document items of a stage's named sub-expressions (``documents/lets.py``): the
definitions in the forward pass, and the backward pass through the names, last first."""

from __future__ import annotations

import sympy as sp

from symgrad.calculus.reverse import Step
from symgrad.documents.doc_base import DocBase
from symgrad.documents.lets import K, LetAt, LetSym, NamedStage
from symgrad.documents.model import Eq, Item, M, Section
from symgrad.documents.structure import free_names
from symgrad.ir.indices import pull_out
from symgrad.ir.lets import kind_of
from symgrad.ir.network import Stage


def forward_rows(doc: DocBase, stage: Stage) -> list[Eq]:
    """The stage's definitions, each in the earlier names, then the stage in them."""
    named = NamedStage.of(stage)
    out = doc.q(stage.name, "component", free_names(stage))
    if named is None:
        return []
    rows = []
    for name, comp, definition in named.names:
        lhs = LetAt(sp.Symbol(name), stage.index) if isinstance(comp, sp.IndexedBase) else comp
        rows.append(Eq((doc.ex(lhs), doc.ex(named.display(definition)))))
    rows.append(Eq((out, doc.ex(named.display(named.name(stage.body))))))
    return rows


#: What a name found by its structure is (``ir/lets.kind_of``), after "<name> is".
_KINDS = {
    "mean": "the mean of the entries of ",
    "variance": "the variance of the entries of ",
    "mean square": "the mean of the squares of the entries of ",
    "softmax denominator": "the softmax denominator, the sum of the exponentials of the "
    "entries of ",
    "normalised": "the normalised input (its deviation from the mean over the root of the "
    "variance plus the constant), of ",
}


def statistics_parts(doc: DocBase, stages: tuple[Stage, ...]) -> tuple:
    """One sentence that says what each recognised name is (``mu`` the mean of ``a1``'s
    entries, ``r`` the length of ``a1`` ...), or an empty tuple where no stage has one."""
    said: list[tuple] = []
    for st in stages:
        if NamedStage.of(st) is None:
            continue
        for sym, e in st.lets:
            kind = kind_of(e, st.inp, st.in_width)
            if kind is None:
                continue
            shown = LetAt(sym, st.index) if st.index in e.free_symbols else LetSym(sym.name)
            name, vec = doc.ex(shown), doc.q(st.inp.name, "vector")
            if kind == "length":
                norm = M(r"\lVert %s \rVert" % vec.tex, f"||{st.inp.name}||")
                said.append(
                    (
                        name,
                        " is the length ",
                        norm,
                        " of ",
                        vec,
                        " (the constant under the root keeps it away from 0)",
                    )
                )
            else:
                said.append((name, " is " + _KINDS[kind], vec))
    if not said:
        return ()
    parts: list = ["Named intermediates, so that the steps below read as a textbook's: "]
    for pos, one in enumerate(said):
        parts.extend(one)
        parts.append("; " if pos < len(said) - 1 else ".")
    return tuple(parts)


class NamedSteps(DocBase):
    """The backward pass through a stage's named sub-expressions."""

    def named_backward(self, st: Step, s: Section) -> None:
        named = NamedStage.of(st.stage)
        if named is None or st.upstream is None or not self.comp:
            return
        up = sp.IndexedBase(st.upstream, real=True)
        steps = named.backward(up)
        if not steps:
            return
        label: list = ["Through the named sub-expressions ("]
        for pos, (_, comp, _) in enumerate(named.names):
            sym = comp if isinstance(comp, LetSym) else LetSym(str(comp.label)[5:])
            label += [", "] if pos else []
            label.append(self.ex(sym))
        s.items.append(Item("label", (*label, ")")))
        where = self.once("named backward", st)
        if isinstance(where, Step):
            text: tuple = (
                "As for ",
                self.step_name(where),
                ": each name's adjoint, last name first, then the input's.",
            )
        else:
            text = (
                "The same result step by step in the names: going back through the "
                "definitions, last first, each name's adjoint collects every expression "
                "that reads it (the stage's output and the later names), each term its "
                "reader's adjoint times the reader's derivative with the other names held "
                "fixed; the input's adjoint then collects the direct term and one term per "
                "name that reads the input.",
            )
        s.items.append(Item("para", text))
        eqs, dropped = [], []
        for lhs, chain, result, terms in steps:
            left = self.grad_lhs(st, "component", ["k"])[0] if lhs == 0 else self.ex(lhs)
            sides = [left, self.ex(named.display(chain))]
            final = self.ex(named.display(pull_out(named.name(result))))
            if final.key != sides[-1].key:
                sides.append(final)
            eqs.append(Eq(tuple(sides)))
            dropped += named.vanishing(terms)
        s.items.append(Item("math", eqs=tuple(eqs)))
        self._dropped(named, dropped, s)
        self._textbook(st, named, s)

    def _dropped(self, named: NamedStage, dropped: list, s: Section) -> None:
        """Why a term of the chain rule is missing from its result: evaluated, its sum
        cancels once written in the names."""
        if not dropped:
            return
        one = len(dropped) == 1
        s.items.append(
            Item(
                "para",
                (
                    ("One term is" if one else "These terms are")
                    + " 0 and "
                    + ("drops" if one else "drop")
                    + " out: evaluated, "
                    + ("its sum reads" if one else "their sums read")
                    + " the definition of a name, and written in the names "
                    + ("it cancels" if one else "they cancel")
                    + ":",
                ),
            )
        )
        saved, self.naming = self.naming, None  # the evaluated sum as it stands
        try:
            eqs = tuple(
                Eq((self.ex(named.display(t)), self.ex(named.display(c)), M("0", "0")))
                for t, c in dropped
            )
        finally:
            self.naming = saved
        s.items.append(Item("math", eqs=eqs))

    def _textbook(self, st: Step, named: NamedStage, s: Section) -> None:
        """The input's adjoint in a name linear in the input (x-hat), sums as means."""
        if len(st.indices) != 1 or st.stage is None:
            return
        result = st.component.xreplace({st.indices[0]: st.stage.index})
        form = named.textbook(result, K)
        if form is None:
            return
        s.items.append(
            Item(
                "para",
                (
                    "Substituted back and written in the normalised input, each sum over "
                    "the width as a mean (",
                    M(r"\operatorname{mean}_j(u_j) = \frac{1}{n} \sum_j u_j", "mean_j(u[j])"),
                    " over the n entries), this is the textbook form:",
                ),
            )
        )
        lhs = self.grad_lhs(st, "component", ["k"])[0]
        s.items.append(Item("math", eqs=(Eq((lhs, self.ex(named.display(form)))),)))
