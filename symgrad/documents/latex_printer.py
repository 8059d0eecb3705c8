# ruff: noqa: UP031 - %-formatting keeps LaTeX braces readable (no {{ }} doubling)
"""Printing: derivation -> LaTeX/Markdown. The LaTeX notation of every symgrad expression.

One :class:`~sympy.printing.latex.LatexPrinter` subclass prints the three forms a
derivation is stated in, chosen by the ``notation`` setting:

``"component"``
    index notation: ``W2[k, i]`` -> ``W^{[2]}_{ki}``, ``delta2[k]`` -> ``\\delta^{[2]}_{k}``,
    ``da1[i]`` -> ``\\frac{\\partial \\ell}{\\partial a^{[1]}_{i}}``,
    ``KroneckerDelta(i, k)`` -> ``[i = k]`` (an Iverson bracket: the Kronecker delta never
    shares the glyph of the error vector ``\\delta^{[l]}``), sums as
    ``\\sum_{k=1}^{n_{2}}`` (the 0-based ranges of the IR are shown 1-based, as in textbooks).
``"vector"``
    per-sample column vectors (``matrix_form``): ``Vec`` symbols bold (``\\mathbf{a}^{[1]}``,
    ``\\boldsymbol{\\delta}^{[2]}``), ``Mat`` symbols plain capitals, ``MatVec(W, v)`` ->
    ``W v``, ``TMatVec`` -> ``W^{\\top} v``, ``Outer(u, v)`` -> ``u v^{\\top}``, ``SumAll(u*v)``
    -> ``u^{\\top} v``; products of vector-valued factors are Hadamard products ``\\odot``.
``"batched"``
    samples as rows (``layout``): per-sample vectors become capitals (``A^{[1]}``,
    ``\\Delta^{[2]}``, ``X``, ``Y``), ``BMatMul(V, W, 1)`` -> ``V W^{\\top}``, ``RowSum(V)``
    -> ``V \\mathbf{1}``, ``ColSum(V)`` -> ``\\mathbf{1}^{\\top} V``, ``BOuter(U, V)`` ->
    ``U^{\\top} V`` and a bias vector ``b`` added to every row as
    ``\\mathbf{1} \\mathbf{b}^{\\top}``.

Quantities are recognised by name (``z2``, ``a1``, ``W2``, ``delta2``, ``da1``, ``dW2``,
``x``, ``y``); the network output may be shown as ``\\hat{y}`` (setting ``yhat``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import sympy as sp
from sympy.printing.latex import LatexPrinter, accepted_latex_functions, translate

from symgrad.calculus.layout import BMatMul, BOuter, ColSum, N, RowSum
from symgrad.calculus.matrix_form import Mat, MatVec, Outer, SumAll, TMatVec, Vec
from symgrad.documents.latex_names import BATCH_LOSS as BATCH_LOSS
from symgrad.documents.latex_names import BATCH_SIZE as BATCH_SIZE  # re-exported
from symgrad.documents.latex_names import LOSS as LOSS
from symgrad.documents.latex_names import NOTATIONS as NOTATIONS
from symgrad.documents.latex_names import Diag as Diag
from symgrad.documents.latex_names import (
    _has_adjoint,
    _is_constant,
    _math_safe,
)
from symgrad.documents.latex_names import is_vector_valued as is_vector_valued
from symgrad.documents.latex_names import paren as paren
from symgrad.documents.latex_names import quantity as quantity
from symgrad.documents.latex_names import split_name as split_name
from symgrad.escape import latex_name
from symgrad.ir.indices import one_based
from symgrad.ir.ops import op_of

#: A two-letter index (``kh``, ``kw``, ``ci``), typeset as a letter with a label (k_h).
_LABELLED_INDEX = re.compile(r"([a-z])([a-z])('*)")
_GREEK2 = ("mu", "nu", "pi", "xi")

_SYMPY_LATEX = (sp.exp, sp.log, sp.Abs, sp.Max, sp.Min, sp.sign)


class SymgradLatexPrinter(LatexPrinter):
    """LaTeX in symgrad's notation (see the module docstring).

    Settings (besides LatexPrinter's): ``notation`` (``"component"``, ``"vector"``,
    ``"batched"``), ``yhat`` (name of the network output, printed as ``\\hat{y}``; None
    prints it as ``a^{[L]}``), ``params`` (names of parameters: bias-like parameter
    vectors are broadcast over the rows in the batched form) and ``zero_based`` (sums
    written from 0 to n - 1, the convention of a document with index arithmetic).
    """

    # A printmethod of our own: symgrad's functions are printed here (plain parentheses),
    # other functions that bring a ``_latex`` method still use it (``_print_Function``).
    printmethod = "_symgrad_latex"
    _default_settings = {
        **LatexPrinter._default_settings,
        "notation": "component",
        "yhat": None,
        "params": (),
        "zero_based": False,
        "batch_loss": False,
    }

    def __init__(self, settings: dict | None = None) -> None:
        super().__init__(settings)
        if self._settings["notation"] not in NOTATIONS:
            raise ValueError(f"notation must be one of {NOTATIONS}")

    # -- names -------------------------------------------------------------------------
    @property
    def _notation(self) -> str:
        return self._settings["notation"]

    def _q(self, name: str, indices: Iterable[str] = (), **kw) -> str:
        kw.setdefault("batch_loss", self._settings.get("batch_loss", False))
        return quantity(name, self._notation, indices, yhat=self._settings["yhat"], **kw)

    def _print_Symbol(self, expr: sp.Symbol, style=None) -> str:
        if expr == N:
            return BATCH_SIZE
        if not _math_safe(expr.name):  # inert text, never markup (``\\input{...}``)
            return latex_name(expr.name)
        primed = re.fullmatch(r"([A-Za-z])(_+)", expr.name)
        if primed and expr.is_integer:  # a renamed index (u_, u__): u', u''
            return primed.group(1) + "'" * len(primed.group(2))
        m = _LABELLED_INDEX.fullmatch(expr.name)
        # kh, kw, ci: an index k labelled h (never k times h)
        if m and expr.is_integer and expr.name not in _GREEK2:
            return r"%s_{\mathrm{%s}}%s" % m.groups()
        return super()._print_Symbol(expr, style=style)

    def _print_Vec(self, expr: Vec) -> str:
        if self._notation == "batched" and expr.name in self._settings["params"]:
            # a per-feature parameter vector added to every row: 1 b^T
            return r"\mathbf{1} " + quantity(expr.name, "vector", transpose=True)
        return self._q(expr.name)

    def _print_Mat(self, expr: Mat) -> str:
        return self._q(expr.name, matrix=True)

    def _shift(self, i: sp.Expr) -> sp.Expr:
        return i if self._settings["zero_based"] else one_based(i)

    def _print_Comp(self, expr: sp.Expr) -> str:
        """A component fallback (no neat matrix form): per sample, the vector's entries in
        component notation, ``[ ... ]_{t u}``; in components, the expression itself."""
        body, free = expr.args[0], expr.args[1]
        if self._notation == "component" or not free:
            return self._print(body)
        return self.entries(body, tuple(free))

    def entries(self, body: sp.Expr, free: tuple[sp.Expr, ...]) -> str:
        """The array whose entry at ``free`` is ``body``: ``[ ... ]_{s i}``, the entry in
        component notation whatever this printer's (its indices are the entry's own)."""
        own = {k: self._settings[k] for k in self._default_settings if k in self._settings}
        inner = SymgradLatexPrinter({**own, "notation": "component"})
        subs = " ".join(inner.doprint(f) for f in free)
        return r"\left[%s\right]_{%s}" % (inner.doprint(body), subs)

    def _print_IndexedBase(self, expr: sp.IndexedBase) -> str:
        return self._q(str(expr.label))

    def _print_Indexed(self, expr: sp.Indexed) -> str:
        # indices count from 1 in the documents (index arithmetic is shifted to match),
        # from 0 in a document that says so
        indices = [self._print(self._shift(i)) for i in expr.indices]
        return self._q(str(expr.base.label), indices)

    def _print_KroneckerDelta(self, expr: sp.KroneckerDelta, exp=None) -> str:
        # An Iverson bracket, never a delta: the error vector delta^[l] owns that glyph.
        # (indices count from 1 in the documents: index arithmetic is shifted to match)
        tex = r"[%s = %s]" % tuple(self._print(self._shift(a)) for a in expr.args)
        return tex + "^{%s}" % exp if exp else tex

    def _print_NumberSymbol(self, expr: sp.NumberSymbol) -> str:
        # SymPy's constants print themselves through ``_latex``; the own printmethod above
        # bypasses it, and the generic fallback gave ``\text{\Pi}`` (does not compile).
        known = {"Pi": r"\pi", "Exp1": "e", "EulerGamma": r"\gamma", "GoldenRatio": r"\phi"}
        name = type(expr).__name__
        if name in known:
            return known[name]
        return r"\mathrm{%s}" % name

    _print_Pi = _print_NumberSymbol
    _print_Exp1 = _print_NumberSymbol
    _print_EulerGamma = _print_NumberSymbol
    _print_GoldenRatio = _print_NumberSymbol

    def _print_Float(self, expr: sp.Float) -> str:
        s = format(float(expr), ".6g")
        if "e" in s:
            mant, ex = s.split("e")
            ex = str(int(ex))
            return r"10^{%s}" % ex if mant == "1" else r"%s \cdot 10^{%s}" % (mant, ex)
        return s

    def _print_Sum(self, expr: sp.Sum) -> str:
        tex = ""
        for var, lo, hi in reversed(expr.limits):
            v = self._print(var)
            if lo == 0 and not self._settings["zero_based"]:
                tex += r"\sum_{%s=1}^{%s} " % (v, self._print(hi + 1))
            else:
                tex += r"\sum_{%s=%s}^{%s} " % (v, self._print(lo), self._print(hi))
        body = expr.function
        if body.is_Add:
            return tex + paren(self._print(body))
        return tex + self._print(body)

    def _print_MaxOver(self, expr) -> str:
        return expr._latex(self)

    # -- functions ----------------------------------------------------------------------
    def _print_Function(self, expr: sp.Function, exp: str | None = None) -> str:
        op = op_of(expr)
        if op is not None and op.latex and len(expr.args) == 1 and op.func not in _SYMPY_LATEX:
            return self._named(op.latex, expr, exp)
        if hasattr(expr, "_latex"):
            tex = expr._latex(self)
            return paren(tex) + "^{%s}" % exp if exp else tex
        name = expr.func.__name__
        if not _math_safe(name):  # inert text, never markup
            args = ", ".join(self._print(a) for a in expr.args)
            return latex_name(name) + r"\left(%s\right)" % args
        if len(expr.args) == 1 and name.replace("_", "").isalpha():
            if name in accepted_latex_functions:
                return self._named("\\" + name, expr, exp)
            if translate(name) == name:
                return self._named(r"\operatorname{%s}" % name.replace("_", r"\_"), expr, exp)
        return super()._print_Function(expr, exp=exp)

    def _print_log(self, expr: sp.Function, exp: str | None = None) -> str:
        return self._named(r"\log", expr, exp)

    def _named(self, name: str, expr: sp.Function, exp: str | None) -> str:
        tex = name + paren(self._print(expr.args[0]))
        return paren(tex) + "^{%s}" % exp if exp else tex

    def _print_step(self, expr: sp.Function, exp: str | None = None) -> str:
        tex = r"[%s > 0]" % self._print(expr.args[0])
        return tex + "^{%s}" % exp if exp else tex

    # -- arithmetic --------------------------------------------------------------------
    def _print_Add(self, expr: sp.Add, order=None) -> str:
        terms = list(self._as_ordered_terms(expr, order=order))
        params = self._settings["params"]

        def is_bias(t: sp.Expr) -> bool:
            if isinstance(t, sp.Indexed):
                return str(t.base.label) in params
            return isinstance(t, Vec | sp.IndexedBase) and str(t) in params

        # bias-like parameters last (W x + b), a positive term first: stable otherwise
        terms = [t for t in terms if not is_bias(t)] + [t for t in terms if is_bias(t)]
        if terms[0].could_extract_minus_sign():
            pos = [t for t in terms if not t.could_extract_minus_sign()]
            if pos:
                terms.remove(pos[0])
                terms.insert(0, pos[0])
        tex = ""
        for n, term in enumerate(terms):
            if n == 0:
                pass
            elif term.could_extract_minus_sign():
                tex += " - "
                term = -term
            else:
                tex += " + "
            term_tex = self._print(term)
            if self._needs_add_brackets(term):
                term_tex = paren(term_tex)
            tex += term_tex
        return tex

    def _factor(self, f: sp.Expr, hadamard: bool, alone: bool = False) -> str:
        tex = self._print(f)
        if f.is_Add or (f.is_Number and f.is_negative):
            return paren(tex)
        if isinstance(f, SumAll | RowSum | ColSum) and not alone:
            return paren(tex)
        if tex.startswith(r"\mathbf{1} ") and not alone:  # a broadcast row 1 b^T
            return paren(tex)
        if f.is_Rational and not f.is_Integer:
            return paren(tex)
        return tex

    def _product(self, factors: list[sp.Expr], bare: bool = False) -> str:
        """Juxtapose scalar factors; join vector-valued ones with the Hadamard product.

        Adjoints come first (the chain rule reads upstream times local derivative),
        Kronecker deltas last. ``bare``: a single factor needs no parentheses (it is a
        numerator or a denominator of its own).
        """
        if not factors:
            return ""
        notation = self._notation
        if bare and len(factors) == 1:
            return self._print(factors[0])

        def order(f: sp.Expr) -> tuple[int, int, int, str]:
            kind = 0 if _has_adjoint(f) else 2 if isinstance(f, sp.KroneckerDelta) else 1
            if f.is_Atom or isinstance(f, sp.Indexed):
                shape = 0
            elif f.is_Add:
                shape = 1
            elif f.is_Pow:
                shape = 2
            else:
                shape = 3
            return (int(is_vector_valued(f, notation)), kind, shape, sp.sstr(f))

        fs = sorted(factors, key=order)
        scal = [f for f in fs if not is_vector_valued(f, notation)]
        vecs = [f for f in fs if is_vector_valued(f, notation)]
        parts = []
        if scal:
            alone = len(fs) == 1
            parts.append(" ".join(self._factor(f, False, alone) for f in scal))
        if vecs:
            parts.append(r" \odot ".join(self._factor(f, True, len(fs) == 1) for f in vecs))
        return " ".join(parts)

    def _constants(self, fs: list[sp.Expr]) -> str:
        """Numbers and sizes: ``2 n_{2}``, ``n \\, n_{2}`` (a thin space between two sizes)."""
        out = ""
        prev: sp.Expr | None = None
        for f in fs:
            tex = self._factor(f, False)
            if prev is not None:
                out += r" \, " if not (prev.is_Number or f.is_Number) else " "
            out += tex
            prev = f
        return out

    def _print_Mul(self, expr: sp.Expr) -> str:
        if expr.could_extract_minus_sign():
            pos = -expr
            tex = self._print(pos)
            if pos.is_Add:
                tex = paren(tex)
            return "- " + tex
        const_num: list[sp.Expr] = []
        const_den: list[sp.Expr] = []
        num: list[sp.Expr] = []
        den: list[sp.Expr] = []
        for f in sp.Mul.make_args(expr):
            if f.is_Rational:
                if f.p != 1:
                    const_num.append(sp.Integer(f.p))
                if f.q != 1:
                    const_den.append(sp.Integer(f.q))
                continue
            if f.is_Pow and f.exp.is_negative and f.exp.is_Number:
                inv = sp.Pow(f.base, -f.exp)
                (const_den if _is_constant(inv) else den).append(inv)
                continue
            (const_num if _is_constant(f) else num).append(f)
        cnum = self._constants(const_num)
        cden = self._constants(const_den)
        coef = r"\frac{%s}{%s}" % (cnum or "1", cden) if const_den else cnum
        if den:
            top = self._product(num, bare=True) or "1"
            bottom = self._product(den, bare=True)
            scalar_den = not any(is_vector_valued(f, self._notation) for f in den)
            if scalar_den and (
                r"\frac" in top or (len(num) == 1 and num[0].is_Add and len(top) > 60)
            ):
                # a sum of fractions over a root: 1/den (...) reads better than nested fractions
                body = r"\frac{1}{%s} %s" % (bottom, self._product(num))
                if len(num) == 1 and not num[0].is_Add:
                    body = r"\frac{1}{%s} %s" % (bottom, paren(top))
            elif len(top) > 60 and num:
                # a long elementwise quotient: 1/den times the numerator, breakable at its
                # terms (a stacked fraction cannot be broken across lines)
                body = r"\frac{1}{%s} \odot %s" % (bottom, paren(top))
            else:
                body = r"\frac{%s}{%s}" % (top, bottom)
        else:
            body = self._product(num)
        if coef and body:
            sep = r" \cdot " if (coef[-1].isdigit() and body[0].isdigit()) else " "
            return coef + sep + body
        return coef or body or "1"

    def _print_Pow(self, expr: sp.Pow) -> str:
        b, e = expr.base, expr.exp
        if e.is_Number and e.is_negative:
            return self._print_Mul(expr)
        if e.is_Rational and e.q == 2 and e.p == 1:
            return r"\sqrt{%s}" % self._print(b)
        base = self._print(b)
        if (
            b.is_Add
            or b.is_Mul
            or b.is_Pow
            or (b.is_Number and (b.is_negative or not b.is_Integer))
            or "^" in base
            or isinstance(b, Outer | BMatMul | MatVec | TMatVec)
        ):
            base = paren(base)
        ex = self._print(e)
        if is_vector_valued(b, self._notation) and e.is_Integer:
            ex = r"\odot " + ex
        return r"%s^{%s}" % (base, ex)

    # -- per-sample matrix form --------------------------------------------------------
    def _operand(self, v: sp.Expr) -> str:
        tex = self._print(v)
        if v.is_Add or v.is_Mul:
            return paren(tex)
        return tex

    def _transposed(self, v: sp.Expr) -> str:
        if isinstance(v, Vec) and not (
            self._notation == "batched" and v.name in self._settings["params"]
        ):
            return self._q(v.name, transpose=True)
        if isinstance(v, Mat):
            return self._q(v.name, transpose=True, matrix=True)
        return paren(self._print(v)) + r"^{\top}"

    def _print_MatVec(self, expr: MatVec) -> str:
        W, v = expr.args
        return "%s %s" % (self._print(W), self._operand(v))

    def _print_TMatVec(self, expr: TMatVec) -> str:
        W, v = expr.args
        return "%s %s" % (self._transposed(W), self._operand(v))

    def _print_Outer(self, expr: Outer) -> str:
        u, v = expr.args
        # a number as a side of an outer product is that multiple of the ones vector
        left = self._ones(u) if u.is_number else self._operand(u)
        right = self._ones(v) + r"^{\top}" if v.is_number else self._transposed(v)
        return "%s %s" % (left, right)

    def _ones(self, c: sp.Expr) -> str:
        """``c 1``: the ones vector ``\\mathbf{1}`` times the number ``c``."""
        if c == 1:
            return r"\mathbf{1}"
        return r"(%s \mathbf{1})" % self._print(c)

    def _print_SumAll(self, expr: SumAll) -> str:
        v = expr.args[0]
        if v.is_Mul:
            vecs = [f for f in sp.Mul.make_args(v) if is_vector_valued(f, self._notation)]
            if len(vecs) == 2 and sp.Mul(*vecs) == v:
                u, w = sorted(
                    vecs, key=lambda f: (int(_has_adjoint(f)), int(not f.is_Atom), sp.sstr(f))
                )
                return "%s %s" % (self._transposed(u), self._operand(w))
        if v.is_Pow and v.exp == 2 and is_vector_valued(v.base, self._notation):
            return "%s %s" % (self._transposed(v.base), self._operand(v.base))
        return r"\mathbf{1}^{\top} %s" % self._operand(v)

    # -- batched (row-major) form ------------------------------------------------------
    def _print_Diag(self, expr: Diag) -> str:
        return r"\operatorname{diag}" + paren(self._print(expr.args[0]))

    def _print_BMatMul(self, expr: BMatMul) -> str:
        V, W, t = expr.args
        w = self._transposed(W) if t != 0 else self._print(W)
        return "%s %s" % (self._operand(V), w)

    def _print_RowSum(self, expr: RowSum) -> str:
        return r"%s \mathbf{1}" % self._operand(expr.args[0])

    def _print_ColSum(self, expr: ColSum) -> str:
        return r"\mathbf{1}^{\top} %s" % self._operand(expr.args[0])

    def _print_BOuter(self, expr: BOuter) -> str:
        U, V = expr.args
        return "%s %s" % (self._transposed(U), self._operand(V))


def latex(
    expr: sp.Basic,
    notation: str = "component",
    *,
    yhat: str | None = None,
    params: Iterable[str] = (),
    zero_based: bool = False,
    batch_loss: bool = False,
) -> str:
    """Print ``expr`` in symgrad's LaTeX notation (see :class:`SymgradLatexPrinter`);
    ``batch_loss``: every adjoint is of the batch loss (samples coupled by a stage)."""
    printer = SymgradLatexPrinter(
        {
            "notation": notation,
            "yhat": yhat,
            "params": tuple(params),
            "zero_based": zero_based,
            "batch_loss": batch_loss,
        }
    )
    return printer.doprint(expr)


__all__ = [
    "BATCH_SIZE",
    "Diag",
    "BATCH_LOSS",
    "LOSS",
    "NOTATIONS",
    "SymgradLatexPrinter",
    "is_vector_valued",
    "latex",
    "paren",
    "quantity",
    "split_name",
]
