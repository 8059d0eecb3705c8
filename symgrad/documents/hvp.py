"""Stage 7 (render), second order: the Hessian-vector derivation for ``derive --hvp``.

Every forward equation and backward step of the derivation, followed by its R-operator
(``calculus/forward.py``) in component form (one sample, indices) and in the batched
matrix form the generated ``hvp`` computes. A learner reads forward-over-reverse as
what it is: the backward pass differentiated once more, along the direction V.
"""

from __future__ import annotations

from symgrad.calculus.reverse import Derivation
from symgrad.derivations import equations, lower_hvp
from symgrad.ir.plain import MatrixText, plain

_INTRO = (
    "Hessian-vector product, forward-over-reverse: the R-operator "
    "R{q} = d/dr q(theta + r V) at r = 0 applied to every step, with R{theta} = V "
    "for each parameter and R{x} = R{y} = 0. Then R{dL/dtheta} = H V. Component forms are "
    "per sample (n_l is the width of layer l); batched forms hold the N samples of the "
    "batch in the rows of X, Y and every quantity."
)


class _BatchedText(MatrixText):
    """The generated code's batched expressions, the batch size written N as in the
    documents (the code's ``n``; ``n_l`` is a width)."""

    def _print_Symbol(self, expr):
        return "N" if expr.name == "N" else super()._print_Symbol(expr)


def matrix_text(expr) -> str:
    return _BatchedText().doprint(expr)


def _subscript(indices) -> str:
    return f"[{', '.join(str(i) for i in indices)}]" if indices else ""


def hvp_lines(d: Derivation) -> list[str]:
    """The HVP derivation as plain-text lines: each quantity's R-equation, component form
    (the derivation's program differentiated once more, ``Program.tangent``) then batched
    matrix form."""
    comp = {
        eq.target: f"{_subscript(eq.indices)} = {plain(eq.body)}"
        for eq in equations(d).tangent()
        if eq.phase == "tangent"
    }
    lines = [_INTRO, ""]
    for it in lower_hvp(d).items:
        target, expr, comment = it.target, it.expr, it.comment
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
