"""Printing: derivation -> Graphviz DOT of the computational graph (forward and backward).

:func:`to_dot` draws the chain of a :class:`~symgrad.derivation.Derivation`: the input
``x``, every stage output (``z⁽¹⁾``, ``a⁽¹⁾``, ...), the parameters as side branches
feeding their stage (``W⁽¹⁾``, ``b⁽¹⁾`` -> ``z⁽¹⁾``), the target ``y`` and the loss
``ℓ``, each node with its shape (``ℝ⁴``, ``4×3``). Forward edges are solid black. The
backward flow runs along dashed edges labelled in math (``δ⁽¹⁾``, ``∂ℓ/∂W⁽¹⁾``) with
the local Jacobian the adjoint is multiplied by: blue where an adjoint passes to a
layer's input (the input Jacobian, ``diag(f'(z)) W``), red where it becomes a parameter
gradient (the parameter Jacobian), as in the documents' layer-by-layer view. A legend
explains the colours. Node ids stay the IR names (``z1``, ``W1``) so that the DOT is
easy to script against. :func:`render_graph` runs the ``dot`` program when installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import sympy as sp

from symgrad.calculus.conv_form import CorrInputGrad, Unflatten, WindowMaxGrad, WindowSumGrad
from symgrad.calculus.reverse import Derivation, Step
from symgrad.documents.latex_printer import split_name
from symgrad.escape import dot_string
from symgrad.ir.plain import TextPrinter

_FORWARD = 'color="black"'
#: The adjoint passed back to a stage's input: the input Jacobian (blue).
_INPUT = 'style="dashed", color="blue3", fontcolor="blue3", constraint=false'
#: The adjoint turned into a parameter gradient: the parameter Jacobian (red).
_PARAM = 'style="dashed", color="red3", fontcolor="red3", constraint=false'
#: The loss gradient, the seed of the backward pass.
_SEED = 'style="dashed", color="gray30", fontcolor="gray20", constraint=false'

_SUP = str.maketrans("0123456789-+()", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺⁽⁾")
_SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
#: A line break inside a DOT label (kept out of f-string expressions: Python 3.11).
NL = "\n"
_GREEK = {"delta": "δ", "Delta": "Δ", "sigma": "σ", "gamma": "γ", "beta": "β"}


def _q(s: str) -> str:
    """A DOT quoted string (every name is user-controlled: see :mod:`symgrad.escape`);
    a newline becomes DOT's centred line break."""
    return dot_string(s)


def math_name(name: str, loss: str = "ℓ") -> str:
    """``delta1`` -> ``δ⁽¹⁾``, ``dW2`` -> ``∂ℓ/∂W⁽²⁾``, ``a1`` -> ``a⁽¹⁾``, ``x`` -> ``x``
    (``loss``: the loss the adjoints differentiate, one sample's ``ℓ`` or the batch's ``L``)."""
    adjoint, base, layer = split_name(name)
    kernel = _GREEK.get(base, base) + (f"({layer})".translate(_SUP) if layer else "")
    return f"∂{loss}/∂" + kernel if adjoint else kernel


def _size(w: sp.Expr, sizes: dict, sup: bool = False) -> str:
    v = sp.sympify(w).xreplace({k: sp.Integer(n) for k, n in sizes.items()})
    if v.is_Integer:
        return str(v).translate(_SUP) if sup else str(v)
    return re.sub(r"n_(\d+)", lambda m: "n" + m.group(1).translate(_SUB), str(v))


def _math_text(text: str, names: set[str], loss: str = "ℓ") -> str:
    """Plain-text math (``diag(a2*(1 - a2))``, ``W2.T @ delta2``) in Unicode."""
    text = re.sub(
        r"[A-Za-z_]\w*",
        lambda m: math_name(m.group(0), loss) if m.group(0) in names else m.group(0),
        text,
    )
    text = re.sub(r"outer\(([^(),]+), ([^(),]+)\)", r"\1 \2ᵀ", text)
    # the correlation as the documents write it (W ⋆ a, its transpose ⋆ᵀ)
    text = re.sub(r"corr_T\(([^(),;]+), ([^(),;]+)\)", r"\1 ⋆ᵀ \2", text)
    text = re.sub(r"corr\(([^(),;]+), ([^(),;]+)\)", r"\1 ⋆ \2", text)
    return text.replace(".T", "ᵀ").replace(" @ ", " ").replace("*", "⊙").replace(" - ", " − ")


def _jacobian_text(st: Step, d: Derivation, names: set[str], loss: str) -> str:
    """The local Jacobian of an input step as a whole-layer matrix, in Unicode."""
    if st.local is None:
        return ""
    jm = st.local_matrix
    if jm is None:
        return _tensor_jacobian(st)
    return _math_text(_text(jm), names, loss)


def _tensor_jacobian(st: Step) -> str:
    """A conv net's step in words where its Jacobian has no matrix to print."""
    forms = [f for f in (st.matrix,) if f is not None]
    for cls, words in (
        (Unflatten, "a permutation (reshape)"),
        (WindowMaxGrad, "to each window's arg-max"),
        (WindowSumGrad, "to every position of the window"),
        (CorrInputGrad, "W ⋆ᵀ (transposed correlation)"),
    ):
        if any(f.atoms(cls) for f in forms):
            return words
    if st.jacobian == "diagonal" and st.local is not None:
        return "diagonal: " + _text(st.local)
    return ""


def _text(e: sp.Basic) -> str:
    return str(TextPrinter().doprint(e))


def _label(st: Step, d: Derivation, names: set[str], loss: str) -> str:
    own = math_name(st.grad, loss)
    if st.kind == "loss":
        return own
    if st.kind == "param":
        if st.matrix is not None:
            return f"{own} = {_math_text(_text(st.matrix), names, loss)}"
        return own
    jac = _jacobian_text(st, d, names, loss)
    out = st.stage.name if st.stage is not None else ""
    return own + (f"{NL}J = ∂{math_name(out)}/∂{math_name(st.wrt)} = {jac}" if jac else "")


#: The graph's legend: what each edge style means.
_LEGEND = [
    "",
    "  // legend",
    "  subgraph cluster_legend {",
    '    label="legend"; fontsize=10; color="gray70";',
    '    "legend" [shape=plaintext, fontsize=10, label=<<TABLE BORDER="0" CELLSPACING="2">'
    '<TR><TD ALIGN="LEFT">── forward: values</TD></TR>'
    '<TR><TD ALIGN="LEFT"><FONT COLOR="blue3">- - adjoint to a layer input '
    "(input Jacobian J)</FONT></TD></TR>"
    '<TR><TD ALIGN="LEFT"><FONT COLOR="red3">- - parameter gradient '
    "(parameter Jacobian)</FONT></TD></TR>"
    '<TR><TD ALIGN="LEFT"><FONT COLOR="gray20">- - loss gradient (the seed)</FONT></TD></TR>'
    '<TR><TD ALIGN="LEFT">δ⁽ˡ⁾ = ∂ℓ/∂z⁽ˡ⁾ (the error); ∂ℓ/∂a = Jᵀ times the '
    "adjoint above</TD></TR></TABLE>>];",
    "  }",
    "}",
]


def _backward_edges(d: Derivation, names: set[str], loss: str) -> list[str]:
    """The dashed edges of the backward pass, each labelled with its adjoint and Jacobian."""
    lines: list[str] = []
    lines.append("  // backward flow of the adjoints")
    for s in d.steps:
        if s.kind == "loss":
            src, dst, style = "L", s.wrt, _SEED
        elif s.stage is not None:
            src, dst = s.stage.name, s.wrt
            style = _PARAM if s.kind == "param" else _INPUT
        else:  # pragma: no cover - every non-loss step has a stage
            continue
        lines.append(f"  {_q(src)} -> {_q(dst)} [{style}, label={_q(_label(s, d, names, loss))}];")
    for st in d.network.stages:  # a skip connection's share of an adjoint (the shares add up)
        for base, _ in st.extra:
            share = _q(f"+ to d{base}")
            lines.append(f"  {_q(st.name)} -> {_q(str(base))} [{_INPUT}, label={share}];")
    return lines


def to_dot(d: Derivation) -> str:
    """The computational graph of a derivation in the Graphviz DOT language.

    Args:
        d: the derivation (``symgrad.derive(net)``).

    Returns:
        A ``digraph`` laid out left to right: nodes ``x``, each stage output, the
        parameters, ``y`` and the loss ``ℓ`` (labelled in math with their shapes); solid forward
        edges; dashed backward edges labelled with the adjoints and local Jacobians, blue
        to a stage's input, red to a parameter; and a legend.
    """
    net = d.network
    sizes = dict(net.sizes)
    out = str(net.output)
    names = {str(net.input), str(net.loss.target.label), *(st.name for st in net.stages)}
    names |= {p.name for p in net.params} | {st.grad for st in d.steps}
    names |= {"d" + st.wrt for st in d.steps}
    lines = [
        f"digraph {_q(net.name)} {{",
        "  rankdir=LR;",
        '  graph [fontname="Helvetica", nodesep=0.35, ranksep=0.7];',
        '  node [fontname="Helvetica", fontsize=12];',
        '  edge [fontname="Helvetica", fontsize=10];',
        "",
        "  // forward graph",
        f'  {_q(str(net.input))} [shape=box, style=filled, fillcolor="lightgray", '
        f"label={_q(math_name(str(net.input)) + NL + 'ℝ' + _size(net.input_width, sizes, True))}];",
    ]
    for st in net.stages:
        label = f"{math_name(st.name)} ∈ ℝ{_size(st.width, sizes, True)}{NL}{st.label}"
        dil = dict(st.attrs).get("dilation", ())
        if any(v != 1 for v in dil):  # a dilated conv says so (taps dil apart)
            label += f", dilation {'×'.join(str(v) for v in dil)}"
        lines.append(f"  {_q(st.name)} [shape=ellipse, label={_q(label)}];")
        for p in st.params:
            shape = "×".join(_size(w, sizes) for w in p.shape) or "1"
            lines.append(
                f'  {_q(p.name)} [shape=box, style="rounded,filled", fillcolor="lightyellow", '
                f"label={_q(math_name(p.name) + NL + shape)}];"
            )
    target = str(net.loss.target.label)
    lines.append(
        f'  {_q(target)} [shape=box, style=filled, fillcolor="lightgray", '
        f"label={_q(target + NL + 'ℝ' + _size(net.output_width, sizes, True))}];"
    )
    # one sample's loss, as the per-sample Jacobians on the edges differentiate it; a
    # network whose stage couples the samples has only the batch's mean loss L
    loss = "L" if any(st.sample is not None for st in net.stages) else "ℓ"
    lines.append(f'  "L" [shape=box, style="rounded,bold", label={_q(loss + NL + net.loss.name)}];')
    lines.append("")
    for st in net.stages:
        lines.append(f"  {_q(str(st.inp))} -> {_q(st.name)} [{_FORWARD}];")
        for base, _ in st.extra:  # skip connections (residual blocks): a DAG
            lines.append(f"  {_q(str(base))} -> {_q(st.name)} [{_FORWARD}];")
        for p in st.params:
            lines.append(f"  {_q(p.name)} -> {_q(st.name)} [{_FORWARD}];")
    lines.append(f'  {_q(out)} -> "L" [{_FORWARD}];')
    lines.append(f'  {_q(target)} -> "L" [{_FORWARD}];')
    lines.append("")
    lines += _backward_edges(d, names, loss)
    lines += [line.replace("∂ℓ/", f"∂{loss}/") for line in _LEGEND]
    return "\n".join(lines) + "\n"


def render_graph(dot: str, path: str | Path, fmt: str = "svg", *, force: bool = False) -> bool:
    """Render DOT source with Graphviz's ``dot`` program into ``path``, atomically.

    Graphviz writes to a pipe, never to ``path``: the image goes through
    :func:`symgrad.files.atomic_write_bytes` (temporary file beside ``path``, then a rename;
    a symbolic link is never written through). An SVG starts with symgrad's marker comment;
    a PNG cannot carry one, so an existing PNG is replaced only with ``force``.

    Args:
        dot: the DOT source (``to_dot(d)``).
        path: the output file.
        fmt: a Graphviz output format (``"svg"``, ``"png"`` ...).
        force: replace an existing file that symgrad did not generate.

    Returns:
        True when the file was written; False when ``dot`` is not installed or failed.

    Raises:
        SpecError: ``path`` must not be written (see :func:`symgrad.files.check_writable`).
    """
    from symgrad.files import atomic_write, atomic_write_bytes, check_writable, with_marker

    exe = shutil.which("dot")
    if exe is None:
        return False
    check_writable(path, force=force, fmt=fmt)
    try:
        proc = subprocess.run(
            [exe, f"-T{fmt}"],
            input=dot.encode("utf-8"),
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    if proc.returncode != 0 or not proc.stdout:
        return False
    if fmt == "svg":
        atomic_write(path, with_marker(proc.stdout.decode("utf-8"), "svg"), force=force, fmt=fmt)
    else:
        atomic_write_bytes(path, proc.stdout, force=force, fmt=fmt)
    return True


def svg_of(dot: str) -> str | None:
    """The SVG text of DOT source (for inlining into a page), or None without ``dot``."""
    exe = shutil.which("dot")
    if exe is None:
        return None
    try:
        proc = subprocess.run(
            [exe, "-Tsvg"], input=dot.encode("utf-8"), capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.decode("utf-8")


__all__ = ["math_name", "render_graph", "svg_of", "to_dot"]
