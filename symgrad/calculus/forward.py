"""Stages 3 and 5, forward mode: the R-operator (directional derivative) of a batched program.

Pearlmutter's R-operator ``R{f} = d/dr f(theta + r V) at r = 0`` applied statement by
statement to the batched program (forward pass, loss gradient, backward pass) gives the
tangent program: one statement ``R{z1} = ...`` beside each ``z1 = ...``. Run on the
backward pass, whose outputs are the gradients, it yields the Hessian-vector product
``H V = R{dL/dtheta}`` (forward-over-reverse), exactly, in closed form.

One rule per node type, as UFL's ``apply_derivatives``:

    R{V W^T}   = R{V} W^T + V R{W}^T        BMatMul   (bilinear)
    R{U^T V}   = R{U}^T V + U^T R{V}        BOuter    (bilinear)
    R{V 1}     = R{V} 1                      RowSum, ColSum (linear)
    R{u + v}   = R{u} + R{v},  R{u v} = R{u} v + u R{v}   (elementwise, broadcast)
    R{f(u)}    = f'(u) R{u}                  every elementwise function, f' from the op's
                                             own derivative rule (``ir/ops.py``, SymPy's)
    R{step(u)} = R{sign(u)} = 0              piecewise-constant (almost everywhere)

A symbol's tangent comes from ``tangents`` (parameters: the direction V; earlier
statements: their tangent variables); anything else (inputs, targets, sizes) is constant.
"""

from __future__ import annotations

from collections.abc import Mapping

import sympy as sp
from sympy.functions.elementary.miscellaneous import MinMaxBase

from symgrad.calculus.layout import BMatMul, BOuter, ColSum, RowSum
from symgrad.calculus.matrix_form import Mat, Vec
from symgrad.errors import DerivationError
from symgrad.ir import ops as F
from symgrad.ir.naming import tangent_name

#: Functions whose derivative is zero almost everywhere (their kinks follow PyTorch).
_PIECEWISE_CONSTANT = (F.step, sp.sign, sp.Heaviside)
#: Linear structural operators: R{op(V)} = op(R{V}).
_LINEAR = (RowSum, ColSum)


def tangent_symbol(sym: sp.Symbol) -> sp.Symbol:
    """The tangent of a program variable, of the same kind (vector or matrix)."""
    cls = Mat if isinstance(sym, Mat) else Vec
    return cls(tangent_name(sym.name))


def tangent(expr: sp.Expr, tangents: Mapping[sp.Basic, sp.Expr]) -> sp.Expr:
    """``R{expr}``: the directional derivative of a batched or component-form expression.

    Args:
        expr: a batched expression (layout operators, elementwise SymPy functions), or a
            component-form one (``Indexed`` entries, ``Sum``).
        tangents: the tangent of each varying symbol (batched) or ``IndexedBase``
            (component form); every other symbol is a constant.

    Raises:
        DerivationError: for a node type without a rule (naming it).
    """
    return _R(expr, tangents)


def _R(e: sp.Expr, t: Mapping[sp.Basic, sp.Expr]) -> sp.Expr:
    if e.is_Symbol:
        return t.get(e, sp.S.Zero)
    if isinstance(e, sp.Indexed):  # component form: R{a1[j]} = Ra1[j]
        r = t.get(e.base)
        return r[e.indices] if r is not None else sp.S.Zero
    if e.is_Number:
        return sp.S.Zero
    if isinstance(e, sp.Sum):
        r = _R(e.function, t)
        return sp.Sum(r, *e.limits) if r != 0 else sp.S.Zero
    if e.is_Add:
        return sp.Add(*[_R(a, t) for a in e.args])
    if e.is_Mul:
        args = e.args
        terms = []
        for k, a in enumerate(args):
            ra = _R(a, t)
            if ra != 0:
                terms.append(sp.Mul(*args[:k], ra, *args[k + 1 :]))
        return sp.Add(*terms)
    if e.is_Pow:
        b, x = e.args
        rb, rx = _R(b, t), _R(x, t)
        out = x * b ** (x - 1) * rb if rb != 0 else sp.S.Zero
        if rx != 0:
            out += e * sp.log(b) * rx
        return out
    if isinstance(e, BMatMul):
        v, w, tr = e.args
        rv, rw = _R(v, t), _R(w, t)
        parts = []
        if rv != 0:
            parts.append(BMatMul(rv, w, tr))
        if rw != 0:
            parts.append(BMatMul(v, rw, tr))
        return sp.Add(*parts)
    if isinstance(e, BOuter):
        u, v = e.args
        ru, rv = _R(u, t), _R(v, t)
        parts = []
        if ru != 0:
            parts.append(BOuter(ru, v))
        if rv != 0:
            parts.append(BOuter(u, rv))
        return sp.Add(*parts)
    if isinstance(e, _LINEAR):
        r = _R(e.args[0], t)
        return e.func(r) if r != 0 else sp.S.Zero
    if isinstance(e, _PIECEWISE_CONSTANT):
        return sp.S.Zero
    rule = getattr(e, "_symgrad_tangent", None)
    if rule is not None:  # a node that states its own rule (reductions, component fallbacks)
        return rule(lambda x, tt=t: _R(x, tt), t)
    if isinstance(e, sp.Function | MinMaxBase):  # (max and min are not sp.Function)
        terms = []
        for k, a in enumerate(e.args, start=1):
            ra = _R(a, t)
            if ra != 0:
                try:
                    deriv = e.fdiff(k)
                except (sp.core.function.ArgumentIndexError, NotImplementedError) as exc:
                    raise DerivationError(f"no derivative rule for {e.func.__name__}") from exc
                if deriv.has(sp.Derivative, sp.Subs):  # SymPy's unevaluated fallback
                    raise DerivationError(f"no derivative rule for {e.func.__name__}")
                terms.append(deriv * ra)
        return sp.Add(*terms)
    raise DerivationError(f"no tangent rule for {type(e).__name__}")


__all__ = ["tangent", "tangent_name", "tangent_symbol"]
