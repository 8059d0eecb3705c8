"""Stage 2 (IR), loss sugar: the losses and the penalty term.

A loss is a component expression of the output ``yhat`` and the target ``y``; the named
losses (``mse``, ``bce``, ``cross_entropy``) and a custom expression in ``yhat`` and
``y`` are both written as a mean over the output's components.
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy as sp

from symgrad.errors import SpecError
from symgrad.ir.indices import idx
from symgrad.ir.network import Loss, Param, Stage

#: The free index of the loss's component form.
i = idx("i")

#: Placeholders of a custom loss's per-component expression.
yhat_s = sp.Symbol("yhat", real=True)
y_s = sp.Symbol("y", real=True)

LOSS_NAMES = ("mse", "bce", "cross_entropy")


def _penalty(expr: sp.Expr, params: Sequence[Param]) -> sp.Expr:
    """Each additive term of ``expr`` summed over its free indices (ranges from the
    parameter axes they subscript): ``1e-4 * W1[p, q]**2`` is weight decay on W1."""
    by_name = {p.name: p for p in params}
    swap: dict[sp.Basic, sp.Basic] = {}
    for atom in expr.atoms(sp.Indexed, sp.Symbol):
        base = atom.base if isinstance(atom, sp.Indexed) else atom
        name = str(base.label) if isinstance(base, sp.IndexedBase) else str(base)
        if isinstance(atom, sp.Symbol) and (atom.is_integer or name not in by_name):
            continue
        if name not in by_name:
            raise SpecError(f"penalty: unknown parameter {name} (known: {', '.join(by_name)})")
        swap[base] = by_name[name].base
    expr = expr.xreplace(swap)
    out = sp.S.Zero
    for term in sp.Add.make_args(sp.expand(expr, mul=False, power_exp=False)):
        ranges: dict[sp.Symbol, sp.Expr] = {}
        for ind in term.atoms(sp.Indexed):
            p = next(q for q in params if q.base == ind.base)
            if len(p.shape) != len(ind.indices):
                raise SpecError(
                    f"penalty: {p.name} takes {len(p.shape)} indices, got {len(ind.indices)}"
                )
            for ix, dim in zip(ind.indices, p.shape, strict=True):
                if ix in ranges and ranges[ix] != dim:
                    raise SpecError(f"penalty: index {ix} runs over axes of different sizes")
                ranges[ix] = dim
        bound = {v for s_ in term.atoms(sp.Sum) for v, *_ in s_.limits}
        for ix in sorted(ranges, key=str):
            if ix not in bound:
                term = sp.Sum(term, (ix, 0, ranges[ix] - 1))
        out += term
    return out


def is_softmax(stage: Stage) -> bool:
    """Whether the stage computes ``exp(u[i]) / sum_j exp(u[j])`` (decided from its body,
    never from its name): cross-entropy's ``log`` then has a stable log-softmax form."""
    body, i_ = stage.body, stage.index
    num = [f for f in sp.Mul.make_args(body) if isinstance(f, sp.exp)]
    den = [
        f
        for f in sp.Mul.make_args(body)
        if f.is_Pow and f.exp == -1 and isinstance(f.base, sp.Sum) and len(f.base.limits) == 1
    ]
    if len(num) != 1 or len(den) != 1 or len(sp.Mul.make_args(body)) != 2:
        return False
    s = den[0].base
    j_ = s.limits[0][0]
    return isinstance(s.function, sp.exp) and s.function == num[0].xreplace({i_: j_})


def make_loss(
    spec: str | tuple[str, sp.Expr], yhat: sp.IndexedBase, C: sp.Expr, last: Stage | None
) -> Loss:
    """Build the per-sample loss (mean over outputs for elementwise losses)."""
    target = sp.IndexedBase("y", real=True)
    if isinstance(spec, tuple):
        name, elem = spec
        body = sp.Sum(elem.xreplace({yhat_s: yhat[i], y_s: target[i]}), (i, 0, C - 1)) / C
        return Loss(name, body, yhat, target, C, elementwise=elem)
    if spec == "mse":
        elem = (yhat_s - y_s) ** 2
    elif spec == "bce":
        elem = -(y_s * sp.log(yhat_s) + (1 - y_s) * sp.log(1 - yhat_s))
    elif spec == "cross_entropy":
        if last is None or not is_softmax(last):
            raise SpecError("loss 'cross_entropy' needs a softmax activation on the last layer")
        body = -sp.Sum(target[i] * sp.log(yhat[i]), (i, 0, C - 1))
        return Loss("cross_entropy", body, yhat, target, C, (("sum_y_is_1", "targets"),), True)
    else:
        raise SpecError(f"unknown loss '{spec}' (known: {', '.join(LOSS_NAMES)})")
    body = sp.Sum(elem.xreplace({yhat_s: yhat[i], y_s: target[i]}), (i, 0, C - 1)) / C
    return Loss(spec, body, yhat, target, C, elementwise=elem)
