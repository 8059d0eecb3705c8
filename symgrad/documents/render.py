# ruff: noqa: UP031 - %-formatting keeps LaTeX braces readable (no {{ }} doubling)
"""Printing: derivation -> LaTeX/Markdown (and plain text) lecture notes.

:func:`render` turns a :class:`~symgrad.derivation.Derivation` into a document: the
forward equations, the loss, then every backward step in the derivation's order, each
written as the chain rule with its local Jacobian named, in component form and/or in
matrix form (per sample and batched, samples as rows). Nothing is derived here: every
expression comes from the derivation (``Step.component``, ``Step.local``,
``Step.unfused``, ``Step.matrix``) or from its layout (``layout.batched_step``); this
module only prints them (``latex_printer``) and lays them out. The Jinja2 templates in
``templates/`` only loop over pre-printed strings.

Long equations are broken at top-level ``+``/``-`` (and inside one pair of parentheses
when that is not enough) into ``align*`` (LaTeX) or ``aligned`` (Markdown) lines.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import sympy as sp
from sympy.printing.precedence import PRECEDENCE

from symgrad.calculus.layout import N, batch, batched_step
from symgrad.calculus.matrix_form import Mat, MatVec, Outer, SumAll, TMatVec, Vec, to_matrix
from symgrad.calculus.reverse import DISPLAY, Derivation, Step
from symgrad.documents.latex_breaking import break_expression, split_terms, visual_width
from symgrad.documents.latex_printer import (
    LOSS,
    Diag,
    is_vector_valued,
    latex,
    paren,
    quantity,
    split_name,
)
from symgrad.errors import DerivationError
from symgrad.escape import latex_text
from symgrad.ir.plain import PlainTextPrinter
from symgrad.templating import environment

TARGETS = ("latex", "markdown", "text")
FORMS = ("component", "matrix", "both")

#: Between the lines of a multi-line display (a little air between stacked fractions).
LINE_SEP = " \\\\[0.5ex]\n"

#: Display lines wider than this (in estimated glyph widths) are broken.
LINE_WIDTH = 68.0

_I = sp.Symbol("i", integer=True)
_K = sp.Symbol("k", integer=True)

_ALIASES = {"tex": "latex", "md": "markdown", "txt": "text", "plain": "text"}


# ---------------------------------------------------------------------------------------
# plain text
# ---------------------------------------------------------------------------------------
class TextPrinter(PlainTextPrinter):
    """Plain-text notation for terminals: IR names (``delta2[k]``, ``da1[i]``), ``@`` for
    matrix products, ``.T`` for transposes, ``*`` elementwise."""

    def _op(self, e: sp.Expr) -> str:
        return self.parenthesize(e, PRECEDENCE["Mul"], strict=True)

    def _print_Symbol(self, expr: sp.Symbol) -> str:
        return "N" if expr == N else super()._print_Symbol(expr)

    def _print_Sum(self, expr: sp.Sum) -> str:
        heads = "".join(
            "sum_%s " % self._print(v) if lo == 0 else "sum_{%s=%s..%s} " % (v, lo, hi)
            for v, lo, hi in reversed(expr.limits)
        )
        body = expr.function
        inner = self._print(body)
        return heads + ("(%s)" % inner if body.is_Add else inner)

    def _print_MatVec(self, expr: MatVec) -> str:
        return "%s @ %s" % (self._print(expr.args[0]), self._op(expr.args[1]))

    def _print_TMatVec(self, expr: TMatVec) -> str:
        return "%s.T @ %s" % (self._print(expr.args[0]), self._op(expr.args[1]))

    def _print_Outer(self, expr: Outer) -> str:
        return "outer(%s, %s)" % tuple(self._print(a) for a in expr.args)

    def _print_SumAll(self, expr: SumAll) -> str:
        return "sum(%s)" % self._print(expr.args[0])

    def _print_Diag(self, expr: Diag) -> str:
        return "diag(%s)" % self._print(expr.args[0])

    def _print_BMatMul(self, expr: sp.Expr) -> str:
        V, W, t = expr.args
        return "%s @ %s%s" % (self._op(V), self._print(W), ".T" if t != 0 else "")

    def _print_RowSum(self, expr: sp.Expr) -> str:
        return "rowsum(%s)" % self._print(expr.args[0])

    def _print_ColSum(self, expr: sp.Expr) -> str:
        return "colsum(%s)" % self._print(expr.args[0])

    def _print_BOuter(self, expr: sp.Expr) -> str:
        return "%s.T @ %s" % (self._op(expr.args[0]), self._op(expr.args[1]))


def _text(expr: sp.Basic) -> str:
    return TextPrinter().doprint(expr)


# ---------------------------------------------------------------------------------------
# document model
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class M:
    """One piece of math in its two renderings (LaTeX, plain text)."""

    tex: str
    txt: str


@dataclass(frozen=True)
class Eq:
    """``sides[0] = sides[1] = ...``."""

    sides: tuple[M, ...]


@dataclass(frozen=True)
class T:
    """Prose with a plain-text alternative (``rich`` for LaTeX/Markdown, ``plain`` for text)."""

    rich: str
    plain: str


Part = str | M | T


@dataclass
class Item:
    """A paragraph (``para``), an emphasised lead-in (``label``) or a display (``math``)."""

    kind: str
    parts: tuple[Part, ...] = ()
    eqs: tuple[Eq, ...] = ()


@dataclass
class Section:
    title: tuple[Part, ...]
    level: int
    items: list[Item] = field(default_factory=list)


@dataclass(frozen=True)
class RenderedItem:
    kind: str
    text: str


@dataclass(frozen=True)
class RenderedSection:
    title: str
    level: int
    items: tuple[RenderedItem, ...]


# line breaking lives in latex_breaking.py


def equation_lines(eq: Eq, width: float = LINE_WIDTH) -> list[str]:
    """The ``align``-ready lines of one equation: each has exactly one ``&`` before a
    relation or a continuation sign."""
    sides = [s.tex for s in eq.sides]
    lhs, rhs = sides[0], sides[1:]
    whole = f"{lhs} &= " + " = ".join(rhs)
    if visual_width(whole) <= width:
        return [whole]
    avail = max(width - visual_width(lhs) - 3.0, width * 0.55)
    lines: list[str] = []
    cur = ""  # right of "&= " on the current line
    first = True

    def flush(text: str, cont: bool = False) -> None:
        nonlocal first
        if cont:
            lines.append(r"&\qquad " + text)
        else:
            lines.append((lhs + " " if first else "") + "&= " + text)
            first = False

    for r in rhs:
        if cur and visual_width(cur + " = " + r) <= avail:
            cur += " = " + r
            continue
        if cur:
            flush(cur)
            cur = ""
        pieces = break_expression(r, avail)
        if len(pieces) == 1:
            cur = r
            continue
        flush(pieces[0])
        for p in pieces[1:]:
            flush(p, cont=True)
    if cur:
        flush(cur)
    return lines


# ---------------------------------------------------------------------------------------
# rendering of the model to one target
# ---------------------------------------------------------------------------------------
def _esc_latex(s: str) -> str:
    # Names in the prose are user-controlled: one escaper for every LaTeX output.
    return latex_text(s)


def _esc_md(s: str) -> str:
    # Markdown specials, link brackets and HTML: the prose shows user names literally.
    return re.sub(r"([_*`\\$<>#|\[\]])", r"\\\1", s.replace("&", "&amp;"))


def _inline(parts: Sequence[Part], to: str) -> str:
    out = []
    for p in parts:
        if isinstance(p, M):
            out.append(p.txt if to == "text" else f"${p.tex}$")
        elif isinstance(p, T):
            out.append(_inline([p.plain if to == "text" else p.rich], to))
        else:
            out.append(p if to == "text" else _esc_latex(p) if to == "latex" else _esc_md(p))
    return "".join(out)


def _display(eqs: Sequence[Eq], to: str) -> str:
    if to == "text":
        return "\n".join("    " + " = ".join(s.txt for s in e.sides) for e in eqs)
    lines = [ln for e in eqs for ln in equation_lines(e)]
    if len(lines) == 1:
        body = lines[0].replace("&", "", 1)
        return f"\\[\n{body}\n\\]" if to == "latex" else f"$$\n{body}\n$$"
    inner = LINE_SEP.join(lines)
    if to == "latex":
        return f"\\begin{{align*}}\n{inner}\n\\end{{align*}}"
    return f"$$\n\\begin{{aligned}}\n{inner}\n\\end{{aligned}}\n$$"


def _render_model(sections: Sequence[Section], to: str) -> list[RenderedSection]:
    out = []
    for s in sections:
        items = []
        for it in s.items:
            if it.kind == "math":
                items.append(RenderedItem("math", _display(it.eqs, to)))
            else:
                items.append(RenderedItem(it.kind, _inline(it.parts, to)))
        out.append(RenderedSection(_inline(s.title, to), s.level, tuple(items)))
    return out


# ---------------------------------------------------------------------------------------
# building the document from a derivation
# ---------------------------------------------------------------------------------------
def _swap_ik(e: sp.Expr) -> sp.Expr:
    """Rename the free index i <-> the first dummy k (the chain rule's k is free)."""
    return e.xreplace({_I: _K, _K: _I})


def _jacobian_matrix(local: sp.Expr, net, diagonal: bool = False) -> sp.Expr | None:
    """The matrix ``[d out_i / d in_k]`` of a local derivative in i, k, if it has one."""
    kd = sp.KroneckerDelta(_I, _K)
    terms = []
    try:
        if diagonal:
            rest = local.xreplace({kd: sp.S.One})
            if rest.has(_K):
                return None
            m = to_matrix(rest, (_I,))
            return Diag(m) if is_vector_valued(m) else m * Mat("I")
        for t in sp.Add.make_args(local):
            if isinstance(t, sp.Indexed) and len(t.indices) == 2:
                W = Mat(str(t.base.label))
                if t.indices == (_I, _K):
                    terms.append(W)
                    continue
                return None
            if t.has(kd):
                rest = t.xreplace({kd: sp.S.One})
                if rest.has(_K):
                    return None
                m = to_matrix(rest, (_I,))
                if is_vector_valued(m):
                    terms.append(Diag(m))
                else:
                    terms.append(m * Mat("I"))
                continue
            terms.append(to_matrix(t, (_I, _K)))
    except DerivationError:  # no matrix form: shown in components only
        return None
    return sp.Add(*terms)


def _note_parts(note: str, capital: bool = True) -> tuple[Part, ...]:
    parts: list[Part] = []
    last = 0
    for m in re.finditer(r"sum_k y_k = 1", note):
        parts.append(note[last : m.start()])
        parts.append(M(r"\sum_k y_k = 1", "sum_k y_k = 1"))
        last = m.end()
    parts.append(note[last:])
    text = [p for p in parts if p != ""]
    if capital and text and isinstance(text[0], str):
        text[0] = text[0][:1].upper() + text[0][1:]
    return (*text, ".")


class _Doc:
    """Builds the sections of the document for one derivation."""

    def __init__(self, d: Derivation, form: str) -> None:
        self.d = d
        self.net = d.network
        self.form = form
        self.params = tuple(self.net.param_names)
        self.yhat = str(self.net.output)
        self.sections: list[Section] = []

    # -- printing helpers ---------------------------------------------------------------
    @property
    def comp(self) -> bool:
        return self.form in ("component", "both")

    @property
    def mat(self) -> bool:
        return self.form in ("matrix", "both")

    def ex(self, e: sp.Expr, notation: str = "component", yhat: bool = False) -> M:
        tex = latex(e, notation, yhat=self.yhat if yhat else None, params=self.params)
        return M(tex, _text(e))

    def q(
        self,
        name: str,
        notation: str = "component",
        idx: Sequence[str] = (),
        yhat: bool = False,
        matrix: bool = False,
    ) -> M:
        tex = quantity(name, notation, idx, yhat=self.yhat if yhat else None, matrix=matrix)
        return M(tex, name + (f"[{', '.join(idx)}]" if idx else ""))

    def dq(self, name: str, notation: str = "component", idx: Sequence[str] = ()) -> M:
        """dL/d(name); parameters are shared by the samples: never capitalised."""
        if notation == "batched" and name in self.params:
            notation = "vector"
        adj = quantity("d" + name, notation, idx, matrix=self._is_matrix(name, notation))
        return M(adj, f"dL/d{name}" + (f"[{', '.join(idx)}]" if idx else ""))

    def _is_matrix(self, name: str, notation: str) -> bool:
        if notation == "component":
            return False
        for p in self.net.params:
            if p.name == name:
                return len(p.shape) != 1
        return False

    @staticmethod
    def local_name(out: str, inp: str, oi: Sequence[str], ii: Sequence[str], notation: str) -> M:
        """The local derivative ``d out_oi / d inp_ii``."""
        o = quantity(out, notation, oi)
        i = quantity(inp, notation, ii)
        to = out + (f"[{','.join(oi)}]" if oi else "")
        ti = inp + (f"[{','.join(ii)}]" if ii else "")
        return M(r"\frac{\partial %s}{\partial %s}" % (o, i), f"d({to})/d({ti})")

    def section(self, title: Iterable[Part], level: int = 1) -> Section:
        s = Section(tuple(title), level)
        self.sections.append(s)
        return s

    # -- content ------------------------------------------------------------------------
    def build(self) -> list[Section]:
        self.intro()
        self.forward()
        self.loss()
        self.backward()
        self.summary()
        self.notes()
        return self.sections

    def notes(self) -> None:
        """The derivation's notes not already shown at the step that used them."""
        fused = any(st.fused for st in self.d.steps)
        rest = [n for n in self.d.notes if not (fused and "y_k" in n)]
        if rest:
            s = self.section(["Notes"])
            for n in rest:
                s.items.append(Item("para", _note_parts(n)))

    def intro(self) -> None:
        net = self.net
        s = self.section(["Network and notation"])
        sizes = sorted(net.sizes.items(), key=lambda kv: str(kv[0]))
        size_parts: list[Part] = []
        for n, (sym, val) in enumerate(sizes):
            if n:
                size_parts.append(", ")
            size_parts.append(M(f"{latex(sym)} = {val}", f"{sym} = {val}"))
        layers = []
        for st in net.stages:
            layers.append(f"{st.name}: {st.label} ({st.kind})")
        s.items.append(
            Item(
                "para",
                (
                    f"Network {net.name}: input ",
                    M(
                        r"\mathbf{x} \in \mathbb{R}^{%s}" % latex(net.input_width),
                        f"x in R^{net.input_width}",
                    ),
                    f", {net.n_layers} layer(s), loss {net.loss.name}. Stages: "
                    + "; ".join(layers)
                    + ".",
                    *((" Sizes: ", *size_parts, ".") if size_parts else ()),
                ),
            )
        )
        pparts: list[Part] = ["Parameters: "]
        for n, p in enumerate(net.params):
            if n:
                pparts.append(", ")
            shape = r" \times ".join(latex(w) for w in p.shape) or "1"
            kern = quantity(p.name, "vector", matrix=len(p.shape) != 1)
            pparts.append(M(r"%s \in \mathbb{R}^{%s}" % (kern, shape), f"{p.name}: {p.shape}"))
        pparts.append(".")
        if net.params:
            s.items.append(Item("para", tuple(pparts)))
        L = len(net.stages)
        last = net.stages[L - 1].out if L else net.input
        conv: list[Part] = [
            "Layer ",
            M("l", "l"),
            " computes ",
            M(r"z^{[l]}", "z<l>"),
            " (pre-activation) and ",
            M(r"a^{[l]}", "a<l>"),
            " (activation); the network output is ",
            M(r"\hat{y} = %s" % quantity(str(last)), f"yhat = {last}"),
            ", the target ",
            M("y", "y"),
            ". Adjoints are ",
            M(r"\delta^{[l]} = \partial %s / \partial z^{[l]}" % LOSS, "delta<l> = dL/dz<l>"),
            " and ",
            M(r"\partial %s / \partial a^{[l]}" % LOSS, "da<l> = dL/da<l>"),
            "; ",
            M(r"[z > 0]", "[z > 0]"),
            " is an Iverson bracket (1 if true, else 0).",
        ]
        if self.comp:
            conv += [
                " In component form ",
                M(r"\delta_{ik}", "[i==k]"),
                " is the Kronecker delta and indices run from 1 to the layer width ",
                M("n_l", "n_l"),
                ".",
            ]
        s.items.append(Item("para", tuple(conv)))
        if self.mat:
            s.items.append(
                Item(
                    "para",
                    (
                        T(
                            "Matrix form, per sample: column vectors in bold, ",
                            "Matrix form, per sample: vectors, ",
                        ),
                        M(r"\odot", "*"),
                        " is the elementwise (Hadamard) product; functions, quotients and ",
                        M(r"^{\odot 2}", "**2"),
                        " act elementwise. The Jacobian ",
                        M(r"\partial \mathbf{a} / \partial \mathbf{z}", "da/dz"),
                        " has entries ",
                        M(r"\partial a_i / \partial z_k", "da_i/dz_k"),
                        ", so ",
                        M(
                            r"\partial %s / \partial \mathbf{z} = (\partial \mathbf{a} / "
                            r"\partial \mathbf{z})^{\top}\, \partial %s / \partial \mathbf{a}"
                            % (LOSS, LOSS),
                            "dL/dz = (da/dz)^T dL/da",
                        ),
                        ". Batched form: a batch of ",
                        M("n", "N"),
                        " samples in the rows of ",
                        M(
                            r"X \in \mathbb{R}^{n \times %s}" % latex(net.input_width),
                            f"X (N x {net.input_width})",
                        ),
                        " (likewise ",
                        M(r"Z^{[l]}, A^{[l]}, Y", "Z, A, Y"),
                        "), ",
                        M(r"\mathbf{1}", "1"),
                        " is a vector of ones (a column such as ",
                        M(r"V\mathbf{1}", "rowsum(V)"),
                        " is broadcast across columns), and ",
                        M(LOSS, "L"),
                        " is the mean loss over the batch.",
                    ),
                )
            )

    def forward(self) -> None:
        s = self.section(["Forward pass"])
        if self.comp:
            s.items.append(Item("label", ("Component form",)))
            eqs = [
                Eq((self.q(f.stage.name, "component", ["i"]), self.ex(f.component)))
                for f in self.d.forward
            ]
            s.items.append(Item("math", eqs=tuple(eqs)))
        if self.mat:
            s.items.append(Item("label", ("Matrix form, per sample",)))
            eqs = [
                Eq((self.q(f.stage.name, "vector"), self.ex(f.matrix, "vector")))
                for f in self.d.forward
            ]
            s.items.append(Item("math", eqs=tuple(eqs)))
            s.items.append(Item("label", ("Batched, samples as rows",)))
            beqs = []
            for f in self.d.forward:
                try:
                    b = batch(f.matrix)
                except ValueError:
                    continue
                beqs.append(Eq((self.q(f.stage.name, "batched"), self.ex(b, "batched"))))
            s.items.append(Item("math", eqs=tuple(beqs)))

    def _loss_matrix(self) -> sp.Expr | None:
        try:
            return to_matrix(self.d.loss, ())
        except DerivationError:  # a loss without matrix form: components only
            return None

    def loss(self) -> None:
        s = self.section(["Loss (", self.net.loss.name, ")"])
        Lm = M(LOSS, "L")
        if self.comp:
            s.items.append(Item("label", ("Per sample, component form",)))
            s.items.append(Item("math", eqs=(Eq((Lm, self.ex(self.d.loss, yhat=True))),)))
        m = self._loss_matrix()
        if self.mat and m is not None:
            s.items.append(Item("label", ("Per sample, matrix form",)))
            s.items.append(Item("math", eqs=(Eq((Lm, self.ex(m, "vector", yhat=True))),)))
            s.items.append(Item("label", ("Batch mean",)))
            try:
                coef = sp.Mul(*[f for f in sp.Mul.make_args(m) if not f.atoms(Vec)])
                rest = sp.Mul(*[f for f in sp.Mul.make_args(m) if f.atoms(Vec)])
                from symgrad.calculus.layout import ColSum

                bexpr = coef * ColSum(batch(rest)) / N
                bm = self.ex(bexpr, "batched", yhat=True)
            except (DerivationError, ValueError):
                bm = None
            sides = [
                Lm,
                M(r"\frac{1}{n} \sum_{s=1}^{n} %s^{(s)}" % LOSS, "mean_s L(s)"),
            ]
            if bm is not None:
                sides.append(bm)
            s.items.append(Item("math", eqs=(Eq(tuple(sides)),)))

    def backward(self) -> None:
        self.section(["Backward pass"])
        for st in self.d.steps:
            if st.kind == "loss":
                self.loss_step(st)
            elif st.kind == "param":
                self.param_step(st)
            else:
                self.input_step(st)

    # -- backward steps -----------------------------------------------------------------
    def _grad_lhs(self, st: Step, notation: str, idx: Sequence[str]) -> list[M]:
        """``delta^{[2]}_k = dL/dz^{[2]}_k`` or just ``dL/da^{[1]}_k``."""
        if st.kind == "param" and notation == "batched":
            notation = "vector"
        matrix = st.kind == "param" and self._is_matrix(st.wrt, notation)
        own = self.q(st.grad, notation, idx, matrix=matrix)
        adj = self.dq(st.wrt, notation, idx)
        if own.tex == adj.tex:
            return [adj]
        return [own, adj]

    def _title(self, st: Step, what: str) -> list[Part]:
        _, base, _ = split_name(st.grad)
        lhs = quantity(st.grad, "component")
        adj = r"\partial %s / \partial %s" % (LOSS, quantity(st.wrt, "component"))
        if base == "delta":
            return [M(f"{lhs} = {adj}", f"{st.grad} = dL/d{st.wrt}"), f" ({what})"]
        return [M(adj, f"dL/d{st.wrt}"), f" ({what})"]

    def loss_step(self, st: Step) -> None:
        s = self.section(self._title(st, "loss gradient"), 2)
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
            sides = (
                self.dq(st.wrt, "component", ["i"]),
                M(quantity("d" + st.wrt, "component", ["i"], yhat=self.yhat), "dL/dyhat[i]"),
                self.ex(st.component, yhat=True),
            )
            s.items.append(Item("math", eqs=(Eq(sides),)))
        if self.mat:
            s.items.append(Item("label", ("Matrix form, per sample and batched",)))
            eqs = (
                Eq((self.dq(st.wrt, "vector"), self.ex(st.matrix, "vector", yhat=True))),
                Eq((self.dq(st.wrt, "batched"), self.ex(batched_step(st), "batched", yhat=True))),
            )
            s.items.append(Item("math", eqs=eqs))

    def _chain(self, st: Step, oi: str, ii: Sequence[str]) -> tuple[M, M]:
        """``sum_i up_i d out_i / d in_k`` and the same with the local derivative substituted."""
        stage = st.stage
        assert stage is not None and st.upstream is not None and st.local is not None
        w = latex(stage.width)
        up = self.q(st.upstream, "component", [oi])
        wrt_in = st.wrt
        loc = self.local_name(stage.name, wrt_in, [oi], ii, "component")
        chain = M(
            r"\sum_{%s=1}^{%s} %s %s" % (oi, w, up.tex, loc.tex),
            f"sum_{oi} {up.txt} * {loc.txt}",
        )
        g = sp.IndexedBase(st.upstream)
        subst = self.ex(sp.Sum(g[_I] * st.local, (_I, 0, stage.width - 1)))
        return chain, subst

    def input_step(self, st: Step) -> None:
        stage = st.stage
        assert stage is not None
        kind = {
            "diagonal": f"through {stage.label}: diagonal Jacobian",
            "full": f"through {stage.label}: full Jacobian",
            "linear": f"through {stage.label}: linear, the Jacobian is a weight matrix",
        }.get(st.jacobian, f"through {stage.label}")
        s = self.section(self._title(st, kind), 2)
        if not st.needed:
            s.items.append(
                Item(
                    "para",
                    (
                        "Not needed to train the parameters, so the generated code does "
                        "not compute it; shown for completeness.",
                    ),
                )
            )
        out, inp = stage.name, st.wrt
        if self.comp:
            s.items.append(Item("label", ("Chain rule, component form",)))
            chain, subst = self._chain(st, "i", ["k"])
            lhs = self._grad_lhs(st, "component", ["k"])
            local = Eq((self.local_name(out, inp, ["i"], ["k"], "component"), self.ex(st.local)))
            if st.fused and st.unfused is not None:
                eq = Eq((*lhs, chain, subst, self.ex(_swap_ik(st.unfused))))
                s.items.append(Item("math", eqs=(local, eq)))
                s.items.append(Item("para", self._fused_text(st)))
                fused = Eq((lhs[0], self.ex(_swap_ik(st.component))))
                s.items.append(Item("math", eqs=(fused,)))
            else:
                eq = Eq(tuple(_dedupe([*lhs, chain, subst, self.ex(_swap_ik(st.component))])))
                s.items.append(Item("math", eqs=(local, eq)))
        if self.mat:
            s.items.append(Item("label", ("Matrix form, per sample",)))
            eqs = []
            J = self.local_name(out, inp, [], [], "vector")
            jm = None
            if st.local is not None:
                jm = _jacobian_matrix(st.local, self.net, st.jacobian == "diagonal")
            up = self.q(st.upstream or "", "vector")
            lhs = self._grad_lhs(st, "vector", [])
            sides: list[M] = list(lhs)
            if st.jacobian == "diagonal" and jm is not None:
                eqs.append(Eq((J, self.ex(jm, "vector"))))
                jt = self.ex(jm, "vector").tex
                sides.append(
                    M(
                        r"%s %s" % (paren(jt) if jm.is_Add else jt, up.tex),
                        f"{_text(jm)} @ {up.txt}",
                    )
                )
            else:
                if jm is not None:
                    eqs.append(Eq((J, self.ex(jm, "vector"))))
                sides.append(
                    M(r"\left(%s\right)^{\top} %s" % (J.tex, up.tex), f"({J.txt}).T @ {up.txt}")
                )
            if st.fused and st.unfused is not None:
                with contextlib.suppress(DerivationError):  # no matrix form: skip that side
                    sides.append(self.ex(to_matrix(st.unfused, (_I,)), "vector"))
            sides.append(self.ex(st.matrix, "vector"))
            eqs.append(Eq(tuple(_dedupe(sides))))
            s.items.append(Item("math", eqs=tuple(eqs)))
            s.items.append(Item("label", ("Batched",)))
            blhs = self._grad_lhs(st, "batched", [])
            s.items.append(Item("math", eqs=(Eq((*blhs, self.ex(batched_step(st), "batched"))),)))

    def _fused_text(self, st: Step) -> tuple[Part, ...]:
        loss_step = next((x for x in self.d.steps if x.kind == "loss"), None)
        parts: list[Part] = ["Substituting the loss gradient "]
        if loss_step is not None:
            parts.append(
                M(
                    r"%s = %s"
                    % (quantity(loss_step.grad, "component", ["i"]), latex(loss_step.component)),
                    f"{loss_step.grad}[i] = {_text(loss_step.component)}",
                )
            )
        parts.append(" (fused: the code never forms it) and simplifying")
        notes = [n for n in self.d.notes if "y_k" in n]
        for n in notes:
            note = n[len("used ") :] if n.startswith("used ") else n
            parts.append(", using ")
            parts.extend(_note_parts(note, capital=False)[:-1])
            parts.append(",")
        parts.append(" gives:")
        return tuple(parts)

    def param_step(self, st: Step) -> None:
        stage = st.stage
        assert stage is not None
        p = st.param
        what = "weight gradient" if p is not None and len(p.shape) == 2 else "parameter gradient"
        s = self.section(self._title(st, what), 2)
        names = [str(i) for i in st.indices]
        if self.comp:
            s.items.append(Item("label", ("Chain rule, component form",)))
            chain, subst = self._chain(st, "i", names)
            lhs = self._grad_lhs(st, "component", names)
            local = Eq(
                (self.local_name(stage.name, st.wrt, ["i"], names, "component"), self.ex(st.local))
            )
            eq = Eq(tuple(_dedupe([*lhs, chain, subst, self.ex(st.component)])))
            s.items.append(Item("math", eqs=(local, eq)))
        if self.mat:
            s.items.append(Item("label", ("Matrix form, per sample",)))
            lhs = self._grad_lhs(st, "vector", [])
            s.items.append(Item("math", eqs=(Eq((*lhs, self.ex(st.matrix, "vector"))),)))
            s.items.append(Item("label", ("Batched: summed over the samples (rows)",)))
            blhs = self._grad_lhs(st, "batched", [])
            s.items.append(Item("math", eqs=(Eq((*blhs, self.ex(batched_step(st), "batched"))),)))

    def summary(self) -> None:
        s = self.section(["Summary: the backward pass as computed"])
        steps = [st for st in self.d.steps if st.needed]
        if self.mat:
            s.items.append(Item("label", ("Batched (the generated code)",)))
            eqs = []
            for st in steps:
                lhs = self._grad_lhs(st, "batched", [])
                eqs.append(Eq((lhs[0], self.ex(batched_step(st), "batched", yhat=False))))
            s.items.append(Item("math", eqs=tuple(eqs)))
        else:
            s.items.append(Item("label", ("Component form",)))
            eqs = []
            for st in steps:
                idx = [str(i) for i in st.indices]
                lhs = self._grad_lhs(st, "component", idx)
                eqs.append(Eq((lhs[0], self.ex(st.component))))
            s.items.append(Item("math", eqs=tuple(eqs)))


def _dedupe(sides: list[M]) -> list[M]:
    out: list[M] = []
    for s in sides:
        if not out or out[-1].tex != s.tex:
            out.append(s)
    return out


# ---------------------------------------------------------------------------------------
# templates and the public API
# ---------------------------------------------------------------------------------------
_TEMPLATES = {
    "latex": "derivation.tex.j2",
    "markdown": "derivation.md.j2",
    "text": "doc_derivation.txt.j2",
}


def _title(d: Derivation, to: str) -> str:
    name = d.network.name
    if to == "latex":
        return "Backpropagation for " + r"\texttt{%s}" % _esc_latex(name)
    if to == "markdown":
        return f"Backpropagation for `{name}`"
    return f"Backpropagation for {name}"


def render(d: Derivation, to: str = "markdown", form: str = "both", standalone: bool = True) -> str:
    """Render a derivation as lecture notes.

    Args:
        d: the derivation (``symgrad.derive(net)``).
        to: ``"latex"``, ``"markdown"`` or ``"text"``.
        form: ``"component"`` (index notation), ``"matrix"`` (per sample and batched)
            or ``"both"``.
        standalone: a complete document (LaTeX: ``\\documentclass`` ... ``\\end{document}``;
            Markdown: with its title) rather than a fragment to paste.

    Returns:
        The document text.

    Raises:
        ValueError: for an unknown ``to`` or ``form``.
    """
    to = _ALIASES.get(to, to)
    if to not in TARGETS:
        raise ValueError(f"unknown target {to!r} (known: {', '.join(TARGETS)})")
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r} (known: {', '.join(FORMS)})")
    sections = _render_model(_Doc(d, form).build(), to)
    template = environment().get_template(_TEMPLATES[to])
    return template.render(
        title=_title(d, to),
        network=d.network.name,
        sections=sections,
        standalone=standalone,
        form=form,
    )


def render_fragment_for_jupyter(d: Derivation) -> str:
    """A ``_repr_latex_``-compatible string: the batched forward and backward equations in
    one ``$$\\begin{aligned} ... \\end{aligned}$$`` block (MathJax/KaTeX)."""
    doc = _Doc(d, "matrix")
    eqs: list[Eq] = []
    for f in d.forward:
        try:
            b = batch(f.matrix)
        except ValueError:
            continue
        eqs.append(Eq((doc.q(f.stage.name, "batched"), doc.ex(b, "batched"))))
    for st in d.steps:
        if st.needed:
            lhs = doc._grad_lhs(st, "batched", [])
            eqs.append(Eq((lhs[0], doc.ex(batched_step(st), "batched"))))
    lines = [ln for e in eqs for ln in equation_lines(e)]
    return "$$\n\\begin{aligned}\n" + LINE_SEP.join(lines) + "\n\\end{aligned}\n$$"


__all__ = [
    "FORMS",
    "LINE_WIDTH",
    "TARGETS",
    "TextPrinter",
    "break_expression",
    "environment",
    "equation_lines",
    "render",
    "render_fragment_for_jupyter",
    "split_terms",
    "visual_width",
]


DISPLAY["markdown"] = lambda d: render(d, "markdown")
DISPLAY["latex"] = render_fragment_for_jupyter
