# ruff: noqa: UP031 - %-formatting keeps LaTeX braces readable (no {{ }} doubling)
"""A stage's named sub-expressions (a map's ``let`` table, a norm's mean and variance) in
the documents: the forward pass and the local derivatives written in the names, and the
backward pass through them, last name first (``dL/dvar``, then ``dL/dmu``, then the
input's adjoint), each name's adjoint collecting every expression that reads it.

Display only: the engine differentiates the stage's body with the names substituted; the
named forms here are equal to it (a name replaces exactly its definition), which
``tests/test_lets.py`` checks numerically.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sympy as sp

from symgrad.derivations import chain_through
from symgrad.documents.lets_matrix import through_linear_names
from symgrad.documents.textbook import Mean, textbook_order
from symgrad.escape import latex_name
from symgrad.ir.indices import idx, pull_out
from symgrad.ir.lets import distinct_dummies
from symgrad.ir.network import Stage

_GREEK = frozenset(
    (
        *("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota"),
        *("kappa", "lambda", "mu", "nu", "xi", "pi", "rho", "sigma", "tau", "upsilon"),
        *("phi", "chi", "psi", "omega"),
    )
)
#: The input index of the backward step through the names.
K = idx("k")


def let_tex(name: str) -> str:
    """A let's name in LaTeX: Greek letters as glyphs (``sigma2`` as ``\\sigma^2``), ``xhat``
    as ``\\hat{x}``, a one-letter name as itself, a longer one upright."""
    m = re.fullmatch(r"([A-Za-z]+?)(2?)", name)
    if m and m.group(1) in _GREEK:
        return "\\" + m.group(1) + ("^2" if m.group(2) else "")
    if m and len(m.group(1)) > 3 and m.group(1).endswith("hat") and not m.group(2):
        base = m.group(1)[:-3]
        return r"\hat{%s}" % (("\\" + base) if base in _GREEK else latex_name(base))
    if len(name) == 1:
        return name
    return r"\mathrm{%s}" % name.replace("_", r"\_")


class LetSym(sp.Symbol):
    """A name that stands for its definition (a scalar of the sample)."""

    def _symgrad_latex(self, printer) -> str:
        return let_tex(self.name)

    def _sympystr(self, printer) -> str:
        return self.name


class LetAt(sp.Function):
    """A name with the stage's free index (``xhat[i]``), for display."""

    nargs = 2

    def _symgrad_latex(self, printer) -> str:
        name, at = self.args
        return r"%s_{%s}" % (let_tex(str(name)), printer._print(at))

    def _sympystr(self, printer) -> str:
        name, at = self.args
        return "%s[%s]" % (name, printer._print(at))


class LetAdjoint(sp.Function):
    """``dL/d(name)`` (with an index for a name that has one), for display."""

    def _symgrad_latex(self, printer) -> str:
        name, *at = self.args
        sub = "_{%s}" % printer._print(at[0]) if at else ""
        return r"\frac{\partial \ell}{\partial %s%s}" % (let_tex(str(name)), sub)

    def _sympystr(self, printer) -> str:
        name, *at = self.args
        return "dl/d%s" % name + ("[%s]" % printer._print(at[0]) if at else "")


def _alpha(e: sp.Basic, depth: int = 0) -> sp.Basic:
    """``e`` with every sum's index renamed by its nesting depth (equal up to dummies)."""
    if isinstance(e, sp.Sum) and len(e.limits) == 1:
        var, lo, hi = e.limits[0]
        b = sp.Symbol(f"_b{depth}", integer=True)
        return sp.Sum(_alpha(e.function.xreplace({var: b}), depth + 1), (b, lo, hi))
    if not e.args:
        return e
    return e.func(*(_alpha(a, depth) for a in e.args))


def same_up_to_dummies(a: sp.Basic, b: sp.Basic) -> bool:
    """Whether ``a`` and ``b`` differ at most in the names of their summation indices."""
    return _alpha(a) == _alpha(b)


def _holds_arrays(f: sp.Basic) -> bool:
    """Whether ``f`` reads an array (an entry, a sum, or a vector of the matrix forms);
    widths, numbers and earlier names do not."""
    return f.has(sp.Indexed, sp.Sum) or any(
        not s.is_integer and not isinstance(s, LetSym) for s in f.free_symbols
    )


def _core(pattern: sp.Expr) -> tuple[sp.Expr, sp.Expr] | None:
    """``pattern = coef * core`` with one factor that holds the arrays (a sum divided by a
    width: the sum alone is replaced by ``name / coef``)."""
    if not isinstance(pattern, sp.Mul):
        return None
    held = [f for f in pattern.args if _holds_arrays(f)]
    if len(held) != 1:
        return None
    return held[0], pattern / held[0]


class _Match:
    """Where a definition ``d`` occurs in an expression, and what replaces it: the whole
    (up to the names of summation indices), its one factor that holds the arrays (divided
    by the rest), or a power of its base when ``d`` is a square root."""

    def __init__(self, d: sp.Expr, value: sp.Expr) -> None:
        self.d, self.value = d, value
        self.whole = _alpha(d)
        self.core = _core(d)
        self.alpha_core = _alpha(self.core[0]) if self.core else None
        root = d.base if isinstance(d, sp.Pow) and d.exp in (sp.S.Half, -sp.S.Half) else None
        self.alpha_root = _alpha(root) if root is not None else None

    def hit(self, x: sp.Basic) -> bool:
        if _alpha(x) == self.whole:
            return True
        if self.core is not None and x.func == self.core[0].func:
            return _alpha(x) == self.alpha_core
        return (
            self.alpha_root is not None
            and isinstance(x, sp.Pow)
            and x.exp.is_Rational
            and _alpha(x.base) == self.alpha_root
        )

    def to(self, x: sp.Basic) -> sp.Expr:
        if _alpha(x) == self.whole:
            return self.value
        if self.core is not None and _alpha(x) == self.alpha_core:
            return self.value / self.core[1]
        assert isinstance(x, sp.Pow) and isinstance(self.d, sp.Pow)
        return self.value ** (x.exp / self.d.exp)


@dataclass(frozen=True)
class NamedStage:
    """The names of one stage: computation symbols (a Symbol, or an IndexedBase for a name
    with the stage's free index) and each definition in the earlier names."""

    stage: Stage
    names: tuple[tuple[str, sp.Symbol | sp.IndexedBase, sp.Expr], ...]

    @staticmethod
    def of(stage: Stage | None) -> NamedStage | None:
        if stage is None or not stage.lets or stage.sample is not None or stage.indices:
            return None
        i = stage.index
        out: list[tuple[str, sp.Symbol | sp.IndexedBase, sp.Expr]] = []
        named = NamedStage(stage, ())
        for sym, e in stage.lets:
            comp: sp.Symbol | sp.IndexedBase
            if i in e.free_symbols:
                comp = sp.IndexedBase("_let_" + sym.name, real=True)
            else:
                comp = LetSym(sym.name, real=True)
            out.append((sym.name, comp, named._name(e, out)))
            named = NamedStage(stage, tuple(out))
        return named

    # -- naming an expression ------------------------------------------------------------
    def _value(self, comp: sp.Symbol | sp.IndexedBase, at: sp.Expr) -> sp.Expr:
        return comp[at] if isinstance(comp, sp.IndexedBase) else comp

    def _name(self, e: sp.Expr, names) -> sp.Expr:
        for _, comp, definition in names:
            e = self._name_one(e, comp, definition)
        return e

    def _name_one(self, e: sp.Expr, comp, definition: sp.Expr) -> sp.Expr:
        i = self.stage.index
        ats = [i]
        if isinstance(comp, sp.IndexedBase):  # at every index, a sum's own included
            ats = sorted((s for s in e.atoms(sp.Symbol) if s.is_integer), key=str)
        for at in ats:
            d = definition.xreplace({i: at}) if at != i else definition
            match = _Match(d, self._value(comp, at))
            e = e.replace(match.hit, match.to)
        return e

    def name(self, e: sp.Expr) -> sp.Expr:
        """``e`` in the names (equal to ``e``)."""
        return self._name(e, self.names)

    def read(self, e: sp.Expr) -> list[str]:
        """The names ``e`` reads once written in them, in the order they are defined."""
        named = self.name(e)
        found = {str(x.label) for x in named.atoms(sp.IndexedBase)} | {
            x.name for x in named.atoms(LetSym)
        }
        return [n for n, comp, _ in self.names if str(comp) in found or n in found]

    def vanishing(self, terms) -> list[tuple[sp.Expr, sp.Expr]]:
        """The terms of a chain rule (pairs: term, its contraction) whose contraction is
        not 0 as it stands but is once written in the names (a sum of the deviations from
        a mean); they drop out of the result."""
        pulled = [(t, pull_out(c)) for t, c in terms if c != 0]
        return [(t, c) for t, c in pulled if sp.expand(self.name(c)) == 0]

    def expand(self, e: sp.Expr) -> sp.Expr:
        """``e`` with the names replaced by their definitions (the inverse of ``name``)."""
        i = self.stage.index
        for _, comp, definition in reversed(self.names):
            if isinstance(comp, sp.IndexedBase):
                e = e.replace(
                    lambda x, c=comp: isinstance(x, sp.Indexed) and x.base == c,
                    lambda x, d=definition, i=i: d.xreplace({i: x.indices[0]}),
                )
            else:
                e = e.xreplace({comp: definition})
        return e

    @staticmethod
    def display(e: sp.Expr) -> sp.Expr:
        """The computation symbols as their display forms."""

        def is_let(x: sp.Basic) -> bool:
            return isinstance(x, sp.Indexed) and str(x.base.label).startswith(("_let_", "_adj_"))

        def shown(x: sp.Indexed) -> sp.Expr:
            label = str(x.base.label)
            name = sp.Symbol(label[5:])
            if label.startswith("_let_"):
                return LetAt(name, x.indices[0])
            return LetAdjoint(name, x.indices[0])

        e = e.replace(is_let, shown)
        return e.replace(
            lambda x: isinstance(x, sp.Symbol) and x.name.startswith("_adj_"),
            lambda x: LetAdjoint(sp.Symbol(x.name[5:])),
        )

    # -- the textbook form ---------------------------------------------------------------------
    def _linear_names(self):
        """``(comp, c0, c1)`` for each name of the free index linear in the input:
        ``name = c0 + c1 inp`` with c0, c1 free of the input (x-hat: ``c1 = 1/sqrt(sigma2 +
        eps)``), so that ``inp = (name - c0) / c1``."""
        i, inp = self.stage.index, self.stage.inp
        for _, comp, definition in self.names:
            if not isinstance(comp, sp.IndexedBase) or not definition.has(inp[i]):
                continue
            c0 = definition.xreplace({inp[i]: sp.S.Zero})
            c1 = sp.cancel((definition - c0) / inp[i])
            if not (c1.has(inp) or c0.has(inp) or c1 == 0):
                yield comp, c0, c1

    def _through(self, e: sp.Expr, comp, c0: sp.Expr, c1: sp.Expr) -> sp.Expr:
        """``e`` in the names, every input entry written through the linear name ``comp``."""
        inp = self.stage.inp
        return self.name(e).replace(
            lambda x: isinstance(x, sp.Indexed) and x.base == inp,
            lambda x: (comp[x.indices[0]] - c0) / c1,
        )

    def without_input(self, e: sp.Expr) -> sp.Expr | None:
        """``e`` (a local derivative, in the stage's arrays) in the names with no entry of
        the input left, written through a name linear in the input (layer norm's
        ``(2 a_k - 2 mu) x-hat_i / (2 n (sigma2 + eps))`` is ``x-hat_i x-hat_k / (n sqrt(sigma2
        + eps))``). None where no such name exists, or the form is not shorter."""
        named = self.name(e)
        if not named.has(self.stage.inp):
            return None
        for comp, c0, c1 in self._linear_names():
            out = sp.factor_terms(sp.expand(self._through(e, comp, c0, c1)))
            if not out.has(self.stage.inp) and sp.count_ops(out) < sp.count_ops(named):
                return textbook_order(out)  # gamma/s ([i = k] - 1/n - xhat_i xhat_k / n)
        return None

    def textbook(self, result: sp.Expr, at: sp.Symbol) -> sp.Expr | None:
        """``result`` (the input's adjoint at index ``at``, in the stage's arrays) written
        through a name of the stage's free index that is linear in the input (x-hat:
        ``a = mu + x-hat sqrt(sigma2 + eps)``), each sum over the width as a mean:
        ``(g gamma - mean(g gamma) - x-hat mean(g gamma x-hat)) / sqrt(sigma2 + eps)``.
        None where no name is linear in the input, or the form keeps the input."""
        st = self.stage
        i, inp = st.index, st.inp
        result = distinct_dummies(result, frozenset({at}))  # no sum over ``at``'s letter
        for comp, c0, c1 in self._linear_names():
            e = self._through(result, comp, c0, c1)
            e = sp.factor_terms(pull_out(_split_sums(sp.expand(e))))
            if e.has(inp):
                continue
            e = _as_means(e, st.width)
            return textbook_order(sp.factor_terms(sp.expand(e)).xreplace({i: at}))
        return None

    # -- the backward pass through the names -------------------------------------------------
    def _adjoint_symbol(self, pos: int) -> sp.Symbol | sp.IndexedBase:
        name, comp, _ = self.names[pos]
        if isinstance(comp, sp.IndexedBase):
            return sp.IndexedBase("_adj_" + name, real=True)
        return sp.Symbol("_adj_" + name, real=True)

    def _readers(self, body: sp.Expr, upstream: sp.IndexedBase):
        """(expression, its adjoint, whether it has the free index) for the body and every
        definition."""
        i = self.stage.index
        out = [(body, upstream[i], True)]
        for pos, (_, comp, definition) in enumerate(self.names):
            adj = self._adjoint_symbol(pos)
            indexed = isinstance(comp, sp.IndexedBase)
            out.append((definition, adj[i] if indexed else adj, indexed))
        return out

    def backward(self, upstream: sp.IndexedBase) -> list[tuple]:
        """``(lhs, chain rule, result, terms)`` for each name, last first, then for the
        input ``inp[k]``: every reader's adjoint times its derivative (the other names held
        fixed), summed over the free index where the reader has it; ``terms`` pairs each
        term of the chain rule with its contraction."""
        st = self.stage
        i, w = st.index, st.width
        body = self.name(st.body)
        readers = self._readers(body, upstream)
        targets: list[tuple[sp.Expr, sp.Expr, sp.Expr]] = []
        for pos in reversed(range(len(self.names))):
            _, comp, _ = self.names[pos]
            wrt = comp[K] if isinstance(comp, sp.IndexedBase) else comp
            adj = self._adjoint_symbol(pos)
            lhs = adj[K] if isinstance(adj, sp.IndexedBase) else adj
            targets.append((lhs, wrt, comp))
        targets.append((sp.S.Zero, st.inp[K], st.inp))
        out = []
        for lhs, wrt, _ in targets:
            step = chain_through(readers, wrt, i, w)
            if step is not None:
                out.append((lhs, *step))
        return out


@dataclass(frozen=True)
class MatrixNames:
    """The names of one stage in its matrix forms: each name's per-sample and batched
    form (``Forward.lets``, ``Forward.lets_batched``), each in the earlier names."""

    forms: dict[str, tuple[tuple[sp.Symbol, sp.Expr], ...]]

    @staticmethod
    def of(forward) -> MatrixNames | None:
        """From a forward record; None where its stage names nothing in matrix form."""
        if forward is None or not forward.lets:
            return None
        forms: dict[str, tuple[tuple[sp.Symbol, sp.Expr], ...]] = {}
        for notation, pairs in (("vector", forward.lets), ("batched", forward.lets_batched)):
            named: list[tuple[sp.Symbol, sp.Expr]] = []
            for sym, form in pairs:
                named.append((LetSym(sym.name, real=True), _named(form, named)))
            forms[notation] = tuple(named)
        return MatrixNames(forms)

    def name(self, e: sp.Expr, notation: str, through: bool = False) -> sp.Expr:
        """``e`` (a per-sample, ``notation`` "vector", or batched matrix form) in the
        names (equal to ``e``); ``through``: the input written through a name linear in it
        where that removes it (x-hat for ``a - mu``; a backward form, never a definition)."""
        names = self.forms.get(notation, ())
        named = _named(e, names)
        return through_linear_names(named, names) if through else named

    def definitions(self, notation: str) -> tuple[tuple[sp.Symbol, sp.Expr], ...]:
        """Each name and its form in the earlier names."""
        return self.forms.get(notation, ())


def _as_means(e: sp.Expr, w: sp.Expr) -> sp.Expr:
    """Every sum over the whole width ``w`` as ``w`` times a mean."""

    def is_mean(x: sp.Basic) -> bool:
        return isinstance(x, sp.Sum) and x.limits[0][1:] == (0, w - 1)

    return e.replace(is_mean, lambda x: w * Mean(x.function, x.limits[0][0]))


def _split_sums(e: sp.Expr) -> sp.Expr:
    """Every sum of a sum of terms as a sum of sums (each term's sum then pulled apart)."""
    return e.replace(
        lambda x: isinstance(x, sp.Sum) and len(x.limits) == 1,
        lambda x: sp.Add(*(sp.Sum(t, x.limits) for t in sp.Add.make_args(sp.expand(x.function)))),
    )


def _named(e: sp.Expr, names) -> sp.Expr:
    for sym, form in names:
        match = _Match(form, sym)
        e = e.replace(match.hit, match.to)
    return e
