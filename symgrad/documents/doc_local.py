# ruff: noqa: UP031 - %-formatting keeps LaTeX braces readable (no {{ }} doubling)
"""The "why" of a local derivative: the derivative of a stage's body from its definition,
with the rules of differentiation it uses (sum, product, quotient, chain, a sum over an
index, a piecewise function), the derivative of each activation function from its own
definition (once per document), and the common mistakes a step invites (once each),
pointing to ``symgrad check``. The derivative and its reasons come from the derivation
(``Step.local_raw``, ``Step.local``, ``Step.rules``, ``Step.reason``); nothing is
differentiated here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sympy as sp

from symgrad.calculus.reasons import FunctionDerivative, X
from symgrad.calculus.reverse import Step
from symgrad.documents import prose
from symgrad.documents.doc_base import DocBase
from symgrad.documents.latex_printer import paren, quantity
from symgrad.documents.lets import LetSym
from symgrad.documents.model import Eq, Item, M, Part, dedupe

#: The words for each rule of differentiation (``calculus/reasons.py``).
_RULE_TEXT: dict[str, tuple[Part, ...]] = {
    "sum": ("the sum rule (term by term)",),
    "product": ("the product rule",),
    "quotient": ("the quotient rule",),
    "power": ("the power rule",),
    "chain": ("the chain rule (outer derivative times inner derivative)",),
    "function": (
        "the derivative of a function of one entry (",
        M(r"f(u_i)", "f(u[i])"),
        " gives ",
        M(r"f'(u_i)", "f'(u[i])"),
        ") times ",
        M(r"\partial u_i / \partial u_k = [i = k]", "du[i]/du[k] = [i == k]"),
    ),
    "index sum": (
        "a sum over an index differentiated term by term, where ",
        M(r"\partial u_j / \partial u_k = [j = k]", "du[j]/du[k] = [j == k]"),
        " keeps only the term ",
        M("j = k", "j = k"),
    ),
    "piecewise": ("a piecewise function differentiated piece by piece",),
}


#: A rule's name once its explanation has been given (each explanation is shown once).
_RULE_SHORT: dict[str, str] = {
    "chain": "the chain rule",
    "function": "the derivative of a function of one entry",
    "index sum": "a sum over an index differentiated term by term",
}


def rules_sentence(
    rules: Sequence[str], explained: Callable[[str], bool] | None = None
) -> tuple[Part, ...]:
    """The rules a derivative uses; ``explained(rule)`` says whether the rule's long
    explanation was given earlier in the document (then it is only named)."""
    if not rules:
        return ("The derivative of a term linear in the variable is its coefficient.",)
    parts: list[Part] = ["Rules used: "]
    for n, r in enumerate(rules):
        if n:
            parts.append(" and " if n == len(rules) - 1 else ", ")
        short = r in _RULE_SHORT and explained is not None and explained(r)
        parts.extend((_RULE_SHORT[r],) if short else _RULE_TEXT[r])
    parts.append(".")
    return tuple(parts)


class LocalWhy(DocBase):
    """Local derivatives shown with their reasons."""

    def rules_para(self, rules: Sequence[str]) -> tuple[Part, ...]:
        """:func:`rules_sentence`, each rule explained at its first use, named after it."""
        return rules_sentence(rules, lambda r: self.once(("rule", r), None) is not None)

    def local_why(self, st: Step, ii: Sequence[str]) -> tuple[list[Eq], list[Item]]:
        """``d/dz_k sigma(z_i) = sigma(z_i)(1 - sigma(z_i)) [i = k] = a_i (1 - a_i) [i = k]``
        with the rules it uses, the forward values it reads, and each activation function's
        derivative from its definition (once per document)."""
        stage = st.stage
        assert stage is not None and st.local is not None
        name = self.local_name(stage.name, st.wrt, ["i"], ii, "component")
        wrt_sym = st.param.base if st.param is not None else stage.inp
        raw_wrt = wrt_sym[tuple(st.local_indices[1:])] if st.local_indices[1:] else wrt_sym
        raw = st.local_raw
        body = self.ex(stage.body)
        sides = [
            name,
            M(
                lambda: r"\frac{\partial}{\partial %s} %s" % (self.tex(raw_wrt), paren(body.tex)),
                lambda: f"d/d{self.text(raw_wrt)} ({body.txt})",
            ),
        ]
        if raw is not None:
            sides.append(self.ex(raw))
        sides.append(self.ex(st.local))
        last = st.local
        if self.naming is not None and st.kind == "input":
            through = self.naming.without_input(st.local)  # x-hat for a1 - mu
            if through is not None:
                sides.append(self.ex(through))
                last = through
        eqs = [Eq(tuple(dedupe(sides)))]
        items: list[Item] = []
        rules = st.rules
        if rules or st.kind == "input":
            items.append(Item("para", self.rules_para(rules)))
        if raw is not None and raw != st.local and st.kind == "input":
            said = self._forward_values(st, last)
            if said:  # only where the last form reads what the forward pass stored
                items.append(Item("para", said))
            if st.jacobian == "diagonal":
                items.extend(self._mistake_forward_values(st))
        for fn in st.reason.functions:
            if self.once(("function", fn.function), st) is None:
                items.extend(self.function_why(fn))
        return eqs, items

    def _forward_values(self, st: Step, last: sp.Expr) -> tuple[Part, ...]:
        stage = st.stage
        assert stage is not None
        read = self.naming.read(last) if self.naming is not None else []
        if read:  # the stage's named statistics (and its output), stored by the forward pass
            values: list[Part] = []
            if last.has(stage.out):
                values.append(self.q(stage.name, "component", ["i"]))
            for name in read:
                values += [", "] if values else []
                values.append(self.ex(LetSym(name, real=True)))
            return (
                "The last form reads the forward values: ",
                *values,
                ", so the backward pass reuses what the forward pass stored.",
            )
        if not last.has(stage.out):  # simplified, but from the input alone
            return ()
        out_tex = quantity(stage.name, "component", ["i"])
        body = self.ex(stage.body)
        if sp.count_ops(stage.body) <= 6:
            value = M(
                lambda: r"%s = %s" % (out_tex, body.tex), lambda: f"{stage.name}[i] = {body.txt}"
            )
        else:  # too long for a line of prose: the forward pass shows the definition
            value = M(out_tex, f"{stage.name}[i]")
        return (
            "The last form reads the forward values: ",
            value,
            ", so the backward pass reuses what the forward pass stored.",
        )

    def _mistake_forward_values(self, st: Step) -> list[Item]:
        """The classic slip at this step's own derivative: its forward-value form with the
        input ``z`` written where the output ``a`` belongs (``z(1 - z)`` for the sigmoid's
        ``a(1 - a)``, ``1 - z^2`` for tanh's ``1 - a^2``)."""
        stage = st.stage
        if stage is None or st.local is None:
            return []
        right = st.local.xreplace({b: sp.S.One for b in st.local.atoms(sp.KroneckerDelta)})
        wrong = right.replace(
            lambda e: isinstance(e, sp.Indexed) and str(e.base.label) == stage.name,
            lambda e: stage.inp[e.indices],
        )
        if wrong == right:  # the derivative does not read the output: no such slip here
            return []
        if self.once("mistake: forward values", st) is not None:  # said once
            return []
        a, z = self.q(stage.name, "component", ["i"]), self.q(stage.inp.name, "component", ["i"])
        return [
            Item(
                "para",
                prose.mistake_parts(
                    (
                        "evaluating the derivative at the wrong quantity: ",
                        self.ex(wrong),
                        " where ",
                        self.ex(right),
                        " belongs (the last form reads the layer's output ",
                        a,
                        ", not its input ",
                        z,
                        ").",
                    )
                ),
            )
        ]

    def function_why(self, fn: FunctionDerivative) -> list[Item]:
        """An activation function's derivative from its definition (the derivation's
        record of it): in exponentials with the quotient/chain rule (sigmoid, tanh,
        softplus), or piece by piece (relu)."""
        fx = fn.function(X)
        f_tex, f_txt = self.tex(fx), self.text(fx)
        prime, prime_txt = f_tex.replace("(", "'(", 1), f_txt.replace("(", "'(", 1)
        fd = fn.derivative
        if fn.definition is not None and fn.definition_derivative is not None:
            eqs = (
                Eq((M(f_tex, f_txt), self.ex(fn.definition))),
                Eq((M(prime, prime_txt), self.ex(fn.definition_derivative), self.ex(fd))),
            )
            why = self.rules_para(fn.rules)
            return [
                Item(
                    "para",
                    (
                        "Why: from the definition of the activation. ",
                        *why,
                    ),
                ),
                Item("math", eqs=eqs),
            ]
        if fn.piecewise:
            return [
                Item(
                    "para",
                    (
                        "Why: the activation is piecewise (one formula for x > 0, another for "
                        "x < 0); each piece is differentiated on its own, and ",
                        M(r"[x > 0]", "[x > 0]"),
                        " selects the piece (at 0 the derivative is taken from the left):",
                    ),
                ),
                Item("math", eqs=(Eq((M(prime, prime_txt), self.ex(fd))),)),
            ]
        return []
