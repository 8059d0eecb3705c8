"""Stage 4, matrix form: translate contracted component expressions into vector algebra.

The vocabulary is small and is what textbooks use (per sample, column vectors):

    Sum_j W[i,j] v[j]   ->  MatVec(W, v)     W v
    Sum_i W[i,k] v[i]   ->  TMatVec(W, v)    W^T v
    u[p] * v[q]         ->  Outer(u, v)      u v^T
    Sum_i v[i]          ->  SumAll(v)        1^T v   (u^T v when v = u * w)
    v[i] * w[i]         ->  v * w            the Hadamard product (elementwise algebra)

A ``Vec`` symbol is a per-sample vector (in batched code a matrix with samples as rows),
a ``Mat`` symbol a parameter matrix. Everything elementwise stays a plain SymPy
expression, so the LaTeX and NumPy printers only add a rule per operator above. The
batched row-major layout is decided in ``layout.py``, not here.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from typing import Any

import sympy as sp

from symgrad.calculus import partial_reads
from symgrad.calculus.renamed_memo import is_zero
from symgrad.errors import DerivationError
from symgrad.ir.indices import BATCH


class Vec(sp.Symbol):
    """A per-sample vector named after an IndexedBase (a1, delta2, b1)."""


class Mat(sp.Symbol):
    """A matrix named after a two-index IndexedBase (W2)."""


class MatVec(sp.Function):
    """``W v``."""

    nargs = 2


class TMatVec(sp.Function):
    """``W^T v``."""

    nargs = 2


class Outer(sp.Function):
    """``u v^T``."""

    nargs = 2


class SumAll(sp.Function):
    """``1^T v``: the sum of a vector's entries (a scalar per sample)."""

    nargs = 1


class Comp(sp.Function):
    """The general fallback: a component expression with no neat matrix form.

    Args are ``(expr, Tuple(free indices), Tuple(their ranges), Tuple(parameter names))``.
    Documents show it in component form; the batched layout lowers it to NumPy
    broadcasting, reductions and ``einsum`` (``calculus/einsum.py``), so it still runs.
    """

    nargs = 4

    @property
    def expr(self) -> sp.Expr:
        return self.args[0]

    def _symgrad_tangent(self, R, tangents):
        """Forward mode (``calculus/forward.py``), in components: every array ``a1[j]``
        varies as its tangent ``Ra1[j]``; the parameters' directions have no sample axis."""
        expr, free, shape, names = self.args
        comp: dict = dict(tangents)  # scalars (0-dim parameters) as they are
        for sym, r in tangents.items():
            if not isinstance(sym, sp.Symbol) or not isinstance(r, sp.Symbol):
                continue
            comp[sp.IndexedBase(sym.name, real=True)] = sp.IndexedBase(r.name, real=True)
            comp[sp.Symbol(sym.name, real=True)] = sp.Symbol(r.name, real=True)
        r = R(expr, comp)
        if r == 0:
            return sp.S.Zero
        directions = [tangents[s] for s in tangents if str(s) in {str(n) for n in names}]
        return Comp(r, free, shape, sp.Tuple(*names, *directions))

    def _latex(self, printer):
        return printer._print(self.args[0])

    def _sympystr(self, printer):
        return printer._print(self.args[0])


class Once(sp.Function):
    """A term of a parameter gradient added once per batch, not summed over samples (the
    gradient of a penalty such as weight decay)."""

    nargs = 1

    def _symgrad_tangent(self, R, tangents):
        r = R(self.args[0])
        return Once(r) if r != 0 else sp.S.Zero

    def _latex(self, printer):
        return printer._print(self.args[0])

    def _sympystr(self, printer):
        return printer._print(self.args[0])


MATRIX_OPS = (MatVec, TMatVec, Outer, SumAll)


def matrix_pass(d: Any) -> Any:
    """The matrix-form stage, over a whole derivation: every forward equation and every
    step gets its per-sample matrix form (component expressions are left as they are).
    ``d`` is a :class:`~symgrad.calculus.reverse.Derivation` (not imported: the chain-rule
    stage reads the conv tensor form, which is built on this module's vocabulary).
    Where a contraction has no neat matrix form, the component fallback ``Comp`` stands in."""
    names = sp.Tuple(*(sp.Symbol(p) for p in d.network.param_names))
    _PARTIAL["extents"] = partial_reads.extents(d)
    _PARTIAL["sizes"] = {k: sp.Integer(v) for k, v in d.network.sizes.items()}
    # (channels, h, w) quantities already carry their tensor form (calculus/conv_form.py)
    forward = tuple(
        f
        if f.matrix is not None
        else replace(
            f, matrix=_forward_matrix(f.component, f.stage, names), lets=_let_matrices(f.stage)
        )
        for f in d.forward
    )
    steps = tuple(
        s if s.matrix is not None else replace(s, matrix=_step_matrix(s, names)) for s in d.steps
    )
    # 0-dim parameters (a Symbol in components) are per-batch quantities like the others:
    # a ``Vec`` in matrix forms, so that later passes (layout, forward mode) treat them so.
    scalars = {p.base: Vec(p.name) for p in d.network.params if not p.shape and p.base.is_Symbol}
    if scalars:
        forward = tuple(
            replace(f, matrix=f.matrix.xreplace(scalars)) if f.matrix is not None else f
            for f in forward
        )
        steps = tuple(
            replace(s, matrix=s.matrix.xreplace(scalars)) if s.matrix is not None else s
            for s in steps
        )
    return replace(d, forward=forward, steps=steps)


def _let_matrices(stage: Any) -> tuple[tuple[sp.Symbol, sp.Expr], ...]:
    """The per-sample matrix form of each named sub-expression of a vector stage of one
    sample, where it has a neat one (a name without one is left out)."""
    if not stage.lets or stage.sample is not None or stage.indices or reads_tensors(stage):
        return ()
    out = []
    for sym, e in stage.lets:
        free = (stage.index,) if stage.index in e.free_symbols else ()
        try:
            out.append((sym, to_matrix(e, free)))
        except DerivationError:
            continue
    return tuple(out)


def _forward_matrix(component: sp.Expr, stage: Any, names: sp.Tuple) -> sp.Expr:
    """A forward equation's matrix form; a stage that couples the samples stays in
    components, its sample index first (``Comp`` over (N, width): the batch axis)."""
    if stage.sample is not None:
        return Comp(
            component,
            sp.Tuple(stage.sample, stage.index),
            sp.Tuple(BATCH, stage.width),
            names,
        )
    if stage.indices:  # a tensor map: its own indices, in components
        return Comp(component, sp.Tuple(*stage.indices), sp.Tuple(*stage.shape), names)
    if reads_tensors(stage):
        return Comp(component, sp.Tuple(stage.index), sp.Tuple(stage.width), names)
    return matrix_or_component(component, (stage.index,), (stage.width,), names)


def _step_matrix(s, names: sp.Tuple) -> sp.Expr:
    """A step's matrix form; a penalty's part of a parameter gradient is added once per
    batch (``Once``), and a scalar parameter's gradient stays in components, as do the
    gradients through a stage that couples the samples (they carry sums over the batch)."""
    pen = getattr(s, "penalty", None)
    data = s.component
    if pen is not None:
        data = sp.expand(data - pen, mul=False, power_exp=False, log=False, multinomial=False)
    if (
        s.stage is not None
        and s.kind != "loss"
        and (s.stage.sample is not None or reads_tensors(s.stage))
    ):
        m = Comp(data, sp.Tuple(*s.indices), sp.Tuple(*s.shape), names)
    elif s.kind == "param" and not s.indices:
        m = Comp(data, sp.Tuple(), sp.Tuple(), names) if not is_zero(data) else sp.S.Zero
    else:
        m = matrix_or_component(data, s.indices, s.shape, names) if not is_zero(data) else sp.S.Zero
    if pen is None:
        return m
    return m + Once(matrix_or_component(pen, s.indices, s.shape, names))


#: The extents of the quantities of the derivation the matrix pass is working on (for
#: reads of part of an axis, ``partial_reads.py``).
_PARTIAL: dict[str, dict] = {"extents": {}, "sizes": {}}


def reads_tensors(stage: Any) -> bool:
    """Whether ``stage`` is a user's map with quantities of several axes (its own output,
    its input, or another array it reads): its equations stay in components."""
    if dict(stage.attrs).get("form") != "component":
        return False
    return bool(stage.indices or stage.in_shape or any(stage.extra_shapes))


def matrix_or_component(
    expr: sp.Expr, free: tuple[sp.Symbol, ...], shape: tuple[sp.Expr, ...], names: sp.Tuple
) -> sp.Expr:
    """``to_matrix`` where a neat matrix form exists, else the component fallback ``Comp``
    (``names``: the network's parameters, which have no sample axis). An expression that
    reads part of an axis keeps its component form, its partial reads marked."""
    marked, partial = partial_reads.mark(
        expr, tuple(free), tuple(shape), _PARTIAL["extents"], _PARTIAL["sizes"]
    )
    if partial:
        return Comp(marked, sp.Tuple(*free), sp.Tuple(*shape), names)
    try:
        return to_matrix(expr, tuple(free))
    except DerivationError:
        return Comp(expr, sp.Tuple(*free), sp.Tuple(*shape), names)


@lru_cache(maxsize=4096)
def to_matrix(expr: sp.Expr, free: tuple[sp.Symbol, ...]) -> sp.Expr:
    """The matrix form of a component expression with free indices ``free`` (memoised:
    documents and code generation ask for the same translations many times)."""
    if len(free) == 0:
        return _scalar(expr)
    if len(free) == 1:
        return _vec(expr, free[0])
    if len(free) == 2:
        p, q = free
        terms = []
        for t in sp.Add.make_args(sp.expand_mul(expr) if expr.is_Mul is False else expr):
            fs = sp.Mul.make_args(t)
            if any(f.has(p) and f.has(q) for f in fs):
                raise DerivationError(f"no matrix form for {t}: a factor depends on both {p}, {q}")
            u = sp.Mul(*[f for f in fs if f.has(p)])
            v = sp.Mul(*[f for f in fs if f.has(q)])
            c = sp.Mul(*[f for f in fs if not f.has(p) and not f.has(q)])
            terms.append(_scalar(c) * Outer(_vec(u, p), _vec(v, q)))
        return sp.Add(*terms)
    raise DerivationError(f"no matrix form for a gradient with {len(free)} free indices")


def _vec(e: sp.Expr, k: sp.Symbol) -> sp.Expr:
    if isinstance(e, sp.Indexed):
        if e.indices == (k,):
            return Vec(str(e.base.label))
        raise DerivationError(f"no matrix form for {e} (free index {k})")
    if isinstance(e, sp.Sum):
        if not e.has(k):
            return _scalar(e)
        j, body = _outer(e)
        out = []
        for t in sp.Add.make_args(body):
            if not t.has(k):
                out.append(SumAll(_vec(t, j)))
                continue
            fs = sp.Mul.make_args(t)
            outside = [f for f in fs if not f.has(j)]
            if outside:  # factors free of the summed index leave the sum
                inside = sp.Mul(*[f for f in fs if f.has(j)])
                out.append(_vec(sp.Mul(*outside), k) * _vec(sp.Sum(inside, (j, 0, _hi(e))), k))
                continue
            mats = [f for f in fs if isinstance(f, sp.Indexed) and len(f.indices) == 2]
            rest = [f for f in fs if f not in mats]
            if len(mats) != 1 or any(f.has(k) for f in rest):
                raise DerivationError(f"no matrix form for the contraction {e}")
            M = mats[0]
            W = Mat(str(M.base.label))
            v = _vec(sp.Mul(*rest), j)
            if M.indices == (j, k):
                out.append(TMatVec(W, v))
            elif M.indices == (k, j):
                out.append(MatVec(W, v))
            else:
                raise DerivationError(f"no matrix form for {M} in {e}")
        return sp.Add(*out)
    if isinstance(e, sp.KroneckerDelta):
        raise DerivationError(f"no matrix form for {e}")
    if not e.args:
        if e == k:
            raise DerivationError(f"no matrix form: the index {k} is used as a value")
        return e
    return rebuild(e, [_vec(a, k) for a in e.args])


def _hi(e: sp.Sum) -> sp.Expr:
    return e.limits[-1][2]


def _outer(e: sp.Sum) -> tuple[sp.Symbol, sp.Expr]:
    """The outermost summation index of ``e`` and the summand over it (SymPy merges nested
    Sums into one with several limits, innermost first)."""
    j = e.limits[-1][0]
    body = sp.Sum(e.function, *e.limits[:-1]) if len(e.limits) > 1 else e.function
    return j, body


def _scalar(e: sp.Expr) -> sp.Expr:
    if isinstance(e, sp.Sum):
        j, body = _outer(e)
        return SumAll(_vec(body, j))
    if isinstance(e, sp.Indexed):
        raise DerivationError(f"no matrix form for {e} (an index is left free)")
    if not e.args:
        return e
    return rebuild(e, [_scalar(a) for a in e.args])


def rebuild(e: sp.Expr, args: list[sp.Expr]) -> sp.Expr:
    """``e.func(*args)``; functions and max/min unevaluated: evaluating ``tanh(tanh(...))``
    or ``Max`` of many terms asks SymPy's assumption system about every nested argument,
    which takes minutes on deeply nested input (and the arguments are symbols here)."""
    if isinstance(e, sp.Function | sp.Max | sp.Min) and not isinstance(e, MATRIX_OPS):
        return e.func(*args, evaluate=False)
    return e.func(*args)
