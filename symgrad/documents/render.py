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
import html
import re
import shutil
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import sympy as sp
from sympy.printing.precedence import PRECEDENCE

from symgrad.calculus.contraction import contract
from symgrad.calculus.forward_values import pull_out
from symgrad.calculus.layout import BMatMul, BOuter, N, batch, batched_step
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
from symgrad.ir.indices import idx as idx_
from symgrad.ir.network import Stage
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
#: Indices free for renaming a summation index out of the way (``j`` first).
_SPARE = tuple(sp.Symbol(c, integer=True) for c in "jmtuvw")

_ALIASES = {"tex": "latex", "md": "markdown", "txt": "text", "plain": "text"}


# ---------------------------------------------------------------------------------------
# plain text
# ---------------------------------------------------------------------------------------
class TextPrinter(PlainTextPrinter):
    """Plain-text notation for terminals: IR names (``delta2[k]``, ``da1[i]``), ``@`` for
    matrix products, ``.T`` for transposes, ``*`` elementwise."""

    def _op(self, e: sp.Expr) -> str:
        """An operand of ``@``: parenthesised unless a power, a call or an atom (in Python
        ``*`` and ``@`` share a level, so ``a*b @ c`` would read ``(a*b) @ c``)."""
        return self.parenthesize(e, PRECEDENCE["Mul"])

    def _transposed(self, e: sp.Expr) -> str:
        """``e.T``: ``e`` parenthesised unless a call or an atom (``.T`` binds tightest)."""
        return self.parenthesize(e, PRECEDENCE["Pow"]) + ".T"

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

    def _print_step(self, expr: sp.Expr) -> str:
        return "[%s > 0]" % self._print(expr.args[0])

    def _print_Mul(self, expr: sp.Mul) -> str:
        """Upstream adjoints first (``da1 * a1 * (1 - a1)``): the chain rule's reading order."""
        saved, self._in_mul = getattr(self, "_in_mul", False), True
        try:
            return self._mul_text(expr)
        finally:
            self._in_mul = saved

    def _mul_text(self, expr: sp.Mul) -> str:
        if expr.could_extract_minus_sign() or any(f.is_Rational for f in expr.args):
            return super()._print_Mul(expr)
        factors = list(sp.Mul.make_args(expr))
        if any(isinstance(f, sp.Pow) and f.exp.is_negative for f in factors):
            return super()._print_Mul(expr)
        first = [f for f in factors if _text_adjoint(f)]
        last = [f for f in factors if isinstance(f, sp.KroneckerDelta)]  # brackets last
        if not first and not last:
            return super()._print_Mul(expr)
        rest = [f for f in factors if not _text_adjoint(f) and f not in last]
        return "*".join(
            self.parenthesize(f, PRECEDENCE["Mul"], strict=False) for f in first + rest + last
        )

    def parenthesize(self, item: sp.Basic, level: int, strict: bool = False) -> str:
        # a batched product prints with ``@``, which Python reads left to right with ``*``
        # and ``/``: as a factor it is parenthesised (``a1*(a1 @ A2.T)``)
        if isinstance(item, BMatMul | BOuter | MatVec | TMatVec) and getattr(
            self, "_in_mul", False
        ):
            return "(%s)" % self._print(item)
        return super().parenthesize(item, level, strict)

    def _print_Add(self, expr: sp.Add, order: str | None = None) -> str:
        saved, self._in_mul = getattr(self, "_in_mul", False), False
        try:
            return super()._print_Add(expr, order)
        finally:
            self._in_mul = saved

    def _print_BMatMul(self, expr: sp.Expr) -> str:
        V, W, t = expr.args
        return "%s @ %s%s" % (self._op(V), self._print(W), ".T" if t != 0 else "")

    def _print_RowSum(self, expr: sp.Expr) -> str:
        return "rowsum(%s)" % self._print(expr.args[0])

    def _print_ColSum(self, expr: sp.Expr) -> str:
        return "colsum(%s)" % self._print(expr.args[0])

    def _print_BOuter(self, expr: sp.Expr) -> str:
        return "%s @ %s" % (self._transposed(expr.args[0]), self._op(expr.args[1]))


def _text_adjoint(f: sp.Expr) -> bool:
    names = {str(b.base.label) for b in f.atoms(sp.Indexed)} | {v.name for v in f.atoms(Vec)}
    if isinstance(f, sp.Indexed | Vec):
        names = {str(f.base.label) if isinstance(f, sp.Indexed) else f.name}
    else:
        return False
    return any(split_name(n)[0] or split_name(n)[1] == "delta" for n in names)


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
    entries: tuple[tuple[Part, ...], ...] = ()  # a numbered list (kind "list")


@dataclass
class Section:
    title: tuple[Part, ...]
    level: int
    items: list[Item] = field(default_factory=list)
    anchor: str = ""  # an id for links (the HTML page links code lines to steps)
    boxed: bool = False  # set off in a frame (the per-sample summary)


@dataclass(frozen=True)
class RenderedItem:
    kind: str
    text: str


@dataclass(frozen=True)
class RenderedSection:
    title: str
    level: int
    items: tuple[RenderedItem, ...]
    anchor: str = ""
    boxed: bool = False


# line breaking lives in latex_breaking.py


def equation_lines(eq: Eq, width: float = LINE_WIDTH, left: float | None = None) -> list[str]:
    """The ``align``-ready lines of one equation: each has exactly one ``&`` before a
    relation or a continuation sign.

    ``left`` is the width of the block's left column (the widest left-hand side of the
    ``align`` this equation is one row of: every row's right side starts after it); by
    default this equation's own left-hand side."""
    sides = [s.tex for s in eq.sides]
    lhs, rhs = sides[0], sides[1:]
    left = max(visual_width(lhs), left or 0.0)
    whole = f"{lhs} &= " + " = ".join(rhs)
    if left + visual_width("= " + " = ".join(rhs)) <= width:
        return [whole]
    avail = max(width - left - 3.0, width * 0.55)
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


def _esc(p: str, to: str) -> str:
    if to == "text":
        return p
    if to == "latex":
        return _esc_latex(p)
    if to == "html":
        return html.escape(p, quote=False)
    return _esc_md(p)


def _inline(parts: Sequence[Part], to: str) -> str:
    out = []
    for p in parts:
        if isinstance(p, M):
            if to == "text":
                out.append(p.txt)
            elif to == "html":
                out.append('<span class="math">%s</span>' % html.escape(p.tex, quote=False))
            else:
                out.append(f"${p.tex}$")
        elif isinstance(p, T):
            out.append(_inline([p.plain if to == "text" else p.rich], to))
        else:
            out.append(_esc(p, to))
    return "".join(out)


#: Plain-text output width when no terminal says otherwise (tests, pipes).
TEXT_WIDTH = 100


def text_width() -> int:
    """The terminal's width (``COLUMNS`` or the tty), at least 40 columns."""
    return max(40, shutil.get_terminal_size((TEXT_WIDTH, 24)).columns)


def _wrap(
    text: str, width: int, indent: str = "", hang: str = "    ", protect: bool = False
) -> str:
    """Word-wrap one line with a hanging indent; never breaks inside a word, and prefers
    the top level: spaces inside parentheses and brackets do not break."""
    protected, depth = [], 0
    text = re.sub(r"\b(sum_\w+|sum_\{[^}]*\}) ", "\\1\x00", text)  # a sum keeps its body
    for c in text:
        depth += c in "([{"
        depth -= c in ")]}"
        protected.append("\x00" if protect and c == " " and depth > 0 else c)
    filled = textwrap.fill(
        "".join(protected),
        width=width,
        initial_indent=indent,
        subsequent_indent=indent + hang,
        break_long_words=False,
        break_on_hyphens=False,
    )
    if protect and any(len(ln) > width for ln in filled.splitlines()):
        return _wrap(text, width, indent, hang)  # a parenthesis wider than a line
    return filled.replace("\x00", " ")


def _left_column(lines: Sequence[str]) -> float:
    """The width of an ``align`` block's left column: its widest text before a ``&``."""
    return max((visual_width(ln.partition("&")[0]) for ln in lines), default=0.0)


def _fit_line(line: str, width: float = LINE_WIDTH, left: float | None = None) -> str:
    """A LaTeX line the breaker could not bring under the page width (a long component
    form with no term boundary left to break at), scaled down to fit instead of running
    into the margin. Only what follows the line's ``&=`` / ``&\\qquad`` is scaled.

    ``left`` is the width of the block's left column (by default this line's own left
    side): ``align`` starts every row's right side after the widest left side."""
    for mark in ("&= ", "&\\qquad "):
        head, sep, rest = line.partition(mark)
        if sep:
            break
    else:
        return line
    avail = max(width - max(visual_width(head), left or 0.0) - 3.0, width * 0.55)
    have = visual_width(rest)
    if have <= avail * 0.95:
        return line
    scale = max(0.3, 0.85 * avail / have)
    return f"{head}{sep}\\scalebox{{{scale:.2f}}}{{$\\displaystyle {rest}$}}"


def _display(eqs: Sequence[Eq], to: str, width: int = TEXT_WIDTH) -> str:
    if to == "text":
        return "\n".join(
            _wrap(" = ".join(s.txt for s in e.sides), width, "    ", "        ", protect=True)
            for e in eqs
        )
    left = max((visual_width(e.sides[0].tex) for e in eqs), default=0.0)
    lines = [ln for e in eqs for ln in equation_lines(e, left=left)]
    if to == "latex":
        left = _left_column(lines)
        lines = [_fit_line(ln, left=left) for ln in lines]
    if to == "html":
        body = (
            lines[0].replace("&", "", 1)
            if len(lines) == 1
            else ("\\begin{aligned}\n" + LINE_SEP.join(lines) + "\n\\end{aligned}")
        )
        return '<div class="math display">%s</div>' % html.escape(body, quote=False)
    if len(lines) == 1:
        body = lines[0].replace("&", "", 1)
        return f"\\[\n{body}\n\\]" if to == "latex" else f"$$\n{body}\n$$"
    inner = LINE_SEP.join(lines)
    if to == "latex":
        return f"\\begin{{align*}}\n{inner}\n\\end{{align*}}"
    return f"$$\n\\begin{{aligned}}\n{inner}\n\\end{{aligned}}\n$$"


def _list(entries: Sequence[Sequence[Part]], to: str, width: int = TEXT_WIDTH) -> str:
    texts = [_inline(e, to) for e in entries]
    if to == "text":
        return "\n".join(_wrap(f"{n}. {t}", width, "", "   ") for n, t in enumerate(texts, 1))
    if to == "latex":
        items = "\n".join(r"\item " + t for t in texts)
        return "\\begin{enumerate}\n" + items + "\n\\end{enumerate}"
    if to == "html":
        return "<ol>" + "".join(f"<li>{t}</li>" for t in texts) + "</ol>"
    return "\n".join(f"{n}. {t}" for n, t in enumerate(texts, 1))


def _render_model(
    sections: Sequence[Section], to: str, width: int = TEXT_WIDTH
) -> list[RenderedSection]:
    out = []
    for s in sections:
        items = []
        for it in s.items:
            if it.kind == "math":
                if not it.eqs:  # an empty display does not compile
                    continue
                items.append(RenderedItem("math", _display(it.eqs, to, width)))
            elif it.kind == "list":
                items.append(RenderedItem("para", _list(it.entries, to, width)))
            elif to == "text" and it.kind == "para":
                items.append(RenderedItem("para", _wrap(_inline(it.parts, to), width, "", "")))
            else:
                items.append(RenderedItem(it.kind, _inline(it.parts, to)))
        out.append(RenderedSection(_inline(s.title, to), s.level, tuple(items), s.anchor, s.boxed))
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


def _deltas(e: sp.Basic) -> list[sp.KroneckerDelta]:
    return sorted(e.atoms(sp.KroneckerDelta), key=sp.default_sort_key)


def _sum_over(var: sp.Symbol, e: sp.Expr) -> bool:
    return any(var in s.variables for s in e.atoms(sp.Sum))


def _is_additive(st: Step) -> bool:
    """A parameter that enters its stage additively (``z_i = ... + b_i``): local = [i = p]."""
    return st.local is not None and isinstance(st.local, sp.KroneckerDelta)


def _is_weight(st: Step) -> bool:
    """A matrix parameter entering linearly in the input: ``dz_i/dW_pq = [i = p] in_q``."""
    if st.local is None or st.param is None or len(st.param.shape) != 2:
        return False
    ds = [f for f in sp.Mul.make_args(st.local) if isinstance(f, sp.KroneckerDelta)]
    rest = [f for f in sp.Mul.make_args(st.local) if not isinstance(f, sp.KroneckerDelta)]
    return len(ds) == 1 and len(rest) == 1 and isinstance(rest[0], sp.Indexed)


def _own_functions(body: sp.Expr, arg: sp.Expr) -> list[sp.Function]:
    """symgrad's own activation functions applied to ``arg`` (``sigma(z_i)``)."""
    out = []
    for f in body.atoms(sp.Function):
        if f.args == (arg,) and type(f).__module__.startswith("symgrad."):
            out.append(f)
    return sorted(out, key=sp.default_sort_key)


class _Doc:
    """Builds the sections of the document for one derivation."""

    def __init__(self, d: Derivation, form: str) -> None:
        self.d = d
        self.net = d.network
        self.form = form
        self.params = tuple(self.net.param_names)
        self.yhat = str(self.net.output)
        self.sections: list[Section] = []
        self.has_params = bool(self.net.params)
        self.explained: set[type] = set()  # activation functions whose derivative is shown

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

    def section(self, title: Iterable[Part], level: int = 1, anchor: str = "") -> Section:
        s = Section(tuple(title), level, anchor=anchor)
        self.sections.append(s)
        return s

    def _uses(self, cls: type) -> bool:
        exprs: list[sp.Basic] = [f.component for f in self.d.forward]
        for st in self.d.steps:
            exprs.append(st.component)
            if st.local is not None:
                exprs.append(st.local)
        return any(e.atoms(cls) for e in exprs)

    # -- content ------------------------------------------------------------------------
    def build(self) -> list[Section]:
        self.intro()
        self.forward()
        self.loss()
        self.backward()
        self.summary_per_sample()
        self.layer_jacobians()
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

    def _width_parts(self) -> list[Part]:
        """``n_0 = 3`` (input), then each layer's output width, by layer number."""
        net = self.net
        parts: list[Part] = ["Widths: ", M(r"%s = " % latex(net.input_width), "")]
        sizes = {str(k): v for k, v in net.sizes.items()}

        def val(w: sp.Expr) -> str:
            v = sp.sympify(w).xreplace({k: sp.Integer(n) for k, n in net.sizes.items()})
            return str(v)

        parts = [
            "Widths: ",
            M(
                r"%s = %s" % (latex(net.input_width), val(net.input_width)),
                f"{net.input_width} = {val(net.input_width)}",
            ),
            " (the input)",
        ]
        by_layer: dict[int, Stage] = {}
        for st in net.stages:
            by_layer[st.layer] = st  # the layer's last stage: its output
        for layer, st in sorted(by_layer.items()):
            w = st.width
            parts.append(f"; layer {layer}: ")
            parts.append(M(r"%s = %s" % (latex(w), val(w)), f"{w} = {val(w)}"))
            own = str(w) == f"n_{layer}"
            if not own and str(w) in sizes:
                parts.append(" (keeps the width of its input)")
        parts.append(". ")
        parts += [
            M("n_l", "n_l"),
            " is the width of the output of layer ",
            M("l", "l"),
            "; a layer that keeps its input's width shares its symbol.",
        ]
        return parts

    def intro(self) -> None:
        net = self.net
        s = self.section(["Network and notation"])
        layers = []
        for st in net.stages:
            layers.append(f"{st.name}: {st.label} ({st.kind})")
        s.items.append(
            Item(
                "para",
                (
                    f"Network {net.name}: input ",
                    M(
                        r"\mathbf{x} \in \mathbb{R}^{%s}"
                        % (
                            r" \times ".join(map(str, net.input_shape))
                            if net.input_shape
                            else latex(net.input_width)
                        ),
                        f"x in R^{net.input_width}",
                    ),
                    f", {net.n_layers} layer(s), loss {net.loss.name}. Stages: "
                    + "; ".join(layers)
                    + ".",
                ),
            )
        )
        s.items.append(Item("para", tuple(self._width_parts())))
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
        else:
            s.items.append(
                Item(
                    "para",
                    (
                        "The network has no parameters: it is a function of its input, and "
                        "the gradient of interest is the one with respect to the input, ",
                        M(r"\partial %s / \partial \mathbf{x}" % LOSS, "dL/dx"),
                        ".",
                    ),
                )
            )
        last = net.output
        conv: list[Part] = [
            "Layer ",
            M("l", "l"),
            " computes ",
            M(r"z^{[l]}", "z<l>"),
            " (pre-activation) and ",
            M(r"a^{[l]}", "a<l>"),
            " (activation); the network output is ",
            M(r"\hat{y} = %s" % quantity(str(last)), f"yhat = {last}"),
            " (written ",
            M(r"\hat{y}", "yhat"),
            " in the loss, ",
            M(quantity(str(last)), str(last)),
            " in the backward pass), the target ",
            M("y", "y"),
            ". The adjoint of a quantity ",
            M("u", "u"),
            " is ",
            M(r"\partial %s / \partial u" % LOSS, "dL/du"),
            ", how the loss changes with ",
            M("u", "u"),
            "; the adjoint of a pre-activation is called the error, ",
            M(r"\delta^{[l]} = \partial %s / \partial z^{[l]}" % LOSS, "delta<l> = dL/dz<l>"),
            ". The backward pass computes adjoints from the loss back to the input.",
        ]
        if self._uses(sp.KroneckerDelta) and self.comp:
            conv += [
                " In component form ",
                M(r"[i = k]", "[i == k]"),
                " is 1 if ",
                M("i = k", "i = k"),
                " and 0 otherwise (the Kronecker delta, written as a bracket so that ",
                M(r"\delta", "delta"),
                " always means an error), and indices run from 1 to the layer width.",
            ]
        from symgrad.ir.ops import step as _step

        if self._uses(_step):
            conv += [
                " ",
                M(r"[z > 0]", "[z > 0]"),
                " is an Iverson bracket (1 if true, else 0).",
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
                        M("N", "N"),
                        " samples in the rows of ",
                        M(
                            r"X \in \mathbb{R}^{N \times %s}" % latex(net.input_width),
                            f"X (N x {net.input_width})",
                        ),
                        " (likewise ",
                        M(r"Z^{[l]}, A^{[l]}, Y", "Z, A, Y"),
                        "; row ",
                        M("s", "s"),
                        " is sample ",
                        M("s", "s"),
                        ", written ",
                        M(r"\mathbf{a}^{(s)}", "a(s)"),
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
                Eq(
                    (
                        self.q(f.stage.name, "component", _free_names(f.stage)),
                        self.ex(f.component),
                    )
                )
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
                M(r"\frac{1}{N} \sum_{s=1}^{N} %s^{(s)}" % LOSS, "mean_s L(s)"),
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

    def _step_section(self, st: Step, what: str) -> Section:
        return self.section(self._title(st, what), 2, anchor=f"step-{st.grad}")

    def loss_step(self, st: Step) -> None:
        s = self._step_section(st, "loss gradient")
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
            out = self.net.output
            raw = None
            loss = self.d.loss
            # the loss's own summation index must not be the derivative's free index i
            dummies = {lim[0] for sm in loss.atoms(sp.Sum) for lim in sm.limits}
            if _I in dummies:
                loss = loss.xreplace({_I: next(j for j in _SPARE if j not in dummies)})
            with contextlib.suppress(Exception):  # a display aid only
                raw = sp.diff(loss, out[_I])
            sides = [
                self.dq(st.wrt, "component", ["i"]),
                M(quantity("d" + st.wrt, "component", ["i"], yhat=self.yhat), "dL/dyhat[i]"),
            ]
            if raw is not None and raw.has(sp.KroneckerDelta):
                sides.append(
                    M(
                        r"\frac{\partial}{\partial \hat{y}_{i}} %s"
                        % paren(latex(loss, yhat=self.yhat)),
                        f"d/dyhat[i] ({_text(loss)})",
                    )
                )
                sides.append(self.ex(raw, yhat=True))
            sides.append(self.ex(st.component, yhat=True))
            s.items.append(Item("math", eqs=(Eq(tuple(_dedupe(sides))),)))
            if raw is not None and raw.has(sp.KroneckerDelta):
                s.items.append(Item("para", self._kronecker_text(raw, "i", keep_sum=True)))
        if self.mat:
            s.items.append(Item("label", ("Matrix form, per sample and batched",)))
            eqs = (
                Eq((self.dq(st.wrt, "vector"), self.ex(st.matrix, "vector", yhat=True))),
                Eq((self.dq(st.wrt, "batched"), self.ex(batched_step(st), "batched", yhat=True))),
            )
            s.items.append(Item("math", eqs=eqs))
            if self.has_params:
                s.items.append(
                    Item(
                        "para",
                        (
                            "The batched form carries the ",
                            M(r"\frac{1}{N}", "1/N"),
                            " of the mean over the batch; every adjoint computed from it "
                            "inherits it.",
                        ),
                    )
                )

    def _kronecker_text(self, e: sp.Expr, survivor: str, keep_sum: bool = False) -> tuple:
        ds = _deltas(e)
        if not ds:
            return ()
        br = ds[0]
        a_, b_ = (latex(x) for x in br.args)
        dummy = a_ if a_ != survivor else b_
        return (
            "The bracket ",
            M(r"[%s = %s]" % (a_, b_), f"[{a_} == {b_}]"),
            " is zero unless ",
            M(f"{a_} = {b_}", f"{a_} = {b_}"),
            ", so it kills every term of the sum over ",
            M(dummy, dummy),
            " but one: the sum collapses to the term ",
            M(f"{dummy} = {survivor}", f"{dummy} = {survivor}"),
            ".",
        )

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

    def _local_why(self, st: Step, ii: Sequence[str]) -> tuple[list[Eq], list[Item]]:
        """The local derivative derived from the stage's definition: ``d/dz_k sigma(z_i) =
        sigma(z_i)(1 - sigma(z_i)) [i = k] = a_i (1 - a_i) [i = k]``, plus the derivative of
        any of symgrad's own activation functions from its definition in exponentials."""
        stage = st.stage
        assert stage is not None and st.local is not None
        name = self.local_name(stage.name, st.wrt, ["i"], ii, "component")
        wrt_sym = st.param.base if st.param is not None else stage.inp
        raw_wrt = wrt_sym[tuple(st.local_indices[1:])] if st.local_indices[1:] else wrt_sym
        eqs: list[Eq] = []
        items: list[Item] = []
        raw = None
        with contextlib.suppress(Exception):  # a display aid: fall back to the bare result
            raw = contract(sp.diff(stage.body, raw_wrt))
        body = self.ex(stage.body)
        d_tex = latex(raw_wrt)
        sides = [
            name,
            M(
                r"\frac{\partial}{\partial %s} %s" % (d_tex, paren(body.tex)),
                f"d/d{_text(raw_wrt)} ({body.txt})",
            ),
        ]
        if raw is not None:
            sides.append(self.ex(raw))
        sides.append(self.ex(st.local))
        eqs.append(Eq(tuple(_dedupe(sides))))
        if raw is not None and raw != st.local and st.kind == "input":
            out_tex = quantity(stage.name, "component", ["i"])
            if visual_width(body.tex) <= 30:
                value = M(r"%s = %s" % (out_tex, body.tex), f"{stage.name}[i] = {body.txt}")
            else:  # too long for a line of prose: the forward pass shows the definition
                value = M(out_tex, f"{stage.name}[i]")
            items.append(
                Item(
                    "para",
                    (
                        "The last form reads the forward values: ",
                        value,
                        ", so the backward pass reuses what the forward pass stored.",
                    ),
                )
            )
        for f in _own_functions(stage.body, stage.inp[_I]):
            if type(f) in self.explained:
                continue
            self.explained.add(type(f))
            items.extend(self._function_why(type(f)))
        return eqs, items

    def _function_why(self, fn: type) -> list[Item]:
        x = sp.Symbol("x", real=True)
        fx = fn(x)
        with contextlib.suppress(Exception):
            definition = fx.rewrite(sp.exp)
            if definition == fx or definition.has(fn):
                return []
            dd = sp.diff(definition, x)
            fd = sp.diff(fx, x)
            if sp.simplify(dd - fd.rewrite(sp.exp)) != 0:
                return []
            f_tex = latex(fx)
            prime = f_tex.replace("(", "'(", 1)
            f_txt = _text(fx)
            prime_txt = f_txt.replace("(", "'(", 1)
            eqs = (
                Eq((M(f_tex, f_txt), self.ex(definition))),
                Eq((M(prime, prime_txt), self.ex(dd), self.ex(fd))),
            )
            return [
                Item("para", ("Why: from the definition of the activation,",)),
                Item("math", eqs=eqs),
            ]
        return []

    def input_step(self, st: Step) -> None:
        stage = st.stage
        assert stage is not None
        kind = {
            "diagonal": f"through {stage.label}: diagonal Jacobian",
            "full": f"through {stage.label}: full Jacobian",
            "linear": f"through {stage.label}: linear, the Jacobian is a weight matrix",
        }.get(st.jacobian, f"through {stage.label}")
        s = self._step_section(st, kind)
        if not st.needed:
            text = (
                "Not needed to train the parameters, so the generated code does "
                "not compute it; shown for completeness."
                if self.has_params
                else "The network has no parameters: this input gradient is the result."
            )
            s.items.append(Item("para", (text,)))
        out, inp = stage.name, st.wrt
        if stage.indices or stage.in_shape:
            self.tensor_step(st, s)
            return
        if stage.sample is not None:
            self.sample_step(st, s)
            return
        if self.comp:
            s.items.append(Item("label", ("Local derivative",)))
            leqs, why = self._local_why(st, ["k"])
            s.items.append(Item("math", eqs=tuple(leqs)))
            s.items.extend(why)
            s.items.append(Item("label", ("Chain rule, component form",)))
            chain, subst = self._chain(st, "i", ["k"])
            lhs = self._grad_lhs(st, "component", ["k"])
            if st.fused and st.unfused is not None:
                eq = Eq(tuple(_dedupe([*lhs, chain, subst, self.ex(_swap_ik(st.unfused))])))
                s.items.append(Item("math", eqs=(eq,)))
                if st.local is not None and st.local.has(sp.KroneckerDelta):
                    s.items.append(Item("para", self._kronecker_text(st.local, "k")))
                s.items.extend(self._fused_lines(st, lhs[0]))
            else:
                eq = Eq(tuple(_dedupe([*lhs, chain, subst, self.ex(_swap_ik(st.component))])))
                s.items.append(Item("math", eqs=(eq,)))
                if st.local is not None and st.local.has(sp.KroneckerDelta):
                    s.items.append(Item("para", self._kronecker_text(st.local, "k")))
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
            sides.append(
                M(r"\left(%s\right)^{\top} %s" % (J.tex, up.tex), f"({J.txt}).T @ {up.txt}")
            )
            if st.jacobian == "diagonal" and jm is not None:
                eqs.append(Eq((J, self.ex(jm, "vector"))))
                jt = self.ex(jm, "vector").tex
                jtp = paren(jt) if jm.is_Add else jt
                sides.append(M(r"%s^{\top} %s" % (jtp, up.tex), f"{_text(jm)}.T @ {up.txt}"))
                sides.append(M(r"%s %s" % (jtp, up.tex), f"{_text(jm)} @ {up.txt}"))
            elif jm is not None:
                eqs.append(Eq((J, self.ex(jm, "vector"))))
            if st.fused and st.unfused is not None:
                with contextlib.suppress(DerivationError):  # no matrix form: skip that side
                    sides.append(self.ex(to_matrix(st.unfused, (_I,)), "vector"))
            sides.append(self.ex(st.matrix, "vector"))
            eqs.append(Eq(tuple(_dedupe(sides))))
            s.items.append(Item("math", eqs=tuple(eqs)))
            if st.jacobian == "diagonal" and jm is not None:
                s.items.append(
                    Item(
                        "para",
                        (
                            "A diagonal matrix is its own transpose, and multiplying a vector "
                            "by a diagonal matrix scales each entry: the matrix product "
                            "becomes the elementwise (Hadamard) product ",
                            M(r"\odot", "*"),
                            ".",
                        ),
                    )
                )
            s.items.append(Item("label", ("Batched",)))
            blhs = self._grad_lhs(st, "batched", [])
            s.items.append(Item("math", eqs=(Eq((*blhs, self.ex(batched_step(st), "batched"))),)))

    def _fused_lines(self, st: Step, lhs: M) -> list[Item]:
        """The loss gradient substituted into the step, then simplified line by line:
        ``-y_k + a_k sum_i y_i``, then ``sum_i y_i = 1`` gives ``a_k - y_k``."""
        loss_step = next((x for x in self.d.steps if x.kind == "loss"), None)
        assert st.unfused is not None
        final = _swap_ik(st.component)
        items: list[Item] = []
        parts: list[Part] = ["Substituting the loss gradient "]
        lines: list[M] = []
        identity_used = False
        if loss_step is not None:
            parts.append(
                M(
                    r"%s = %s"
                    % (quantity(loss_step.grad, "component", ["i"]), latex(loss_step.component)),
                    f"{loss_step.grad}[i] = {_text(loss_step.component)}",
                )
            )
            up = st.upstream
            with contextlib.suppress(Exception):  # a display aid: fall back to the result
                un = _swap_ik(st.unfused)
                s1 = un.replace(
                    lambda e: isinstance(e, sp.Indexed) and str(e.base.label) == up,
                    lambda e: loss_step.component.xreplace({_I: e.indices[0]}),
                )
                s2 = sp.expand(
                    pull_out(
                        sp.expand(s1).replace(
                            lambda e: isinstance(e, sp.Sum),
                            lambda e: sp.Sum(sp.expand(e.function), *e.limits),
                        )
                    )
                )
                # the expanded form when it is the shorter one (softmax + cross-entropy:
                # -y_k + a_k sum_i y_i), else the substitution as it stands
                lines.append(self.ex(s2 if sp.count_ops(s2) < sp.count_ops(s1) else s1))
                s3 = _apply_sum_identity(s2, self.net)
                if s3 != s2:
                    identity_used = True
                    lines.append(self.ex(s3))
        parts.append(" (fused: the code never forms it)")
        if identity_used:
            parts.append(" and using ")
            parts.append(M(r"\sum_i y_i = 1", "sum_i y_i = 1"))
            parts.append(" (targets are one-hot or probabilities)")
        parts.append(":")
        items.append(Item("para", tuple(parts)))
        eq = Eq(tuple(_dedupe([lhs, *lines, self.ex(final)])))
        items.append(Item("math", eqs=(eq,)))
        return items

    def param_step(self, st: Step) -> None:
        stage = st.stage
        assert stage is not None
        if _is_weight(st):
            what = "weight gradient"
        elif _is_additive(st):
            what = "bias gradient"
        else:
            what = "parameter gradient"
        s = self._step_section(st, what)
        names = [str(i) for i in st.indices]
        if stage.indices or stage.in_shape:
            self.tensor_step(st, s)
            return
        if stage.sample is not None:
            self.sample_step(st, s)
            return
        if self.comp:
            s.items.append(Item("label", ("Local derivative",)))
            leqs, why = self._local_why(st, names)
            s.items.append(Item("math", eqs=tuple(leqs)))
            s.items.extend(why)
            s.items.append(Item("label", ("Chain rule, component form",)))
            chain, subst = self._chain(st, "i", names)
            lhs = self._grad_lhs(st, "component", names)
            eq = Eq(tuple(_dedupe([*lhs, chain, subst, self.ex(st.component)])))
            s.items.append(Item("math", eqs=(eq,)))
            if st.local is not None and st.local.has(sp.KroneckerDelta):
                s.items.append(Item("para", self._kronecker_text(st.local, names[0])))
        if self.mat:
            s.items.append(Item("label", ("Matrix form, per sample",)))
            lhs = self._grad_lhs(st, "vector", [])
            s.items.append(Item("math", eqs=(Eq((*lhs, self.ex(st.matrix, "vector"))),)))
            s.items.append(Item("label", ("Batched: summed over the samples (rows)",)))
            blhs = self._grad_lhs(st, "batched", [])
            per = self.ex(st.matrix, "vector")
            sides = [
                *blhs,
                self.ex(batched_step(st), "batched"),
                M(
                    r"\sum_{s=1}^{N} \left(%s\right)^{(s)}" % per.tex,
                    f"sum_s ({per.txt})(s)",
                ),
            ]
            s.items.append(Item("math", eqs=(Eq(tuple(sides)),)))
            s.items.append(
                Item(
                    "para",
                    (
                        "The parameter is shared by all samples, so its gradient is the sum "
                        "of the per-sample gradients (row ",
                        M("s", "s"),
                        " of a batched matrix is sample ",
                        M("s", "s"),
                        "). The ",
                        M(r"\frac{1}{N}", "1/N"),
                        " of the mean loss is not repeated here: it lives in the batched "
                        "adjoints, where the loss gradient put it.",
                    ),
                )
            )

    # -- the layer-by-layer view ----------------------------------------------------------
    def _layers(self) -> list[list[Stage]]:
        """The stages grouped by layer number, in forward order."""
        groups: dict[int, list[Stage]] = {}
        for st in self.net.stages:
            groups.setdefault(st.layer, []).append(st)
        return [groups[k] for k in sorted(groups)]

    def _stage_jacobian(self, stage: Stage) -> M | None:
        """The whole-stage matrix ``d out / d in`` (``diag(a (1 - a))``, ``W``)."""
        for st in self.d.steps:
            if st.kind == "input" and st.stage is stage and st.local is not None:
                jm = _jacobian_matrix(st.local, self.net, st.jacobian == "diagonal")
                if jm is None:
                    return None
                m = self.ex(jm, "vector")
                return M(paren(m.tex) if jm.is_Add else m.tex, _text(jm))
        return None

    @staticmethod
    def _param_jacobian_name(out: str, param: str, matrix: bool) -> M:
        o = quantity(out, "vector")
        p = quantity(param, "vector", matrix=matrix)
        return M(r"\frac{\partial %s}{\partial %s}" % (o, p), f"d{out}/d{param}")

    def layer_jacobians(self) -> None:
        if not (self.mat and self.has_params):
            return
        layers = self._layers()
        s = self.section(["Layer by layer: the Jacobians"])
        s.items.append(
            Item(
                "para",
                (
                    "Seen whole, layer ",
                    M("l", "l"),
                    " is a function ",
                    M(
                        r"\mathbf{a}^{[l]} = f_l(\mathbf{a}^{[l-1]}; \theta_l)",
                        "a<l> = f_l(a<l-1>; theta_l)",
                    ),
                    " with two Jacobians: with respect to its input (",
                    M(r"\textcolor{blue}{\text{blue}}", "J<l>"),
                    ", the one the adjoint is passed back through) and with respect to its "
                    "parameters (",
                    M(r"\textcolor{red}{\text{red}}", "da<l>/dtheta"),
                    "). The gradient of a parameter is the loss gradient times the input "
                    "Jacobians of the layers above it times its own parameter Jacobian.",
                ),
            )
        )
        eqs: list[Eq] = []
        names: list[str] = []
        for group in layers:
            first, last = group[0], group[-1]
            out, inp = last.name, str(first.inp)
            names.append(out)
            factors = [self._stage_jacobian(st) for st in reversed(group)]
            lhs = self.local_name(out, inp, [], [], "vector")
            sides = [M(r"J^{[%s]} = %s" % (first.layer, lhs.tex), f"J{first.layer} = {lhs.txt}")]
            if all(f is not None for f in factors):
                tex = " ".join(f.tex for f in factors if f is not None)
                txt = " @ ".join(f.txt for f in factors if f is not None)
                sides.append(M(r"\textcolor{blue}{%s}" % tex, txt))
            eqs.append(Eq(tuple(sides)))
            for k, st in enumerate(group):
                for p in st.params:
                    after = [self._stage_jacobian(x) for x in reversed(group[k + 1 :])]
                    own = self._param_jacobian_name(out, p.name, len(p.shape) != 1)
                    pm = quantity(p.name, "vector", matrix=len(p.shape) != 1)
                    pstep = next(
                        (x for x in self.d.steps if x.kind == "param" and x.param == p), None
                    )
                    # an additive parameter (z = ... + b): dz/db is the identity
                    additive = pstep is not None and _is_additive(pstep)
                    dz = (
                        ""
                        if additive and after
                        else r"\frac{\partial %s}{\partial %s}" % (quantity(st.name, "vector"), pm)
                    )
                    if all(f is not None for f in after):
                        tex = " ".join(f.tex for f in after if f is not None)
                        txt = " @ ".join(f.txt for f in after if f is not None)
                        body = " ".join(x for x in (tex, dz) if x)
                        body_txt = " @ ".join(
                            x for x in (txt, f"d{st.name}/d{p.name}" if dz else "") if x
                        )
                        rhs = M(r"\textcolor{red}{%s}" % body, body_txt)
                        eqs.append(Eq((own, rhs)))
        s.items.append(Item("math", eqs=tuple(eqs)))
        # the product chain for each parameter
        chain_eqs: list[Eq] = []
        L = len(layers)
        for li, group in enumerate(layers):
            out = group[-1].name
            for st in group:
                for p in st.params:
                    above = [r"J^{[%s]}" % layers[m][0].layer for m in range(L - 1, li, -1)]
                    above_txt = [f"J{layers[m][0].layer}" for m in range(L - 1, li, -1)]
                    own = self._param_jacobian_name(out, p.name, len(p.shape) != 1)
                    lhs = self.dq(p.name, "vector")
                    top = quantity("d" + str(self.net.output), "vector")
                    tex = r"%s^{\top} %s%s" % (
                        paren(top),
                        r"\textcolor{blue}{%s} " % " ".join(above) if above else "",
                        r"\textcolor{red}{%s}" % own.tex,
                    )
                    txt = " ".join([f"dL/d{self.net.output}^T", *above_txt, own.txt])
                    chain_eqs.append(Eq((lhs, M(tex, txt))))
        s.items.append(Item("label", ("Each parameter's gradient as a product chain",)))
        s.items.append(Item("math", eqs=tuple(chain_eqs)))
        s.items.append(
            Item(
                "para",
                (
                    "Read right to left, the chain is the forward sensitivity of the output "
                    "to the parameter; read left to right it is the backward pass: the "
                    "adjoint ",
                    M(r"\partial %s / \partial \mathbf{a}^{[L]}" % LOSS, "dL/da<L>"),
                    " is multiplied by one transposed Jacobian per layer, and each "
                    "intermediate product is an adjoint the backward pass reuses for every "
                    "parameter below it. A parameter Jacobian such as ",
                    M(r"\partial \mathbf{z} / \partial W", "dz/dW"),
                    " is a three-index array (",
                    M(
                        r"\partial z_i / \partial W_{pq} = [i = p]\, a_q",
                        "dz_i/dW_pq = [i == p] a_q",
                    ),
                    "); contracted with the adjoint it gives the outer product of BP4.",
                ),
            )
        )

    # -- summaries ----------------------------------------------------------------------
    def _bp_tag(self, st: Step) -> str:
        """Nielsen's name of a step, from its structure (never from a layer's name)."""
        if st.kind == "param":
            if _is_weight(st):
                return "BP4"
            if _is_additive(st):
                return "BP3"
            return ""
        if st.kind == "loss" or (
            st.kind == "input" and st.jacobian in ("diagonal", "full") and st.stage is not None
        ):
            # an error delta<l>: the adjoint of a quantity that enters an affine stage
            # linearly (the pre-activation z = W a + b), whatever the stage is called
            below = [x for x in self.d.steps if x.upstream == st.grad and x.kind == "input"]
            if not below or below[0].jacobian != "linear":
                return ""
            if st.kind == "loss" or st.stage is self.net.stages[-1]:
                return "BP1"
            return "BP2"
        return ""

    def _pass_back(self, st: Step) -> Step | None:
        """The linear step that feeds ``st`` (``da1 = W2^T delta2`` for ``delta1``)."""
        for x in self.d.steps:
            if x.grad == st.upstream and x.kind == "input" and x.jacobian == "linear":
                return x
        return None

    def summary_per_sample(self) -> None:
        if not self.has_params:
            return
        s = self.section(
            ["Summary per sample: the four equations of backpropagation"], anchor="bp-summary"
        )
        s.boxed = True
        general = (
            Eq(
                (
                    M(r"\text{BP1}\quad \boldsymbol{\delta}^{[L]}", "BP1  delta<L>"),
                    M(
                        r"\nabla_{\mathbf{a}^{[L]}} %s \odot f'(\mathbf{z}^{[L]})" % LOSS,
                        "dL/da<L> * f'(z<L>)",
                    ),
                )
            ),
            Eq(
                (
                    M(r"\text{BP2}\quad \boldsymbol{\delta}^{[l]}", "BP2  delta<l>"),
                    M(
                        r"(W^{[l+1]\top} \boldsymbol{\delta}^{[l+1]}) \odot f'(\mathbf{z}^{[l]})",
                        "(W<l+1>.T @ delta<l+1>) * f'(z<l>)",
                    ),
                )
            ),
            Eq(
                (
                    M(
                        r"\text{BP3}\quad \frac{\partial %s}{\partial \mathbf{b}^{[l]}}" % LOSS,
                        "BP3  dL/db<l>",
                    ),
                    M(r"\boldsymbol{\delta}^{[l]}", "delta<l>"),
                )
            ),
            Eq(
                (
                    M(
                        r"\text{BP4}\quad \frac{\partial %s}{\partial W^{[l]}}" % LOSS,
                        "BP4  dL/dW<l>",
                    ),
                    M(r"\boldsymbol{\delta}^{[l]} \mathbf{a}^{[l-1]\top}", "delta<l> @ a<l-1>.T"),
                )
            ),
        )
        s.items.append(
            Item(
                "para",
                (
                    "For layers ",
                    M(
                        r"\mathbf{z}^{[l]} = W^{[l]} \mathbf{a}^{[l-1]} + \mathbf{b}^{[l]}",
                        "z<l> = W<l> a<l-1> + b<l>",
                    ),
                    ", ",
                    M(r"\mathbf{a}^{[l]} = f(\mathbf{z}^{[l]})", "a<l> = f(z<l>)"),
                    " with an elementwise ",
                    M("f", "f"),
                    ", the backward pass is four equations (Nielsen's BP1-BP4): the error "
                    "at the output (BP1), the error of a layer from the next one (BP2, "
                    "the recursion), and the bias and weight gradients from the error "
                    "(BP3, BP4). A full Jacobian (softmax, a map layer) replaces the "
                    "factor ",
                    M(r"f'(z)", "f'(z)"),
                    " by a product with the transposed Jacobian.",
                ),
            )
        )
        if not self.mat:
            general = (
                Eq(
                    (
                        M(r"\text{BP1}\quad \delta^{[L]}_{k}", "BP1  delta<L>[k]"),
                        M(
                            r"\frac{\partial %s}{\partial a^{[L]}_{k}} f'(z^{[L]}_{k})" % LOSS,
                            "dL/da<L>[k] f'(z<L>[k])",
                        ),
                    )
                ),
                Eq(
                    (
                        M(r"\text{BP2}\quad \delta^{[l]}_{k}", "BP2  delta<l>[k]"),
                        M(
                            r"\Big(\sum_{i} W^{[l+1]}_{ik} \delta^{[l+1]}_{i}\Big) f'(z^{[l]}_{k})",
                            "(sum_i W<l+1>[i,k] delta<l+1>[i]) f'(z<l>[k])",
                        ),
                    )
                ),
                Eq(
                    (
                        M(
                            r"\text{BP3}\quad \frac{\partial %s}{\partial b^{[l]}_{p}}" % LOSS,
                            "BP3  dL/db<l>[p]",
                        ),
                        M(r"\delta^{[l]}_{p}", "delta<l>[p]"),
                    )
                ),
                Eq(
                    (
                        M(
                            r"\text{BP4}\quad \frac{\partial %s}{\partial W^{[l]}_{pq}}" % LOSS,
                            "BP4  dL/dW<l>[p,q]",
                        ),
                        M(r"\delta^{[l]}_{p} a^{[l-1]}_{q}", "delta<l>[p] a<l-1>[q]"),
                    )
                ),
            )
        s.items.append(Item("math", eqs=general))
        # the box holds the four general equations; this network's instances can be long
        # (one line per step) and follow outside it, where a page may break
        s = self.section(["BP1-BP4 for this network, and the recipe"], 2, anchor="bp-network")
        if self.mat:
            s.items.append(Item("label", ("For this network",)))
            eqs: list[Eq] = []
            for st in self.d.steps:
                if not st.needed:
                    continue
                tag = self._bp_tag(st)
                if st.kind == "input" and st.jacobian == "linear":
                    nxt = [x for x in self.d.steps if x.upstream == st.grad]
                    if nxt and self._bp_tag(nxt[0]) == "BP2":
                        continue  # shown inside BP2
                lhs = self._grad_lhs(st, "vector", [])[0]
                rhs = st.matrix
                if rhs is None:  # no matrix form: components only
                    continue
                if tag == "BP2":
                    pb = self._pass_back(st)
                    if pb is not None and pb.matrix is not None:
                        rhs = rhs.xreplace({Vec(pb.grad): _Grouped(pb.matrix)})
                label = r"\text{%s}\quad " % tag if tag else ""
                eqs.append(
                    Eq(
                        (
                            M(label + lhs.tex, (tag + "  " if tag else "") + lhs.txt),
                            self.ex(rhs, "vector"),
                        )
                    )
                )
            s.items.append(Item("math", eqs=tuple(eqs)))
        s.items.append(Item("label", ("The recipe, layer by layer",)))
        s.items.append(
            Item(
                "list",
                entries=(
                    (
                        "Loss gradient: ",
                        M(r"\partial %s / \partial \hat{\mathbf{y}}" % LOSS, "dL/dyhat"),
                        ".",
                    ),
                    (
                        "Back through the activation: ",
                        M(r"\boldsymbol{\delta}^{[l]}", "delta<l>"),
                        " from the adjoint of ",
                        M(r"\mathbf{a}^{[l]}", "a<l>"),
                        " (BP1 at the output, BP2 below it).",
                    ),
                    (
                        "Weight gradient: ",
                        M(r"\boldsymbol{\delta}^{[l]} \mathbf{a}^{[l-1]\top}", "delta<l> a<l-1>^T"),
                        " (BP4).",
                    ),
                    ("Bias gradient: ", M(r"\boldsymbol{\delta}^{[l]}", "delta<l>"), " (BP3)."),
                    (
                        "Pass back: ",
                        M(
                            r"\partial %s / \partial \mathbf{a}^{[l-1]} = "
                            r"W^{[l]\top} \boldsymbol{\delta}^{[l]}" % LOSS,
                            "dL/da<l-1> = W<l>^T delta<l>",
                        ),
                        ".",
                    ),
                    (
                        "Repeat steps 2-5 for layer ",
                        M("l - 1", "l-1"),
                        ", down to layer 1.",
                    ),
                ),
            )
        )

    def tensor_step(self, st: Step, s) -> None:
        """A step of a (channels, [height,] width) stage (conv, pooling, flatten): its local
        derivative and the contracted gradient, whose deltas were solved through the index
        arithmetic (bracketed range conditions), then the correlation form."""
        stage = st.stage
        assert stage is not None and st.local is not None
        names = [str(i) for i in st.indices]
        if self.comp:
            s.items.append(Item("label", ("Component form (positions outside a quantity are 0)",)))
            nl = len(st.local_indices) - len(names)
            lo, li = st.local_indices[:nl], st.local_indices[nl:]
            local = Eq(
                (
                    self.local_name(
                        stage.name, st.wrt, [str(i) for i in lo], [str(i) for i in li], "component"
                    ),
                    self.ex(st.local),
                )
            )
            eq = Eq((*self._grad_lhs(st, "component", names), self.ex(st.component)))
            s.items.append(Item("math", eqs=(local, eq)))
        if self.mat:
            s.items.append(Item("label", ("Correlation form, per sample and batched",)))
            eqs = (
                Eq((*self._grad_lhs(st, "vector", []), self.ex(st.matrix, "vector"))),
                Eq((*self._grad_lhs(st, "batched", []), self.ex(batched_step(st), "batched"))),
            )
            s.items.append(Item("math", eqs=eqs))

    def sample_step(self, st: Step, s) -> None:
        """A step through a stage that couples the samples (batch norm in training mode):
        the sample index is explicit, and the chain rule sums over every sample of the
        batch as well as every component, since each output depends on every sample."""
        stage = st.stage
        assert stage is not None and st.local is not None and st.upstream is not None
        names = [str(i) for i in st.indices]
        w, n = latex(stage.width), latex(N)
        if st.kind == "input":
            # d(out[t, k]) / d(in[s, i]): the output indices summed over, the input's free
            sw, iw, tw, kw = (idx_(nm) for nm in ("s", "i", "t", "k"))
            local = st.local.xreplace({sw: tw, iw: kw, tw: sw, kw: iw})
            oi, ii = ["t", "k"], names
            loc = self.local_name(stage.name, st.wrt, oi, ii, "component")
            sums = (r"\sum_{t=1}^{%s} \sum_{k=1}^{%s}" % (n, w), "sum_t sum_k")
        else:
            local = st.local
            oi, ii = ["s", "i"], names
            loc = self.local_name(stage.name, st.wrt, oi, ii, "component")
            sums = (r"\sum_{s=1}^{%s} \sum_{i=1}^{%s}" % (n, w), "sum_s sum_i")
        if self.comp:
            s.items.append(Item("label", ("Local derivative (the sample index explicit)",)))
            s.items.append(Item("math", eqs=(Eq((loc, self.ex(local))),)))
            up = self.q(st.upstream, "component", oi)
            chain = M(r"%s %s %s" % (sums[0], up.tex, loc.tex), f"{sums[1]} {up.txt} * {loc.txt}")
            s.items.append(Item("label", ("Chain rule over the batch, component form",)))
            lhs = self._grad_lhs(st, "component", names)
            s.items.append(Item("math", eqs=(Eq((*lhs, chain, self.ex(st.component))),)))
            s.items.append(
                Item(
                    "para",
                    (
                        f"The mean and the variance of {stage.label} are sums over the ",
                        M(n, str(N)),
                        " samples of the batch, so every output depends on every sample: "
                        "the chain rule sums over the samples ",
                        M(oi[0], oi[0]),
                        " as well as the components, and the gradient carries the sums over "
                        "the batch. "
                        + (
                            "No further sum over the samples is added in the batched code."
                            if st.kind == "param"
                            else "In the batched code the sample index is the rows' axis."
                        ),
                    ),
                )
            )
        if self.mat:
            s.items.append(Item("label", ("Batched: the sums over the batch are over the rows",)))
            eqs = (Eq((*self._grad_lhs(st, "batched", []), self.ex(batched_step(st), "batched"))),)
            s.items.append(Item("math", eqs=eqs))

    def summary(self) -> None:
        s = self.section(["Summary: the backward pass as computed"])
        steps = [st for st in self.d.steps if st.needed]
        if not self.has_params:  # no parameters: the input gradient is the result
            steps += [st for st in self.d.steps if not st.needed and st.kind == "input"][-1:]
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
                if st.kind == "input" and st.stage is not None and st.stage.sample is not None:
                    expr = st.component  # (s, i): the sample index explicit
                elif st.kind == "input":
                    idx = ["k"]
                    expr = _swap_ik(st.component)
                else:
                    expr = st.component
                lhs = self._grad_lhs(st, "component", idx)
                eqs.append(Eq((lhs[0], self.ex(expr))))
            s.items.append(Item("math", eqs=tuple(eqs)))


class _Grouped(sp.Function):
    """Parentheses kept around a substituted sub-expression (display only)."""

    nargs = 1

    def _symgrad_latex(self, printer) -> str:
        return r"\left(%s\right)" % printer._print(self.args[0])

    def _sympystr(self, printer) -> str:
        return "(%s)" % printer._print(self.args[0])


def _apply_sum_identity(expr: sp.Expr, net) -> sp.Expr:
    """``sum_i y_i = 1`` where the loss declares it (targets one-hot or probabilities)."""
    if not any(kind == "sum_y_is_1" for kind, _ in net.loss.identities):
        return expr
    y = net.loss.target
    return sp.expand(
        expr.replace(
            lambda e: (
                isinstance(e, sp.Sum)
                and e.function == y[e.limits[0][0]]
                and e.limits[0][1] == 0
                and e.limits[0][2] == net.loss.width - 1
            ),
            lambda e: sp.S.One,
        )
    )


def _free_names(stage) -> list[str]:
    """The free indices of a stage's component form: ``i``, ``s, i`` (a stage that couples
    the samples), or ``c, h, w``."""
    if stage.sample is not None:
        return [str(stage.sample), "i"]
    return [str(i) for i in stage.indices] if stage.indices else ["i"]


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


def rendered_sections(
    d: Derivation, to: str, form: str = "both", width: int | None = None
) -> list[RenderedSection]:
    """The document's sections printed for one target (``"html"`` included: the page
    builder in ``documents/html.py`` lays them out)."""
    return _render_model(_Doc(d, form).build(), to, width or text_width())


def render(
    d: Derivation,
    to: str = "markdown",
    form: str = "both",
    standalone: bool = True,
    width: int | None = None,
) -> str:
    """Render a derivation as lecture notes.

    Args:
        d: the derivation (``symgrad.derive(net)``).
        to: ``"latex"``, ``"markdown"`` or ``"text"``.
        form: ``"component"`` (index notation), ``"matrix"`` (per sample and batched)
            or ``"both"``.
        standalone: a complete document (LaTeX: ``\\documentclass`` ... ``\\end{document}``;
            Markdown: with its title) rather than a fragment to paste.
        width: text output only: the line width (default: the terminal's width).

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
    sections = rendered_sections(d, to, form, width)
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
