"""Slips in an activation's derivative: missing, applied twice, another activation's, or a
coupled activation's (softmax) taken elementwise."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from symgrad.ir.network import Network, Stage
from symgrad.ir.ops import step
from symgrad.learn.steps.report import _same
from symgrad.learn.steps.targets import BATCH
from symgrad.verify.stages import is_elementwise


def _layout(want: np.ndarray) -> str | None:
    """ "rows" for a batch of row vectors, "column" for one sample's column, else None."""
    if want.ndim == 2 and want.shape[0] == BATCH:
        return "rows"
    if want.ndim == 2 and want.shape[1] == 1:
        return "column"
    return None


def _per_sample(expr: Any, env: Mapping[str, Any], net: Network, free, ranges, layout: str):
    """A component expression evaluated for every sample of ``env``, as the layout's array
    (rows stacked, or one column)."""
    from symgrad.verify.evaluation import eval_component

    params = {p.name for p in net.params}

    def pick(v: Any, r: int) -> Any:
        if np.ndim(v) != 2:
            return v
        if layout == "rows" and np.shape(v)[0] == BATCH:
            return v[r]
        if layout == "column" and np.shape(v)[1] == 1:
            return v[:, 0]
        return v

    n = BATCH if layout == "rows" else 1
    rows: list[Any] = [
        eval_component(
            expr,
            {
                k: np.asarray(v if k in params else pick(v, r), dtype=float)
                for k, v in env.items()
                if isinstance(v, (np.ndarray, float, int))
            },
            dict(net.sizes),
            free,
            ranges,
        )
        for r in range(n)
    ]
    return np.stack(rows)  # (samples, ...): one row per sample


def _as_layout(per_sample: np.ndarray, layout: str) -> np.ndarray:
    """Rows as they are; one sample's vector as a column."""
    return per_sample if layout == "rows" else per_sample[0].reshape(-1, 1)


def _matches(gots, wants, st, transform: Callable[[np.ndarray, int], np.ndarray]) -> bool:
    """Whether every value equals ``transform(want, k)`` at one of the accepted scales."""
    for f in st.factors:
        if all(
            _same(g, transform(w, k) * f, st.rtol, st.atol)
            for k, (g, w) in enumerate(zip(gots, wants, strict=True))
        ):
            return True
    return False


def _hadamard(gots, wants, st, net: Network, before, *, alternatives: bool) -> str | None:
    """Is the learner's value the right one with an activation-derivative factor missing,
    doubled or replaced by another's; or a coupled activation's derivative taken
    elementwise?"""
    layout = _layout(wants[0])
    if layout is None or st.kind == "param" or st.step is None:
        return None  # an activation's derivative multiplies adjoints
    width = wants[0].shape[1] if layout == "rows" else wants[0].shape[0]
    for s in net.stages:
        if net.size(s.width) != width:
            continue
        if is_elementwise(s):
            hint = _elementwise_slip(gots, wants, st, net, before, s, layout, alternatives)
        elif alternatives and not s.params:
            hint = _coupled_slip(gots, st, net, before, s, layout)
        else:
            hint = None
        if hint:
            return hint
    return None


def _local(net: Network, s: Stage):
    from symgrad.verify.check import _local_target, formula_text

    local = _local_target(net, f"d{s.name}/d{s.inp}", s.name, str(s.inp))
    return local, formula_text(local.expr).replace("[i]", "")


def _elementwise_slip(gots, wants, st, net, before, s: Stage, layout, alternatives):
    local, shown = _local(net, s)
    if len(local.free) != 1:
        return None
    facs = [
        _as_layout(_per_sample(local.expr, env, net, local.free, local.ranges, layout), layout)
        for env in before
    ]
    deriv = f"d{s.name}/d{s.inp} = {shown}"
    if not alternatives:
        if _matches([g * f for g, f in zip(gots, facs, strict=True)], wants, st, lambda w, k: w):
            if local.expr.has(step):
                return (
                    f"a missing mask: multiply by ({s.inp} > 0), the activation's "
                    f"derivative {deriv} (elementwise *)"
                )
            return f"a missing Hadamard factor: the activation's derivative {deriv} (elementwise *)"
        if _matches(gots, wants, st, lambda w, k: w * facs[k]):
            return f"an extra factor {deriv}: it is applied twice"
        return None
    zs = [np.asarray(env[str(s.inp)], dtype=float) for env in before]
    As = [np.asarray(env[s.name], dtype=float) for env in before]
    options = {
        f"{s.name}*(1 - {s.name})": [a * (1 - a) for a in As],
        f"1 - {s.name}**2": [1 - a**2 for a in As],
        f"({s.inp} > 0)": [(z > 0).astype(float) for z in zs],
        f"{s.inp}*(1 - {s.inp})": [z * (1 - z) for z in zs],
        f"1 - {s.inp}**2": [1 - z**2 for z in zs],
    }
    for text, alt in options.items():
        if "".join(text.split()) == "".join(shown.split()):
            continue
        with np.errstate(all="ignore"):
            cands = [w / f * fa for w, f, fa in zip(wants, facs, alt, strict=True)]
        if all(np.all(np.isfinite(c)) for c in cands) and _matches(gots, cands, st, lambda w, k: w):
            return (
                f"the wrong activation derivative: you multiplied by {text} where {deriv} belongs"
            )
    return None


def _coupled_slip(gots, st, net: Network, before, s: Stage, layout) -> str | None:
    """A stage whose outputs each depend on all its inputs (softmax), differentiated as if
    elementwise: the upstream gradient times the Jacobian's diagonal only."""
    if st.upstream is None or st.step.wrt != str(s.inp):
        return None
    local, _ = _local(net, s)
    if len(local.free) != 2:
        return None
    cands = []
    for env, up in zip(before, st.upstream, strict=True):
        full = _per_sample(local.expr, env, net, local.free, local.ranges, layout)
        diag = _as_layout(np.einsum("sii->si", full), layout)
        cands.append(np.asarray(up, dtype=float) * diag)
    if _matches(gots, cands, st, lambda w, k: w):
        return (
            f"the derivative of {s.label} taken elementwise: d{s.name}[i]/d{s.inp}[i] is only "
            f"the diagonal of its Jacobian; every output of {s.label} depends on every input, "
            f"so d{s.inp} = d{s.name} @ (the full Jacobian d{s.name}/d{s.inp})"
        )
    return None
