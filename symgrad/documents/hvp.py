"""Rendering stage, second order: the Hessian-vector derivation for ``derive --hvp``.

Every forward equation and backward step of the derivation, followed by its R-operator
(``calculus/forward.py``) in component form (one sample, indices) and in the batched
matrix form the generated ``hvp`` computes. A learner reads forward-over-reverse as
what it is: the backward pass differentiated once more, along the direction V.
"""

from __future__ import annotations

import sympy as sp

from symgrad.backends.codegen import _free, comment_text
from symgrad.backends.targets import matrix_text, tangent_program
from symgrad.calculus.forward import tangent, tangent_name
from symgrad.calculus.reverse import Derivation
from symgrad.ir.conv import ArgMaxIs

_INTRO = (
    "Hessian-vector product, forward-over-reverse: the R-operator "
    "R{q} = d/dr q(theta + r V) at r = 0 applied to every step, with R{theta} = V "
    "for each parameter and R{x} = R{y} = 0. Then R{dL/dtheta} = H V."
)


def _in_values(r: sp.Expr, values: dict[sp.Expr, sp.Expr]) -> sp.Expr:
    """``r`` with forward expressions written as the quantities holding them, except
    inside an arg-max indicator (``[(u) = argmax_k f(k)]`` names the maximised body)."""
    keep = {a: sp.Dummy() for a in r.atoms(ArgMaxIs)}
    if not keep:
        return r.xreplace(values)
    return r.xreplace(keep).xreplace(values).xreplace({v: k for k, v in keep.items()})


def hvp_lines(d: Derivation) -> list[str]:
    """The HVP derivation as plain-text lines: each quantity's R-equation, component form
    then batched matrix form."""
    net = d.network
    tan: dict[sp.Basic, sp.Expr] = {
        p.base: sp.IndexedBase(tangent_name(p.name), real=True) for p in net.params
    }
    comp: dict[str, str] = {}
    values: dict[sp.Expr, sp.Expr] = {}  # f'(u) in forward values, as the derivation writes
    for f in d.forward:
        values[f.component] = f.stage.out[f.stage.index]
        r = _in_values(tangent(f.component, tan), values)
        if r != 0:
            tan[f.stage.out] = sp.IndexedBase(tangent_name(f.stage.name), real=True)
            comp[tangent_name(f.stage.name)] = f"[{_free(f.stage)}] = {comment_text(r)}"
    for s in d.steps:
        if not s.needed:
            continue
        r = _in_values(tangent(s.component, tan), values)
        if r != 0:
            name = sp.IndexedBase(s.grad, real=True)
            tan[name] = sp.IndexedBase(tangent_name(s.grad), real=True)
            idx = ", ".join(str(i) for i in s.indices)
            comp[tangent_name(s.grad)] = f"[{idx}] = {comment_text(r)}"
    items, _ = tangent_program(d)
    lines = [_INTRO, ""]
    for target, expr, comment in items:
        if not target.startswith("R"):
            lines.extend(f"  {c}" for c in comment)
            continue
        quantity = target[1:]
        if target in comp:
            lines.append(f"  R{{{quantity}}}{comp[target]}")
        lines.append(f"      batched: R{{{quantity}}} = {matrix_text(expr)}")
    return lines


def render_hvp(d: Derivation, to: str = "text") -> str:
    """The HVP derivation as a text section, or a Markdown section (a code block)."""
    lines = hvp_lines(d)
    if to == "markdown":
        body = "\n".join(lines[2:])
        return f"## Hessian-vector product\n\n{lines[0]}\n\n```text\n{body}\n```\n"
    return "\n".join(["Hessian-vector product", "=" * 22, *lines]) + "\n"
