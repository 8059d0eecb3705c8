"""Naming the slip: the classic mistakes tried on the learner's own line."""

from __future__ import annotations

from itertools import chain

import numpy as np

from symgrad.ir.network import Network
from symgrad.learn.steps import conv_slips
from symgrad.learn.steps.activation import _hadamard
from symgrad.learn.steps.evaluate import _run, _Shape
from symgrad.learn.steps.parse import LearnerLine
from symgrad.learn.steps.printer import unparse
from symgrad.learn.steps.report import _same
from symgrad.learn.steps.targets import BATCH
from symgrad.learn.steps.variants import _edits, _swaps, column_sum_edits

# -- naming the slip: try the classic mistakes on the learner's own line ---------------------


def _diagnose(span, before, wants, st, net: Network, by_alias) -> tuple[str | None, str | None]:
    """(the likely slip, the corrected lines) for a wrong step, or a factor description.

    ``span`` is the run of lines from the step's first assignment to its last (other lines
    between them included: they run as written); the edits are tried on the step's own."""
    name = span[-1].target
    mine = [k for k, s in enumerate(span) if s.target == name]
    group = [span[k] for k in mine]

    def edited(new_group: list[LearnerLine]) -> list[LearnerLine]:
        out = list(span)
        for k, s in zip(mine, new_group, strict=True):
            out[k] = s
        return out

    def right(new_group) -> bool:
        try:
            for env, want in zip(before, wants, strict=True):
                got = _run(edited(new_group), dict(env))
                if not any(_same(got, want * f, st.rtol, st.atol) for f in st.factors):
                    return False
        except (_Shape, KeyError, ValueError, TypeError, ZeroDivisionError):
            return False
        return True

    def fixed(new_group) -> str:
        return "; ".join(_line_text(s) for s in new_group)

    gots: list[np.ndarray] = []
    raw: list[np.ndarray] = []  # as the learner shaped them
    for env in before:
        try:
            got = np.asarray(_run(span, dict(env)), dtype=float)
        except (_Shape, KeyError):
            gots = raw = []
            break
        want = wants[len(gots)]
        raw.append(got)
        gots.append(got.reshape(want.shape) if got.size == want.size else got)
    if raw:
        hint = conv_slips.flatten_order(raw, wants)
        if hint:
            return hint, None
    if gots and all(g.shape == w.shape for g, w in zip(gots, wants, strict=True)):
        hint = _factor_or_hadamard(gots, wants, st, net, before)
        if hint:
            return hint, None
    swaps = _swaps(net, before[0])
    for name_, more in st.swaps.items():
        swaps.setdefault(name_, []).extend(more)
    edits = chain(
        conv_slips.flip_edits(group, net),
        _edits(group, st, swaps, st.made),
        conv_slips.axis_edits(group),
        column_sum_edits(group),
    )
    for new, why in edits:
        if right(new):
            return why, fixed(new)
    if gots and all(g.shape == w.shape for g, w in zip(gots, wants, strict=True)):
        hint = _hadamard(gots, wants, st, net, before, alternatives=True)
        if hint:
            return hint, None
    return None, None


def _line_text(s: LearnerLine) -> str:
    at = f"[{', '.join(_unparse_subscript(i) for i in s.index)}]" if s.index else ""
    return f"{s.target}{at} {s.op} {unparse(s.expr)}"


def _unparse_subscript(item: tuple) -> str:
    from symgrad.learn.steps.printer import _unparse_item

    return _unparse_item(item, unparse)


def _factor_or_hadamard(gots, wants, st, net: Network, before) -> str | None:
    """A constant factor (1/N, the sign, a width) or a missing / doubled activation
    derivative, read off the values."""
    c = _factor(gots, wants, max(1e-7, st.rtol))
    if c is not None:
        word = _factor_slip(c, st, net)
        if word:
            return word
    if st.step is None:
        return None
    return _hadamard(gots, wants, st, net, before, alternatives=False)


def _factor(gots: list[np.ndarray], wants: list[np.ndarray], rtol: float = 1e-7) -> float | None:
    """The constant ``c`` with every value ``c`` times the right one (to ``rtol`` of the
    largest), or None."""
    ratios = []
    for g, w in zip(gots, wants, strict=True):
        scale = float(np.max(np.abs(w), initial=0.0))
        big = np.abs(w) > 0.1 * scale
        if scale == 0 or not np.all(np.isfinite(g)):
            return None
        ratios.append(g[big] / w[big])
    c = float(np.median(np.concatenate(ratios)))
    if c == 0:
        return None
    for g, w in zip(gots, wants, strict=True):
        scale = float(np.max(np.abs(w), initial=0.0))
        if np.any(np.abs(g - c * w) > rtol * abs(c) * scale):
            return None
    return c


def _scale_words(cc: float, widths: dict[int, str]) -> str | None:
    """A factor 2 (the square's) or a width (a mean's) too many or too few; where both fit
    (a width of 2), the likelier first and the other named too."""
    r, inv = round(cc), round(1 / cc) if cc else 0
    width_more = abs(cc - r) < 1e-9 and r > 1 and r in widths
    width_less = abs(1 / cc - inv) < 1e-9 and inv > 1 and inv in widths if cc else False
    if np.isclose(cc, 0.5):
        also = f" (or 1/{widths[2]} once too often: {widths[2]} = 2 here)" if width_less else ""
        return "a missing factor 2 (the derivative of the square)" + also
    if width_more:
        also = " (or a factor 2 too many: the same number here)" if r == 2 else ""
        return f"a missing 1/{widths[r]}: the loss is the mean over the {r} outputs too" + also
    if np.isclose(cc, 2.0):
        return "a factor 2 too many"
    if width_less:
        return f"1/{widths[inv]} once too often"
    return None


def _factor_slip(c: float, st, net: Network) -> str | None:
    widths = {int(v): str(k) for k, v in net.sizes.items()}
    adjoint = st.kind != "param"
    if np.isclose(c, -1.0) or (adjoint and np.isclose(c, -BATCH)):
        return f"the sign: yours is -1 times {st.grad}"
    if st.kind == "param" and np.isclose(c, BATCH):
        return "a missing 1/N: the loss is the mean over the batch, so divide by N"
    if np.isclose(c, 1.0 / BATCH) or (adjoint and np.isclose(c, 1.0 / BATCH**2)):
        return "1/N twice: divide by N once (in the loss gradient or in the sums, not both)"
    for cc in (c, c / BATCH) if adjoint else (c,):
        words = _scale_words(cc, widths)
        if words:
            return words
    return f"a constant factor: yours is {c:.6g} times {st.grad}"
