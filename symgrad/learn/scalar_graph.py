"""Writing the scalar explorer's expression graph: DOT always, SVG/PNG through Graphviz."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from symgrad.errors import SpecError
from symgrad.files import atomic_write, check_writable, with_marker


def _dot_escape(text: str) -> str:
    out = text
    for ch in '\\"{}|<>':
        out = out.replace(ch, "\\" + ch)
    return out


def write_graph(dot: str, path: str | os.PathLike[str], *, force: bool = False) -> list[str]:
    """Write DOT source beside ``path`` and render ``path`` (.svg or .png) with Graphviz.

    Both go through :mod:`symgrad.files` (atomic, marked, never clobbering a file symgrad
    did not write); every target is checked before anything is written.
    """
    from symgrad.documents.graph import render_graph

    target = Path(path)
    fmt = target.suffix.lower().lstrip(".")
    if fmt not in ("dot", "svg", "png"):
        raise SpecError(
            f"expected a .dot, .svg or .png file name, got {str(path)!r}", field="--graph"
        )
    folder = target.parent
    if not folder.is_dir():
        raise SpecError(
            f"cannot write {target}: folder {str(folder)!r} does not exist", field="--graph"
        )
    dot_path = target.with_suffix(".dot")
    check_writable(dot_path, force=force, fmt="dot")
    if fmt != "dot":
        check_writable(target, force=force, fmt=fmt)
    atomic_write(dot_path, with_marker(dot, "dot"), force=force, fmt="dot")
    written = [str(dot_path)]
    if fmt != "dot" and render_graph(dot, target, fmt, force=force):
        written.append(str(target))
    return written


# -- the entry point -----------------------------------------------------------------------


def graph_dot(nodes: Sequence[Any], fmt: Callable[[float], str]) -> str:
    """The expression graph in Graphviz DOT (``fmt`` prints a number)."""
    out = [
        "digraph scalar {",
        "  rankdir=LR;",
        '  node [fontname="Helvetica", fontsize=11];',
    ]
    for k, n in enumerate(nodes):
        grad = "" if n.grad is None else f" | grad {fmt(n.grad)}"
        label = f"{{ {_dot_escape(n.name)} | value {fmt(n.value)}{grad} }}"
        if n.op == "const":
            label = _dot_escape(n.name)
        fill = ', style=filled, fillcolor="#e8f0fe"' if n.op == "var" else ""
        if n.name == "f":
            fill = ', style=filled, fillcolor="#fde8e8"'
        out.append(f'  v{k} [shape=record, label="{label}"{fill}];')
        if n.children:
            out.append(f'  v{k}_op [shape=circle, label="{_dot_escape(n.op)}"];')
            out.append(f"  v{k}_op -> v{k};")
            for c in dict.fromkeys(n.children):
                out.append(f"  v{c} -> v{k}_op;")
    out.append("}")
    return "\n".join(out) + "\n"
