"""What a steps file is graded against: random batches and the derived gradients."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from symgrad.errors import SpecError
from symgrad.ir.naming import adjoint_name, split
from symgrad.ir.network import Network

BATCH = 7  # a prime that is rarely a layer width, so a missing 1/N shows as a factor 7
POINTS = 2


def _aliases(grad: str, wrt: str, kind: str) -> list[str]:
    """The names a learner may give a derived gradient: symgrad's (``delta2``), ``dz2``, and
    the upper-case batch spelling ``dZ2`` (``dA1``, ``dX``); ``dyhat`` for the loss's."""
    base, layer = split(wrt)
    names = [grad, adjoint_name(wrt), "d" + wrt, "d" + base.upper() + layer]
    if kind == "loss":
        names += ["dyhat", "dYhat", "dy_hat"]
    if kind == "param":  # Nielsen's nabla_w2, nabla_b2; grad_W2
        names += [f"nabla_{base.lower()}{layer}", f"nabla_{wrt}", f"grad_{wrt}"]
    return list(dict.fromkeys(names))


@dataclass
class _Point:
    env: dict[str, Any]  # what the learner's lines may read
    targets: dict[str, np.ndarray]  # derived gradient name -> batched value
    sample_params: list[dict[str, np.ndarray]] = field(default_factory=list)  # per row


def _points(net: Network, d, seed: int) -> list[_Point]:
    """Random batches: forward values stacked as rows, and every derived gradient batched
    (adjoints are the per-sample ones over N, parameter gradients their mean)."""
    from symgrad.derivations import equations
    from symgrad.verify.evaluation import run_derivation, run_program_batch
    from symgrad.verify.verify import random_targets, target_domain

    rng = np.random.default_rng(seed)
    points = []
    for _ in range(POINTS):
        params = {p.name: rng.uniform(-1.0, 1.0, net.shape(p)) for p in net.params}
        xs = rng.normal(0.0, 1.0, (BATCH, net.size(net.input_width)))
        # class labels where the loss takes a distribution: learners write Y.argmax(1)
        onehot = "onehot" if target_domain(net) == "probabilities" else None
        ys = random_targets(net, BATCH, rng, onehot)
        coupled = any(s.sample is not None for s in net.stages)
        if coupled:  # batch statistics: the derivation's program run on the whole batch
            inputs = {**params, str(net.input): xs, str(net.loss.target): ys}
            whole, rowwise = run_program_batch(equations(d), inputs, net.sizes, BATCH)
        else:
            rows = [run_derivation(d, params, x, y)[1] for x, y in zip(xs, ys, strict=True)]
        env: dict[str, Any] = dict(params)
        forward = [str(net.input), str(net.loss.target), *(s.name for s in net.stages)]
        for name in forward:
            env[name] = whole[name] if coupled else np.stack([r[name] for r in rows])
            # the upper-case batch spelling (A1 for a1), unless a parameter has that name
            # (bilinear's A2 is its matrix parameter, not the batch of a2)
            env.setdefault(name.upper(), env[name])
        env["yhat"] = env["Yhat"] = env[str(net.output)]
        env["N"] = env["n"] = BATCH
        for sym, value in net.sizes.items():
            env.setdefault(str(sym), int(value))
        targets = {}
        for st in d.steps:
            if coupled and st.grad not in rowwise:  # already a sum over the batch's samples
                targets[st.grad] = whole[st.grad] / BATCH
                continue
            vals = whole[st.grad] if coupled else np.stack([r[st.grad] for r in rows])
            targets[st.grad] = vals.sum(axis=0) / BATCH if st.kind == "param" else vals / BATCH
        per_row = [] if coupled else [{s.grad: r[s.grad] for s in d.steps} for r in rows]
        points.append(_Point(env, targets, per_row))
    return points


_TARGET_WORDS = {
    "onehot": "one-hot rows, each class from rng.integers(0, {c}, {n})",
    "probabilities": "rows of rng.uniform(0.05, 1.0, ({n}, {c})), each divided by its sum",
    "unit": "rng.uniform(0.05, 0.95, ({n}, {c}))",
    "positive": "rng.uniform(0.1, 2.0, ({n}, {c}))",
    "real": "rng.normal(0.0, 1.0, ({n}, {c}))",
}


def drawn(net: Network, seed: int, layout: str = "rows") -> str:
    """How the random batches were drawn, in enough detail to draw them again."""
    from symgrad.verify.verify import target_domain

    domain = target_domain(net)
    domain = "onehot" if domain == "probabilities" else domain
    words = _TARGET_WORDS.get(domain, _TARGET_WORDS["real"])
    c = net.size(net.output_width)
    shapes = ", ".join(f"{p.name} {tuple(net.shape(p))}" for p in net.params)
    dims = tuple(int(k) for k in net.input_shape)
    as_shape = f".reshape({(BATCH, *dims)})" if len(dims) > 1 else ""
    text = (
        f"rng = np.random.default_rng({seed}); for each of the {POINTS} batches of N = "
        f"{BATCH}: the parameters rng.uniform(-1.0, 1.0, shape) in the order {shapes}, then "
        f"{net.input} = rng.normal(0.0, 1.0, ({BATCH}, {net.size(net.input_width)})){as_shape}, "
        "then "
        f"{net.loss.target} = {words.format(n=BATCH, c=c)}"
    )
    if layout == "column":
        text += "; sample k is row k of batch k (counting from 1), as a column"
    if layout == "batch-column":
        text += "; each batch transposed, its samples as columns"
    return text


#: Random batches of the last few derivations checked (building them runs the derivation
#: N times per batch; a class checking many files against one network builds them once).
_POINTS: dict[tuple[int, int], tuple[Any, list[_Point]]] = {}


def points(net: Network, d: Any, seed: int) -> list[_Point]:
    """The random batches of ``d`` (built once per derivation and seed)."""
    key = (id(d), seed)
    if key not in _POINTS or _POINTS[key][0] is not d:
        if len(_POINTS) >= 8:
            _POINTS.pop(next(iter(_POINTS)))
        _POINTS[key] = (d, _points(net, d, seed))
    return _POINTS[key][1]


def columns(net: Network, d: Any, batches: list[_Point]) -> list[_Point]:
    """The per-sample column-vector layout (Nielsen's): one sample of each batch, every
    vector a column ``(n, 1)`` (biases too), and the gradients of that sample's own loss
    (no 1/N); a weight matrix stays ``(out, in)``."""
    if batches and not batches[0].sample_params:
        return batch_columns(net, d, batches)
    out = []
    for r, pt in enumerate(batches):
        env = _column_env(net, pt, partial(_row_as_column, r=r))  # sample r alone
        env["N"] = env["n"] = 1
        targets = {}
        for st in d.steps:
            v = pt.targets[st.grad] * BATCH
            if st.kind == "param":  # the sample's own: rebuild it from its row's adjoints
                v = _sample_param_grad(net, st, pt, r)
            else:
                v = v[r][:, None] if np.ndim(v) == 2 else v
            targets[st.grad] = v
        out.append(_Point(env, targets))
    return out


def coupled(net: Network) -> bool:
    """Whether a layer couples the samples of a batch (batch norm's statistics)."""
    return any(s.sample is not None for s in net.stages)


def batch_columns(net: Network, d: Any, batches: list[_Point]) -> list[_Point]:
    """The batch with one sample per column (``X`` is ``(n_in, N)``, as in Andrew Ng's
    course): where a layer couples the samples (batch norm), one sample alone has no
    gradient, so the column layout transposes the whole batch. Every batch of rows is
    transposed, a parameter vector is a column ``(n, 1)``, a weight matrix stays
    ``(out, in)``, and the gradients are the batch's (the mean over its samples)."""
    out = []
    for pt in batches:
        env = _column_env(net, pt, lambda rows: rows.T)  # the whole batch, one column each
        env.setdefault("m", BATCH)
        targets = {}
        for st in d.steps:
            v = pt.targets[st.grad]
            targets[st.grad] = v.T if st.kind != "param" and np.ndim(v) == 2 else v
        out.append(_Point(env, targets))
    return out


def _row_as_column(rows: np.ndarray, r: int) -> np.ndarray:
    """Row ``r`` of a batch as a column ``(n, 1)``."""
    return rows[r][:, None]


def _column_env(
    net: Network, pt: _Point, batch: Callable[[np.ndarray], np.ndarray]
) -> dict[str, Any]:
    """``pt``'s values in the column layout: a parameter vector as a column ``(n, 1)``,
    weight matrices and values without a batch axis as they are, and each batch of rows
    ``(BATCH, n)`` through ``batch``."""
    params = {p.name for p in net.params}
    vectors = {p.name for p in net.params if len(net.shape(p)) == 1}
    env: dict[str, Any] = {}
    for k, v in pt.env.items():
        if k in vectors:
            env[k] = np.asarray(v, dtype=float)[:, None]
        elif k in params or np.ndim(v) != 2 or np.shape(v)[0] != BATCH:
            env[k] = v
        else:
            env[k] = batch(np.asarray(v, dtype=float))
    return env


def _sample_param_grad(net: Network, st: Any, pt: _Point, r: int) -> np.ndarray:
    """A parameter's gradient for sample ``r`` alone (the derivation evaluated on it)."""
    if not pt.sample_params:
        raise SpecError(
            f"{net.name}: the column layout (one sample at a time) does not fit a network "
            "whose layers couple the samples of a batch (batch norm): write batched rows"
        )
    return np.asarray(pt.sample_params[r][st.grad], dtype=float)


def _should_be(st) -> str:
    """The step's batched formula, in the NumPy subset a steps file is read in."""
    import sympy as sp

    from symgrad.backends.numpy_printer import SymgradNumPyPrinter
    from symgrad.calculus.conv_form import TENSOR_OPS
    from symgrad.documents.render import TextPrinter

    class _StepsPrinter(TextPrinter):
        """symgrad's text notation, with a conv net's array operations as the generated
        code calls them (``_correlate_weight_grad(delta1, _windows(x, ...))``)."""

        def _print(self, expr: Any, **kwargs: Any) -> str:
            if isinstance(expr, TENSOR_OPS):  # before the nodes' own _sympystr
                return SymgradNumPyPrinter()._print(expr)
            return super()._print(expr, **kwargs)

    e = st.batched
    if st.kind == "param" and st.indices:  # a penalty's part, W1[p, q]: the whole W1
        e = e.replace(
            lambda a: isinstance(a, sp.Indexed) and tuple(a.indices) == tuple(st.indices),
            lambda a: sp.Symbol(str(a.base.label)),
        )
    text = _StepsPrinter().doprint(e)
    return re.sub(r"colsum\((\w+)\)", r"\1.sum(axis=0)", text)


# -- judging ---------------------------------------------------------------------------------
