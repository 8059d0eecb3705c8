"""Stage 5 (lower), layout: the batched row-major form, decided here and nowhere else.

Per-sample math uses column vectors (``z = W a + b``). Batched code takes samples as
rows: a per-sample vector ``v`` becomes the matrix ``V`` of shape (N, width) (the same
``Vec`` symbol, read as a matrix), and

    W v      ->  V W^T        BMatMul(V, W, transpose=True)
    W^T v    ->  V W          BMatMul(V, W, transpose=False)
    1^T v    ->  V 1          RowSum(V)      (one number per sample, an (N, 1) column)
    sum over samples of u v^T  ->  U^T V       BOuter(U, V)       (parameter gradients)
    sum over samples of v      ->  1^T V       ColSum(V)          (bias-like gradients)

The loss is the mean over samples of the per-sample loss, so the step where the loss
enters (the seed) carries the factor 1/N.
"""

from __future__ import annotations

import sympy as sp

from symgrad.calculus.conv_form import BATCH_SUMMED
from symgrad.calculus.einsum import Batched, lower
from symgrad.calculus.matrix_form import Comp, MatVec, Once, Outer, SumAll, TMatVec, rebuild

#: The batch size.
N = sp.Symbol("N", integer=True, positive=True)


class BMatMul(sp.Function):
    """``V W^T`` (args: V, W, 1) or ``V W`` (args: V, W, 0)."""

    nargs = 3


class RowSum(sp.Function):
    """``V 1``: per-sample sums, shape (N, 1)."""

    nargs = 1


class ColSum(sp.Function):
    """``1^T V``: the sum over samples, shape (width,)."""

    nargs = 1


class BOuter(sp.Function):
    """``U^T V``: the sum over samples of u v^T."""

    nargs = 2


def lower_fallbacks(expr: sp.Expr) -> sp.Expr:
    """Lower every component fallback in a batched expression to array operations."""
    if not expr.has(Comp, Once, Batched):
        return expr
    expr = expr.replace(lambda e: isinstance(e, Batched), lambda e: e.lowered())
    expr = expr.replace(lambda e: isinstance(e, Once), _lower_once)
    return expr.replace(lambda e: isinstance(e, Comp), lambda e: lower(e))


def _lower_once(e: sp.Expr) -> sp.Expr:
    """A penalty's gradient (once per batch): a component factor is lowered unbatched (the
    term may carry a scalar factor, the incoming gradient ``g`` of the generated autograd
    wrappers)."""
    return sp.Mul(
        *(
            lower(f, batched=False) if isinstance(f, Comp) else f
            for f in sp.Mul.make_args(e.args[0])
        )
    )


BATCHED_OPS = (BMatMul, RowSum, ColSum, BOuter)


def batch(expr: sp.Expr) -> sp.Expr:
    """Translate a per-sample matrix expression to the batched row-major layout."""
    if isinstance(expr, Comp):  # no neat matrix form: its array program (see einsum.py)
        return Batched(expr, sp.S.Zero)
    if isinstance(expr, MatVec):
        return BMatMul(batch(expr.args[1]), expr.args[0], sp.S.One)
    if isinstance(expr, TMatVec):
        return BMatMul(batch(expr.args[1]), expr.args[0], sp.S.Zero)
    if isinstance(expr, SumAll):
        return RowSum(batch(expr.args[0]))
    if isinstance(expr, Outer):
        raise ValueError("an outer product is only batched as a parameter gradient")
    if not expr.args:
        return expr
    return rebuild(expr, [batch(a) for a in expr.args])  # no assumption queries


def batch_param_grad(expr: sp.Expr) -> sp.Expr:
    """A parameter gradient summed over the samples of the batch."""
    terms = []
    for t in sp.Add.make_args(expr):
        if isinstance(t, Once):  # a penalty's gradient: once per batch
            terms.append(t)
            continue
        if t.has(Comp):
            comps = [f for f in sp.Mul.make_args(t) if isinstance(f, Comp)]
            terms.append(t / comps[0] * Batched(comps[0], sp.S.One))
            continue
        outer = [f for f in sp.Mul.make_args(t) if isinstance(f, Outer)]
        rest = sp.Mul(*[f for f in sp.Mul.make_args(t) if not isinstance(f, Outer)])
        if len(outer) == 1:
            u, v = outer[0].args
            if _vectors(rest):  # a per-sample scalar weighs each sample's u v^T: fold it into U
                terms.append(BOuter(batch(rest * u), batch(v)))
            else:
                terms.append(rest * BOuter(batch(u), batch(v)))
        elif _vectors(t):
            terms.append(ColSum(batch(t)))
        else:  # constant per sample: the sum over samples is N times it
            terms.append(N * batch(t))
    return sp.Add(*terms)


def _vectors(expr: sp.Expr) -> tuple:
    from symgrad.calculus.matrix_form import Vec

    return tuple(expr.atoms(Vec))


def batched_step(step) -> sp.Expr:
    """The batched form of a backward step (a :class:`~symgrad.derivation.Step`)."""
    if step.kind == "param":
        if step.matrix.has(*BATCH_SUMMED):  # conv gradients are summed over samples already
            return step.matrix
        return batch_param_grad(step.matrix)
    out = batch(step.matrix)
    return out / N if step.seed else out


def batch_mean(m: sp.Expr) -> sp.Expr:
    """The batch mean of a per-sample scalar in matrix form (a loss): its per-sample
    factor summed over the rows, its constant factor kept, divided by n."""
    from symgrad.calculus.matrix_form import Vec

    coef = sp.Mul(*[f for f in sp.Mul.make_args(m) if not f.atoms(Vec)])
    rest = sp.Mul(*[f for f in sp.Mul.make_args(m) if f.atoms(Vec)])
    return coef * ColSum(batch(rest)) / N
