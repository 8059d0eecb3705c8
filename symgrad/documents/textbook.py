# ruff: noqa: UP031 - %-formatting keeps LaTeX braces readable (no {{ }} doubling)
"""The textbook form of a normalisation's backward step, for display: a mean over an
index (``mean_t(g)``, ``mean_j(g)``), a sum printed in a given order, and a factor kept in
front of a parenthesised sum: ``gamma / sqrt(sigma^2 + eps) (g - mean(g) - x-hat
mean(g x-hat))``. Used by the batch statistics (``statistics.py``) and by the names of
one sample's layer (``lets.py``). Display only: each prints by its arguments, never
evaluates.
"""

from __future__ import annotations

import sympy as sp


class Mean(sp.Function):
    """The mean of a body over an index: the samples of the batch, or the entries of
    one sample's vector (display only)."""

    nargs = 2

    def _symgrad_latex(self, printer) -> str:
        body, var = self.args
        return r"\operatorname{mean}_{%s}\!\left(%s\right)" % (
            printer._print(var),
            printer._print(body),
        )

    def _sympystr(self, printer) -> str:
        body, var = self.args
        return "mean_%s(%s)" % (printer._print(var), printer._print(body))


class Ordered(sp.Function):
    """A sum printed in the order given (the upstream adjoint first, then the means)."""

    def _symgrad_latex(self, printer) -> str:
        return _ordered(self.args, printer)

    def _sympystr(self, printer) -> str:
        return _ordered(self.args, printer)


def _ordered(terms: tuple[sp.Basic, ...], printer) -> str:
    out = ""
    for n, t in enumerate(terms):
        neg = t.could_extract_minus_sign()
        text = printer._print(-t if neg else t)
        out += ("- " if neg else "+ ") + text if n else ("-" if neg else "") + text
        out += " "
    return out.strip()


class Scaled(sp.Function):
    """``coef (body)``: a factor kept in front of a parenthesised sum."""

    nargs = 2

    def _symgrad_latex(self, printer) -> str:
        coef, body = self.args
        return r"%s \left(%s\right)" % (printer._print(coef), printer._print(body))

    def _sympystr(self, printer) -> str:
        coef, body = self.args
        return "%s*(%s)" % (printer.parenthesize(coef, 50), printer._print(body))


def textbook_order(e: sp.Expr) -> sp.Expr:
    """``coef (g - mean(g) - x-hat mean(g x-hat))``: the sum's terms in the textbook's
    order (fewest means first, then fewest factors) behind its coefficient."""
    factors = sp.Mul.make_args(e)
    sums = [f for f in factors if isinstance(f, sp.Add)]
    if len(sums) != 1:
        return e
    coef = sp.Mul(*[f for f in factors if f is not sums[0]])
    terms = sorted(
        sp.Add.make_args(sums[0]),
        key=lambda t: (len(t.atoms(Mean)), len(sp.Mul.make_args(t)), sp.default_sort_key(t)),
    )
    return Scaled(coef, Ordered(*terms))
