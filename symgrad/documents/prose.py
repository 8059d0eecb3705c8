# ruff: noqa: UP031 - %-formatting keeps LaTeX braces readable (no {{ }} doubling)
"""The documents' fixed prose: conventions, the chain rule, the four equations of
backpropagation, the recipe, and the short explanations given once per document (the
Hadamard product, the batch's 1/N, a shared parameter's sum over the samples, the common
mistakes). Each function returns the parts of one paragraph or display.
"""

from __future__ import annotations

from symgrad.documents.latex_printer import BATCH_LOSS, LOSS
from symgrad.documents.model import Code, Eq, M, Part, T

CHECK = "symgrad check"


def notation_parts(last_tex: str, last: str) -> list[Part]:
    return [
        "Layer ",
        M("l", "l"),
        " computes ",
        M(r"z^{[l]}", "z<l>"),
        " (pre-activation) and ",
        M(r"a^{[l]}", "a<l>"),
        " (activation); the network output is ",
        M(r"\hat{y} = %s" % last_tex, f"yhat = {last}"),
        " (written ",
        M(r"\hat{y}", "yhat"),
        " in the loss, ",
        M(last_tex, last),
        " in the backward pass), the target ",
        M("y", "y"),
        ". The adjoint of a quantity ",
        M("u", "u"),
        " is ",
        M(r"\partial %s / \partial u" % LOSS, "dl/du"),
        ", how the sample's loss changes with ",
        M("u", "u"),
        "; the adjoint of a pre-activation is called the error, ",
        M(r"\delta^{[l]} = \partial %s / \partial z^{[l]}" % LOSS, "delta<l> = dl/dz<l>"),
        ". The backward pass computes adjoints from the loss back to the input.",
    ]


def index_parts(zero_based: bool) -> list[Part]:
    first, last = ("0", "n - 1") if zero_based else ("1", "n")
    return [
        " In component form ",
        M(r"[i = k]", "[i == k]"),
        " is 1 if ",
        M("i = k", "i = k"),
        " and 0 otherwise (the Kronecker delta, written as a bracket so that ",
        M(r"\delta", "delta"),
        " always means an error). Indices run from %s to %s, the width of the quantity "
        "they index%s; a sum without bounds runs over the whole range."
        % (
            first,
            last,
            ", as in the code: position arithmetic is simplest from 0" if zero_based else "",
        ),
    ]


def matrix_parts(input_width_tex: str, input_width: str) -> list[Part]:
    return [
        T(
            "Matrix form, per sample: column vectors in bold, ",
            "Matrix form, per sample: vectors, ",
        ),
        M(r"\odot", "*"),
        " is the elementwise (Hadamard) product; functions, quotients and ",
        M(r"^{\odot 2}", "**2"),
        " act elementwise. The Jacobian ",
        M(r"\partial \mathbf{a} / \partial \mathbf{z}", "da/dz"),
        " has entries ",
        M(r"\partial a_i / \partial z_k", "da_i/dz_k"),
        ", so ",
        M(
            r"\partial %s / \partial \mathbf{z} = (\partial \mathbf{a} / "
            r"\partial \mathbf{z})^{\top}\, \partial %s / \partial \mathbf{a}" % (LOSS, LOSS),
            "dl/dz = (da/dz).T @ dl/da",
        ),
        ". Batched form: a batch of ",
        M("N", "N"),
        " samples in the rows of ",
        M(r"X \in \mathbb{R}^{N \times %s}" % input_width_tex, f"X (N x {input_width})"),
        " (likewise ",
        M(r"Z^{[l]}, A^{[l]}, Y", "Z, A, Y"),
        "; row ",
        M("s", "s"),
        " is sample ",
        M("s", "s"),
        ", written ",
        M(r"\mathbf{a}^{(s)}", "a(s)"),
        T(
            "), ",
            "; the batched formulas keep the lower-case names, so there a2 is the matrix A2), ",
        ),
        M(r"\mathbf{1}", "1"),
        " is a vector of ones (a column such as ",
        M(r"V\mathbf{1}", "rowsum(V)"),
        " is broadcast across columns). ",
        M(LOSS, "l"),
        " is the loss of one sample and ",
        M(BATCH_LOSS, "L"),
        " the mean loss over the batch: the per-sample forms differentiate ",
        M(LOSS, "l"),
        ", the batched forms ",
        M(BATCH_LOSS, "L"),
        " (which is why they carry its ",
        M(r"\frac{1}{N}", "1/N"),
        ").",
    ]


def chain_rule_parts() -> list[Part]:
    """The multivariable chain rule, stated once (at the first step that uses it)."""
    return [
        "Every step below is one use of the multivariable chain rule. A quantity ",
        M("u", "u"),
        " affects the loss only through the outputs ",
        M(r"v_1, \dots, v_n", "v[1], ..., v[n]"),
        " of the stage that reads it, and a change of ",
        M("u_k", "u[k]"),
        " moves every one of them, so its adjoint adds up the paths through all the outputs: ",
        M(
            r"\frac{\partial %s}{\partial u_k} = \sum_i \frac{\partial %s}{\partial v_i}"
            r" \frac{\partial v_i}{\partial u_k}" % (LOSS, LOSS),
            "dl/du[k] = sum_i (dl/dv[i] * dv[i]/du[k])",
        ),
        ". That is why each step sums over ",
        M("i", "i"),
        ": the upstream adjoint times the local derivative, summed over the stage's outputs.",
    ]


def hadamard_parts() -> list[Part]:
    return [
        "A diagonal matrix is its own transpose, and multiplying a vector by a diagonal "
        "matrix scales each entry: the matrix product becomes the elementwise (Hadamard) "
        "product ",
        M(r"\odot", "*"),
        ".",
    ]


def batch_mean_parts() -> list[Part]:
    return [
        "The batched form carries the ",
        M(r"\frac{1}{N}", "1/N"),
        " of the mean over the batch; every adjoint computed from it inherits it.",
    ]


def shared_param_parts() -> list[Part]:
    return [
        "The parameter is shared by all samples, so the gradient of the mean loss is the "
        "mean of the per-sample gradients (row ",
        M("s", "s"),
        " of a batched matrix is sample ",
        M("s", "s"),
        "). In the matrix product the ",
        M(r"\frac{1}{N}", "1/N"),
        " is not repeated: it lives in the batched adjoint, where the loss gradient put it.",
    ]


def mistake(text: str, formula_hint: str) -> tuple[Part, ...]:
    """A "Common mistake" note that points to ``symgrad check``."""
    return mistake_parts((text,), formula_hint)


def mistake_parts(parts: tuple[Part, ...], formula_hint: str = "") -> tuple[Part, ...]:
    """:func:`mistake` with a text made of parts (formulas among the words)."""
    return (
        T("Common mistake: ", "Common mistake: "),
        *parts,
        " ",
        Code(f"{CHECK} SPEC --grad NAME --formula '...'"),
        f" checks a hand-written formula against this derivation{formula_hint}.",
    )


def bp_general(matrix: bool) -> tuple[Eq, ...]:
    """BP1-BP4 for an affine layer and an elementwise activation."""
    if matrix:
        rows = [
            (
                r"\text{BP1}\quad \boldsymbol{\delta}^{[L]}",
                "BP1  delta<L>",
                r"\nabla_{\mathbf{a}^{[L]}} %s \odot f'(\mathbf{z}^{[L]})" % LOSS,
                "dl/da<L> * f'(z<L>)",
            ),
            (
                r"\text{BP2}\quad \boldsymbol{\delta}^{[l]}",
                "BP2  delta<l>",
                r"(W^{[l+1]\top} \boldsymbol{\delta}^{[l+1]}) \odot f'(\mathbf{z}^{[l]})",
                "(W<l+1>.T @ delta<l+1>) * f'(z<l>)",
            ),
            (
                r"\text{BP3}\quad \frac{\partial %s}{\partial \mathbf{b}^{[l]}}" % LOSS,
                "BP3  dl/db<l>",
                r"\boldsymbol{\delta}^{[l]}",
                "delta<l>",
            ),
            (
                r"\text{BP4}\quad \frac{\partial %s}{\partial W^{[l]}}" % LOSS,
                "BP4  dl/dW<l>",
                r"\boldsymbol{\delta}^{[l]} \mathbf{a}^{[l-1]\top}",
                "outer(delta<l>, a<l-1>)",
            ),
        ]
    else:
        rows = [
            (
                r"\text{BP1}\quad \delta^{[L]}_{k}",
                "BP1  delta<L>[k]",
                r"\frac{\partial %s}{\partial a^{[L]}_{k}} f'(z^{[L]}_{k})" % LOSS,
                "dl/da<L>[k] * f'(z<L>[k])",
            ),
            (
                r"\text{BP2}\quad \delta^{[l]}_{k}",
                "BP2  delta<l>[k]",
                r"\Big(\sum_{i} W^{[l+1]}_{ik} \delta^{[l+1]}_{i}\Big) f'(z^{[l]}_{k})",
                "(sum_i (W<l+1>[i, k]*delta<l+1>[i]))*f'(z<l>[k])",
            ),
            (
                r"\text{BP3}\quad \frac{\partial %s}{\partial b^{[l]}_{p}}" % LOSS,
                "BP3  dl/db<l>[p]",
                r"\delta^{[l]}_{p}",
                "delta<l>[p]",
            ),
            (
                r"\text{BP4}\quad \frac{\partial %s}{\partial W^{[l]}_{pq}}" % LOSS,
                "BP4  dl/dW<l>[p, q]",
                r"\delta^{[l]}_{p} a^{[l-1]}_{q}",
                "delta<l>[p]*a<l-1>[q]",
            ),
        ]
    return tuple(Eq((M(a, b), M(c, d))) for a, b, c, d in rows)


def bp_intro() -> tuple[Part, ...]:
    return (
        "For layers ",
        M(
            r"\mathbf{z}^{[l]} = W^{[l]} \mathbf{a}^{[l-1]} + \mathbf{b}^{[l]}",
            "z<l> = W<l> @ a<l-1> + b<l>",
        ),
        ", ",
        M(r"\mathbf{a}^{[l]} = f(\mathbf{z}^{[l]})", "a<l> = f(z<l>)"),
        " with an elementwise ",
        M("f", "f"),
        ", the backward pass is four equations (Nielsen's BP1-BP4): the error at the output "
        "(BP1), the error of a layer from the next one (BP2, the recursion), and the bias and "
        "weight gradients from the error (BP3, BP4). A full Jacobian (softmax, a map layer) "
        "replaces the factor ",
        M(r"f'(z)", "f'(z)"),
        " by a product with the transposed Jacobian.",
    )


def recipe() -> tuple[tuple[Part, ...], ...]:
    return (
        ("Loss gradient: ", M(r"\partial %s / \partial \hat{\mathbf{y}}" % LOSS, "dl/dyhat"), "."),
        (
            "Back through the activation: ",
            M(r"\boldsymbol{\delta}^{[l]}", "delta<l>"),
            " from the adjoint of ",
            M(r"\mathbf{a}^{[l]}", "a<l>"),
            " (BP1 at the output, BP2 below it).",
        ),
        (
            "Weight gradient: ",
            M(r"\boldsymbol{\delta}^{[l]} \mathbf{a}^{[l-1]\top}", "outer(delta<l>, a<l-1>)"),
            " (BP4).",
        ),
        ("Bias gradient: ", M(r"\boldsymbol{\delta}^{[l]}", "delta<l>"), " (BP3)."),
        (
            "Pass back: ",
            M(
                r"\partial %s / \partial \mathbf{a}^{[l-1]} = W^{[l]\top} \boldsymbol{\delta}^{[l]}"
                % LOSS,
                "dl/da<l-1> = W<l>.T @ delta<l>",
            ),
            ".",
        ),
        ("Repeat steps 2-5 for layer ", M("l - 1", "l-1"), ", down to layer 1."),
    )


def layer_jacobians_intro() -> tuple[Part, ...]:
    return (
        "Seen whole, layer ",
        M("l", "l"),
        " is a function ",
        M(r"\mathbf{a}^{[l]} = f_l(\mathbf{a}^{[l-1]}; \theta_l)", "a<l> = f_l(a<l-1>; theta_l)"),
        " with two Jacobians: with respect to its input (",
        M(r"\textcolor{blue}{\text{blue}}", "J<l>"),
        ", the one the adjoint is passed back through) and with respect to its parameters (",
        M(r"\textcolor{red}{\text{red}}", "da<l>/dtheta"),
        "). The gradient of a parameter is the loss gradient times the input Jacobians of "
        "the layers above it times its own parameter Jacobian.",
    )


def chain_reading() -> tuple[Part, ...]:
    return (
        "Read right to left, the chain is the forward sensitivity of the output to the "
        "parameter; read left to right it is the backward pass: the adjoint ",
        M(r"\partial %s / \partial \mathbf{a}^{[L]}" % LOSS, "dl/da<L>"),
        " is multiplied by one transposed Jacobian per layer, and each intermediate product "
        "is an adjoint the backward pass reuses for every parameter below it. A parameter "
        "Jacobian such as ",
        M(r"\partial \mathbf{z} / \partial W", "dz/dW"),
        " is a three-index array (",
        M(r"\partial z_i / \partial W_{pq} = [i = p]\, a_q", "dz[i]/dW[p, q] = [i == p]*a[q]"),
        "); contracted with the adjoint it gives the outer product of BP4.",
    )
