"""Comparing a learner's value with the right one: names, scales, shapes, a counterexample."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from symgrad.learn.steps.evaluate import _shape_text
from symgrad.learn.steps.parse import LearnerLine
from symgrad.learn.steps.targets import BATCH, _should_be

#: The longest formula shown as "should be"; a longer one is described instead.
MAX_SHOWN = 120


def should_be_short(
    st: Any,
    yours: Mapping[str, str],
    layout: str = "rows",
    steps: Mapping[str, Any] | None = None,
    written: Collection[str] = (),
) -> str:
    """The step's formula in the learner's names and layout (batched rows, or one sample's
    columns), or, where it is long (batch norm's, a fallback einsum), the chain rule it
    applies, in words.

    An adjoint the formula reads that the learner never wrote (``da1`` in Nielsen's code,
    which goes from ``delta2`` to ``delta1`` in one line) is replaced by its own formula
    (``W2.T @ delta2``), so that the text reads only the learner's names."""
    text = _form(st, layout)
    if steps:
        text = _inline_unwritten(text, st, steps, yours, written, layout)
    text = _in_your_names(text, yours)
    # a sum over the samples in component form (batch norm's) is no batch-column NumPy
    indexed = layout == "batch-column" and "[" in text
    if len(text) <= MAX_SHOWN and not indexed:
        return text
    stage = getattr(st, "stage", None)
    up = yours.get(st.upstream, st.upstream) if st.upstream else None
    size = "rows: derive --form matrix prints it" if indexed else f"{len(text)} characters"
    if stage is None or up is None:
        return f"{st.grad}'s batched formula ({size}: see derive --form matrix)"
    what = "its parameter " + yours.get(st.wrt, st.wrt) if st.kind == "param" else st.wrt
    how = (
        "its batched formula, in rows, is what derive --form matrix prints"
        if indexed
        else f"the batched formula is {len(text)} characters: derive --form matrix prints it"
    )
    return (
        f"{up} pulled back through layer {stage.layer} ({stage.label}: "
        f"{yours.get(stage.name, stage.name)} from {yours.get(str(stage.inp), str(stage.inp))})"
        f" to {yours.get(what, what)} ({how})"
    )


def _form(st: Any, layout: str) -> str:
    """The step's formula: batched rows, one sample's columns, or (``"batch-column"``) a
    batch with its samples as columns, where a vector parameter's per-sample gradient is
    summed over them (a matrix's outer product ``delta1 @ x.T`` sums them already)."""
    if layout == "rows":
        return _should_be(st)
    text = _column_form(st)
    if layout == "batch-column" and st.kind == "param" and "@" not in text:
        inner = text if re.fullmatch(r"\w+", text) else f"({text})"
        return f"{inner}.sum(axis=1, keepdims=True)"
    return text


def _inline_unwritten(
    text: str,
    st: Any,
    steps: Mapping[str, Any],
    yours: Mapping[str, str],
    written: Collection[str],
    layout: str,
) -> str:
    """``text`` with each adjoint the learner never wrote replaced by its formula (in
    parentheses where it is more than a name), at most three levels deep."""
    for _ in range(3):
        unwritten = [
            g
            for g, other in steps.items()
            if g != st.grad
            and other.kind != "param"
            and g not in yours
            and g not in written
            and re.search(rf"\b{re.escape(g)}\b", text)
        ]
        if not unwritten:
            return text
        for g in unwritten:
            inner = _form(steps[g], layout)
            inner = inner if re.fullmatch(r"\w+", inner) else f"({inner})"
            text = re.sub(rf"\b{re.escape(g)}\b", inner.replace("\\", r"\\"), text)
    return text


def _column_form(st: Any) -> str:
    """The per-sample matrix form, vectors as columns: ``outer(delta2, a1)`` is
    ``delta2 @ a1.T``."""
    from symgrad.documents.render import TextPrinter

    if getattr(st, "matrix", None) is None:
        return _should_be(st)
    text = TextPrinter().doprint(st.matrix)
    return re.sub(r"outer\((\w+), (\w+)\)", r"\1 @ \2.T", text)


def _in_your_names(text: str, yours: Mapping[str, str]) -> str:
    """symgrad's formula with the learner's names for the gradients (``delta1`` -> ``dz1``)."""
    for grad, name in yours.items():
        if grad != name:
            text = re.sub(rf"\b{re.escape(grad)}\b", name, text)
    return text


def _per_sample_scale(gots: list[Any], wants: list[np.ndarray]) -> bool:
    """Whether the learner's (wrong) adjoint is nearer N x the right one than the right one."""
    g = float(np.linalg.norm(np.asarray(gots[0], dtype=float)))
    w = float(np.linalg.norm(wants[0]))
    if not (np.isfinite(g) and g > 0 and w > 0):
        return False
    return abs(np.log(g / (w * BATCH))) < abs(np.log(g / w))


def _plain(group: list[LearnerLine], st) -> bool:
    """Whether the learner wrote it as symgrad's batched formula does (up to spaces)."""
    # X and x, A1 and a1 name the same batch: compare without case
    mine = "".join(group[0].text.split("=", 1)[1].split()).lower()
    return len(group) == 1 and mine == "".join(_should_be(st).split()).lower()


def _shape_note(got: Any, want: np.ndarray, grad: str) -> str | None:
    g = np.shape(got)
    if g == want.shape or np.size(got) == want.size:
        return None
    have = "is a number" if not g else f"has shape {_shape_text(got)}"
    return f"yours {have}; {grad} has shape {_shape_text(want)}"


def _counterexample(gots: list[Any], wants: list[np.ndarray], layout: str = "rows") -> str | None:
    for k, (g, w) in enumerate(zip(gots, wants, strict=True), start=1):
        g = np.asarray(g, dtype=float)
        if g.shape != w.shape:
            if g.size != w.size:
                continue
            g = g.reshape(w.shape)
        with np.errstate(invalid="ignore"):
            diff = np.abs(g - w)
        diff = np.where(np.isfinite(diff), diff, np.inf)
        if diff.size and float(diff.max()) > 0:
            pos = np.unravel_index(int(np.argmax(diff)), w.shape)
            at = ", ".join(map(str, pos))
            where = f"random batch {k}" if layout == "rows" else f"random sample {k}"
            return f"{where}, entry [{at}]: yours = {g[pos]:.8g}, right = {w[pos]:.8g}"
    return None
