# ruff: noqa: UP031 - %-formatting keeps LaTeX braces readable (no {{ }} doubling)
"""Named batch statistics for a stage that couples the samples (batch norm in training
mode): the mean ``mu``, the variance ``sigma^2`` and the normalised input ``x-hat`` are
recognised in the stage's expression by their structure (a sum over the sample index
divided by the batch size; the mean square deviation from it; the deviation over the
root of the variance plus a constant), never by a layer's name. A backward step is then
restated in them, ending in the textbook form
``gamma / sqrt(sigma^2 + eps) (g - mean(g) - x-hat mean(g x-hat))``.

Display only: the named forms are shown beside the derivation's own expressions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import sympy as sp

from symgrad.calculus.layout import N
from symgrad.documents.model import Eq, Item, M
from symgrad.documents.textbook import Mean, Ordered, Scaled, textbook_order
from symgrad.ir.indices import pull_out
from symgrad.ir.network import Stage

if TYPE_CHECKING:
    from symgrad.documents.doc_base import DocBase

_MU = sp.IndexedBase("_mu", real=True)
_VAR = sp.IndexedBase("_var", real=True)
_SD = sp.IndexedBase("_sd", real=True)
_XHAT = sp.IndexedBase("_xhat", real=True)


class _Epsilon(sp.Symbol):
    """The constant under the root (its value is shown with the definitions)."""

    def _symgrad_latex(self, printer) -> str:
        return r"\epsilon"

    def _sympystr(self, printer) -> str:
        return "eps"


EPS = _Epsilon("eps", positive=True)


class _Stat(sp.Function):
    """A named statistic in a display (printed by name, never evaluated)."""

    tex = ""
    txt = ""

    def _symgrad_latex(self, printer) -> str:
        return self.tex % tuple(printer._print(a) for a in self.args)

    def _sympystr(self, printer) -> str:
        return self.txt % tuple(printer._print(a) for a in self.args)


class Mu(_Stat):
    nargs = 1
    tex, txt = r"\mu_{%s}", "mu[%s]"


class Var(_Stat):
    nargs = 1
    tex, txt = r"\sigma^2_{%s}", "sigma2[%s]"


class Sd(_Stat):
    nargs = 1
    tex, txt = r"\sqrt{\sigma^2_{%s} + \epsilon}", "sqrt(sigma2[%s] + eps)"


class XHat(_Stat):
    nargs = 2
    tex, txt = r"\hat{x}_{%s,%s}", "xhat[%s, %s]"


def _batch_sum(e: sp.Basic) -> bool:
    return (
        isinstance(e, sp.Sum)
        and len(e.limits) == 1
        and e.limits[0][1] == 0
        and sp.simplify(e.limits[0][2] - (N - 1)) == 0
    )


@dataclass(frozen=True)
class BatchStatistics:
    """The statistics of one stage's input ``inp`` over the sample index."""

    stage: Stage
    eps: sp.Expr

    @staticmethod
    def of(stage: Stage) -> BatchStatistics | None:
        """The stage's statistics, if its expression has a batch mean and variance."""
        if stage.sample is None:
            return None
        stats = BatchStatistics(stage, sp.S.Zero)
        named = stats._variances(stats._means(stage.body))
        if not (named.has(_MU) and named.has(_VAR)):
            return None
        return BatchStatistics(stage, stats._epsilon(stage.body))

    def _epsilon(self, body: sp.Expr) -> sp.Expr:
        named = self._means(body)
        named = self._variances(named)
        for p in sp.preorder_traversal(named):
            if isinstance(p, sp.Pow) and p.base.has(_VAR) and isinstance(p.base, sp.Add):
                rest = [a for a in p.base.args if not a.has(_VAR)]
                return sp.Add(*rest)
        return sp.S.Zero

    # -- recognising the statistics -----------------------------------------------------
    def _means(self, e: sp.Expr) -> sp.Expr:
        inp = self.stage.inp

        def is_mean(x: sp.Basic) -> bool:
            if not _batch_sum(x):
                return False
            f, var = x.function, x.limits[0][0]
            return isinstance(f, sp.Indexed) and f.base == inp and f.indices[0] == var

        return e.replace(is_mean, lambda x: N * _MU[x.function.indices[1]])

    def _variances(self, e: sp.Expr) -> sp.Expr:
        inp = self.stage.inp

        def is_var(x: sp.Basic) -> bool:
            if not _batch_sum(x):
                return False
            f, var = x.function, x.limits[0][0]
            if not (isinstance(f, sp.Pow) and f.exp == 2):
                return False
            terms = sp.Add.make_args(f.base)
            return (
                len(terms) == 2
                and any(
                    isinstance(t, sp.Indexed) and t.base == inp and t.indices[0] == var
                    for t in terms
                )
                and f.base.has(_MU)
            )

        def var_of(x: sp.Basic) -> sp.Expr:
            col = next(a for a in x.function.atoms(sp.Indexed) if a.base == _MU).indices[0]
            return N * _VAR[col]

        return e.replace(is_var, var_of)

    def _algebra(self, e: sp.Expr) -> sp.Expr:
        """``e`` in the placeholders: mean, variance, root, normalised input."""
        inp = self.stage.inp
        e = sp.factor_terms(self._variances(self._means(pull_out(e))))

        def is_root(x: sp.Basic) -> bool:
            return isinstance(x, sp.Pow) and x.base.has(_VAR) and isinstance(x.base, sp.Add)

        def root(x: sp.Pow) -> sp.Expr:
            col = next(a for a in x.base.atoms(sp.Indexed) if a.base == _VAR).indices[0]
            return _SD[col] ** (2 * x.exp)

        e = e.replace(is_root, root)

        def is_dev(x: sp.Basic) -> bool:
            if not isinstance(x, sp.Add) or len(x.args) != 2:
                return False
            a, b = x.args
            for u, v in ((a, b), (b, a)):
                if isinstance(u, sp.Indexed) and u.base == inp and v == -_MU[u.indices[1]]:
                    return True
            return False

        def dev(x: sp.Add) -> sp.Expr:
            u = next(a for a in x.args if isinstance(a, sp.Indexed))
            return _XHAT[u.indices] * _SD[u.indices[1]]

        return pull_out(e.replace(is_dev, dev))

    @staticmethod
    def _display(e: sp.Expr) -> sp.Expr:
        # an even power of the root is a power of the variance plus epsilon
        e = e.replace(
            lambda x: (
                isinstance(x, sp.Pow)
                and isinstance(x.base, sp.Indexed)
                and x.base.base == _SD
                and x.exp.is_Integer
                and x.exp % 2 == 0
            ),
            lambda x: (_VAR[x.base.indices] + EPS) ** (x.exp / 2),
        )
        return e.replace(
            lambda x: isinstance(x, sp.Indexed) and x.base in (_MU, _VAR, _SD, _XHAT),
            lambda x: {_MU: Mu, _VAR: Var, _SD: Sd, _XHAT: XHat}[x.base](*x.indices),
        )

    def name(self, e: sp.Expr) -> sp.Expr:
        """``e`` with the statistics named."""
        return self._display(self._algebra(e))

    def forms(self, e: sp.Expr, upstream: str) -> list[sp.Expr]:
        """``e`` in the named statistics, then with the batch sums as means (the textbook
        form); an empty list where naming changes nothing."""
        named = self._algebra(e)
        if named == e:
            return []

        def as_mean(x: sp.Basic) -> sp.Basic:
            return N * Mean(x.function, x.limits[0][0])

        means = sp.factor_terms(sp.expand(named.replace(_batch_sum, as_mean)))
        out = [self._display(named)]
        shown = textbook_order(self._display(means))
        if shown != out[0]:
            out.append(shown)
        return out

    def expand(self, e: sp.Expr) -> sp.Expr:
        """A named form with every statistic replaced by its definition: the derivation's
        own terms again (for checking that a displayed form is exact)."""
        taken = {str(a) for a in e.atoms(sp.Symbol)}
        fresh = [c for c in ("v", "w", "m", "l", "j", "q") if c not in taken]
        # two fresh sample indices: the mean's, and the variance's around it
        t, v = (sp.Symbol(c, integer=True) for c in fresh[:2])
        x = self.stage.inp

        def mu(i: sp.Expr) -> sp.Expr:
            return sp.Sum(x[t, i], (t, 0, N - 1)) / N

        def sd(i: sp.Expr) -> sp.Expr:
            return sp.sqrt(sp.Sum((x[v, i] - mu(i)) ** 2, (v, 0, N - 1)) / N + self.eps)

        rules = (
            (Ordered, lambda *a: sp.Add(*a)),
            (Scaled, lambda c, b: c * b),
            (Mean, lambda b, v: sp.Sum(b, (v, 0, N - 1)) / N),
            (XHat, lambda s, i: (x[s, i] - mu(i)) / sd(i)),
            (Sd, sd),
            (Var, lambda i: sd(i) ** 2 - self.eps),
            (Mu, mu),
        )
        for cls, f in rules:
            e = e.replace(lambda a, cls=cls: isinstance(a, cls), lambda a, f=f: f(*a.args))
        return e.xreplace({EPS: self.eps})

    # -- the definitions, shown once --------------------------------------------------------
    def definition_items(self, doc: DocBase) -> list[Item]:
        st = self.stage
        s, i = sp.Symbol("s", integer=True), sp.Symbol("i", integer=True)
        x = st.inp[s, i]
        eqs = (
            Eq((doc.ex(Mu(i)), doc.ex(sp.Sum(x, (s, 0, N - 1)) / N))),
            Eq((doc.ex(Var(i)), doc.ex(sp.Sum((x - Mu(i)) ** 2, (s, 0, N - 1)) / N))),
            Eq((doc.ex(XHat(s, i)), doc.ex((x - Mu(i)) / Sd(i)))),
            Eq(
                (
                    M(r"\epsilon", "eps"),
                    M(lambda: doc.tex(sp.Float(float(self.eps))), f"{float(self.eps):g}"),
                )
            ),
        )
        return [
            Item(
                "para",
                (
                    "The stage's expression computes batch statistics; named, they make the "
                    "steps readable: the batch mean ",
                    M(r"\mu_i", "mu[i]"),
                    ", the batch variance ",
                    M(r"\sigma^2_i", "sigma2[i]"),
                    " and the normalised input ",
                    M(r"\hat{x}_{s,i}", "xhat[s, i]"),
                    " (",
                    M(r"\epsilon", "eps"),
                    " keeps the root away from 0):",
                ),
            ),
            Item("math", eqs=eqs),
        ]
