"""Printing: derivation -> Graphviz DOT of the computational graph (forward and backward).

:func:`to_dot` draws the chain of a :class:`~symgrad.derivation.Derivation`: the input
``x``, every stage output (``z1``, ``a1``, ...), the parameters as side branches feeding
their stage (``W1``, ``b1`` -> ``z1``), the target ``y`` and the loss ``L``. Forward edges
are solid; the backward flow of the adjoints runs along dashed red edges labelled with
the adjoint's name (``delta2``, ``dW2``, ...), grey where the code does not form that
adjoint (the fused loss gradient, ``dx``). :func:`render_graph` runs the ``dot`` program
when it is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from symgrad.calculus.reverse import Derivation
from symgrad.escape import dot_string

_FORWARD = 'color="black"'
_BACKWARD = 'style="dashed", color="red3", fontcolor="red3", constraint=false'
_UNUSED = 'style="dashed", color="gray55", fontcolor="gray40", constraint=false'


def _q(s: str) -> str:
    """A DOT quoted string (every name is user-controlled: see :mod:`symgrad.escape`)."""
    return dot_string(s)


def to_dot(d: Derivation) -> str:
    """The computational graph of a derivation in the Graphviz DOT language.

    Args:
        d: the derivation (``symgrad.derive(net)``).

    Returns:
        A ``digraph`` laid out left to right: nodes ``x``, each stage output, the
        parameters, ``y`` and ``L``; solid forward edges, dashed red backward edges
        labelled with the adjoints (``da2``, ``delta2``, ``dW2``, ``db2``, ``da1`` ...).
    """
    net = d.network
    out = str(net.output)
    lines = [
        f"digraph {_q(net.name)} {{",
        "  rankdir=LR;",
        '  graph [fontname="Helvetica", nodesep=0.35, ranksep=0.6];',
        '  node [fontname="Helvetica", fontsize=12];',
        '  edge [fontname="Helvetica", fontsize=10];',
        "",
        "  // forward graph",
        f'  {_q(str(net.input))} [shape=box, style=filled, fillcolor="lightgray", '
        f"label={_q(str(net.input))}];",
    ]
    for st in net.stages:
        label = _q(st.name)[1:-1] + "\\n" + _q(st.label)[1:-1]
        lines.append(f'  {_q(st.name)} [shape=ellipse, label="{label}"];')
        for p in st.params:
            lines.append(
                f'  {_q(p.name)} [shape=box, style="rounded,filled", fillcolor="lightyellow", '
                f"label={_q(p.name)}];"
            )
    target = str(net.loss.target.label)
    lines.append(f'  {_q(target)} [shape=box, style=filled, fillcolor="lightgray"];')
    loss_label = _q(net.loss.name)[1:-1]
    lines.append(f'  "L" [shape=doublecircle, label="L\\n{loss_label}"];')
    lines.append("")
    for st in net.stages:
        lines.append(f"  {_q(str(st.inp))} -> {_q(st.name)} [{_FORWARD}];")
        for p in st.params:
            lines.append(f"  {_q(p.name)} -> {_q(st.name)} [{_FORWARD}];")
    lines.append(f'  {_q(out)} -> "L" [{_FORWARD}];')
    lines.append(f'  {_q(target)} -> "L" [{_FORWARD}];')
    lines.append("")
    lines.append("  // backward flow of the adjoints")
    for s in d.steps:
        style = _BACKWARD if s.needed else _UNUSED
        label = s.grad if s.needed else f"{s.grad} (not formed)"
        if s.kind == "loss":
            src, dst = "L", s.wrt
        elif s.stage is not None:
            src, dst = s.stage.name, s.wrt
        else:  # pragma: no cover - every non-loss step has a stage
            continue
        lines.append(f"  {_q(src)} -> {_q(dst)} [{style}, label={_q(label)}];")
    lines.append("}")
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


__all__ = ["render_graph", "to_dot"]
