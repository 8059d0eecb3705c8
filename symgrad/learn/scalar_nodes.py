"""The scalar explorer's expression graph: one node per distinct sub-expression, its value
on the way forward and its gradient (upstream gradient times local derivative, summed over
the node's uses) on the way back."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass

import sympy as sp

from symgrad.learn.scalar_kinks import MAX_EXPANDED_TERMS, expanded_terms
from symgrad.learn.scalar_values import _fmt, _safe_float, _safe_sympy_float

#: Expressions larger than this (operation count) are not passed to sp.simplify.
SIMPLIFY_LIMIT = 60


@dataclass(frozen=True)
class Node:
    """One node of the expression graph.

    Attributes:
        name: ``x`` for a variable, ``n1, n2 ...`` for intermediate results, ``f`` for the
            whole expression, the number itself for a constant.
        expr: the sub-expression (as written).
        op: ``var``, ``const``, ``+``, ``*``, ``**``, or a function name.
        definition: the node in terms of its children's names (``n2 = 3*n1``).
        children: indices of the children in :attr:`ScalarResult.nodes`.
        value: the forward value at the point.
        grad: df/d(node) at the point (None for constants).
        grad_expr: df/d(node) symbolically (in the variables).
        locals: for each child, the local derivative d(node)/d(child) (symbolic, numeric).
    """

    name: str
    expr: sp.Expr
    op: str
    definition: str
    children: tuple[int, ...]
    value: float
    grad: float | None
    grad_expr: sp.Expr | None
    locals: tuple[tuple[sp.Expr, float], ...]


def _op(expr: sp.Expr) -> str:
    if expr.is_Symbol:
        return "var"
    if expr.is_Number:
        return "const"
    if isinstance(expr, sp.Add):
        return "+"
    if isinstance(expr, sp.Mul):
        return "*"
    if isinstance(expr, sp.Pow):
        return "**"
    return str(expr.func).lower() if expr.func is not sp.Abs else "abs"


def _definition(expr: sp.Expr, names: list[str]) -> str:
    op = _op(expr)
    if op in ("+", "*"):
        return f" {op} ".join(names)
    if op == "**":
        return f"{names[0]}**{names[1]}"
    return f"{op}({', '.join(names)})"


def _local_derivatives(expr: sp.Expr) -> tuple[sp.Expr, ...]:
    """d(node)/d(child_k) for each child, in terms of the children (evaluated SymPy)."""
    dummies = [sp.Dummy(f"u{k}", real=True) for k in range(len(expr.args))]
    node = expr.func(*dummies)
    back = {u: a.doit() for u, a in zip(dummies, expr.args, strict=True)}
    return tuple(_tidy(sp.diff(node, u).xreplace(back)) for u in dummies)


def _tidy(expr: sp.Expr) -> sp.Expr:
    """A readable form, cheaply: like terms collected (``sp.simplify`` can take a minute on
    ``sqrt(x**2 + y**2)*cosh(x - y)/(1 + abs(y))``, and a learner waits for every node)."""
    if sp.count_ops(expr) > SIMPLIFY_LIMIT:
        return expr
    forms = [expr]
    rewrites: list[Callable[[sp.Expr], sp.Expr]] = [lambda e: sp.factor_terms(sp.together(e))]
    if expanded_terms(expr) <= MAX_EXPANDED_TERMS:  # (a + ... + h)**64 would never end
        rewrites.append(sp.expand)
    for rewrite in rewrites:
        with suppress(Exception):  # rewriting can fail on Heaviside/Max corner cases
            forms.append(rewrite(expr))
    return min(forms, key=sp.count_ops)  # the shortest; ties go to the form as derived


def _topological(root: sp.Expr) -> list[sp.Expr]:
    """Distinct sub-expressions, children before parents (identical ones merged)."""
    order: list[sp.Expr] = []
    seen: set[sp.Expr] = set()
    stack: list[tuple[sp.Expr, bool]] = [(root, False)]
    while stack:
        e, done = stack.pop()
        if done:
            if e not in seen:
                seen.add(e)
                order.append(e)
            continue
        if e in seen:
            continue
        stack.append((e, True))
        stack.extend((a, False) for a in reversed(e.args))
    return order


def _build_graph(
    root: sp.Expr, point: Mapping[sp.Symbol, float]
) -> tuple[tuple[Node, ...], dict[sp.Symbol, sp.Expr]]:
    order = _topological(root)
    pos = {e: k for k, e in enumerate(order)}
    names: list[str] = []
    counter = 0
    for e in order:
        if e.is_Symbol:  # a variable keeps its name, even when it is all of f
            names.append(str(e))
        elif e is root or e == root:
            names.append("f")
        elif e.is_Number:
            names.append(_fmt(float(e)))
        else:
            counter += 1
            names.append(f"n{counter}")
    values = [_safe_float(e, point) for e in order]
    local = [_local_derivatives(e) if e.args else () for e in order]
    num_point = {s: sp.Float(v) for s, v in point.items()}
    local_values = [tuple(_safe_sympy_float(d, num_point) for d in loc) for loc in local]
    # Backward: reverse topological order; each node passes grad * local to its children.
    grad_expr: list[sp.Expr] = [sp.S.Zero] * len(order)
    grad_val = [0.0] * len(order)
    grad_expr[-1], grad_val[-1] = sp.S.One, 1.0
    for k in range(len(order) - 1, -1, -1):
        for c, d, dv in zip(order[k].args, local[k], local_values[k], strict=True):
            ci = pos[c]
            grad_expr[ci] = grad_expr[ci] + grad_expr[k] * d
            grad_val[ci] += grad_val[k] * dv
    nodes = []
    for k, e in enumerate(order):
        const = e.is_Number
        nodes.append(
            Node(
                name=names[k],
                expr=e,
                op=_op(e),
                definition=_definition(e, [names[pos[a]] for a in e.args]) if e.args else "",
                children=tuple(pos[a] for a in e.args),
                value=values[k],
                grad=None if const else grad_val[k],
                grad_expr=None if const else _tidy(grad_expr[k]),
                locals=tuple(zip(local[k], local_values[k], strict=True)),
            )
        )
    return tuple(nodes), {e: grad_expr[pos[e]] for e in order if e.is_Symbol}
