"""The learner's own forward pass: checked against the network, differentiated for its
intermediates.

A steps file may start with the forward pass in the same NumPy subset (``hprebn = embcat @
W1 + b1``, ``bnmeani = hprebn.mean(0, keepdims=True)`` ... ``loss = -logprobs[range(n),
Yb].mean()``). Its loss (the last number it computes) must be the network's loss on the
same batch; then every name it assigns has a gradient, ``dNAME = dL/dNAME``, taken through
the learner's own lines by central differences (agreement to about 1e-9 of the
gradient's size).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from symgrad.ir.network import Network
from symgrad.learn.steps.evaluate import _run
from symgrad.learn.steps.parse import LearnerLine
from symgrad.learn.steps.variants import _names, _rename

#: The difference step, relative to the value's size (taken as at least 1e-2); fourth-order
#: central differences: an error of about FD_STEP**4 of the gradient's size, rounding about
#: 1e-16 / FD_STEP.
FD_STEP = 1e-3
#: Agreement asked of a gradient taken by differences: relative, and absolute (the loss is
#: O(1), so 1e-8 is far below any slip and far above the differences' rounding).
FD_RTOL = 1e-6
FD_ATOL = 1e-8


FROZEN = " frozen"  # a name no file can write: a value held fixed


@dataclass
class Forward:
    """The forward part of a steps file."""

    stmts: list[LearnerLine]
    loss: LearnerLine | None = None  # the line that computes the loss (a number)
    names: set[str] = field(default_factory=set)  # every name it assigns
    renames: dict[str, str] = field(default_factory=dict)  # bngain -> gamma2 (a parameter)

    def defines(self, name: str) -> bool:
        return self.loss is not None and name in self.names


def is_backward(s: LearnerLine, assigned: set[str], gradients: set[str]) -> bool:
    """Whether ``s`` is a line of the backward pass: it assigns a gradient symgrad knows, or
    ``dNAME`` for a NAME assigned before."""
    t = s.target
    if s.op == "def":
        return False
    return t in gradients or (t.startswith("d") and t[1:] in assigned) or t.startswith("delta")


def split(stmts: list[LearnerLine], gradients: set[str], params: set[str]) -> Forward:
    """The statements before the first backward one (the learner's forward pass)."""
    assigned: set[str] = set()
    k = 0
    while k < len(stmts) and not is_backward(stmts[k], assigned, gradients):
        assigned.add(stmts[k].target)
        k += 1
    fwd = Forward(stmts[:k])
    for s in fwd.stmts:
        if s.op == "def":
            continue
        fwd.names.add(s.target)
        e = s.expr[1] if s.expr[0] == "T" else s.expr
        if e[0] == "name" and e[1] in params:
            fwd.renames[s.target] = e[1]
    return fwd


def find_loss(fwd: Forward, envs: list[dict[str, Any]]) -> LearnerLine | None:
    """The last forward line whose value is a number at every point (the loss)."""
    for s in reversed(fwd.stmts):
        values = [env.get(s.target) for env in envs]
        if s.op != "def" and all(isinstance(v, (float, np.floating)) for v in values):
            return s
    return None


def network_loss(net: Network, env: Mapping[str, Any], layout: str) -> float:
    """The network's loss on the point's batch (the mean over its samples) or sample: rows
    are samples, or (``layout="column"``) columns are, one or a whole batch."""
    from symgrad.verify.evaluation import eval_component

    out, target = str(net.output), str(net.loss.target)
    yhat, y = np.asarray(env[out], dtype=float), np.asarray(env[target], dtype=float)
    if layout != "rows":
        yhat, y = yhat.T, y.T
    vals = [
        float(eval_component(net.loss.body, {out: a, target: b}, dict(net.sizes)))
        for a, b in zip(yhat, y, strict=True)
    ]
    return float(np.mean(vals))


def last_assignment(fwd: Forward, name: str) -> int:
    """The index of the forward line that gives ``name`` its final value."""
    return max(k for k, s in enumerate(fwd.stmts) if s.target == name)


def gradient(
    fwd: Forward,
    name: str,
    snapshot: Mapping[str, Any],
    final: Mapping[str, Any],
    *,
    only: LearnerLine | None = None,
) -> np.ndarray:
    """dL/dNAME through the learner's forward lines after NAME's last assignment, by central
    differences; ``snapshot`` holds the values just after that line, ``final`` those after
    the forward pass. Only the lines that
    depend on NAME run again (all of them where a later line reassigns a name). ``only``:
    the gradient through that one line's use of NAME (the others see NAME unchanged)."""
    assert fwd.loss is not None
    last = last_assignment(fwd, name)
    after = fwd.stmts[last + 1 : fwd.stmts.index(fwd.loss) + 1]
    if only is not None:  # every other line reads a frozen copy
        after = [s if s is only else replace(s, expr=_rename(s.expr, name, FROZEN)) for s in after]
        snapshot, final = {**snapshot, FROZEN: snapshot[name]}, {**final, FROZEN: snapshot[name]}
    value = np.asarray(snapshot[name], dtype=float)
    grad = np.zeros_like(value)
    rerun, base = _dependent(fwd, after, name, snapshot, final)
    if not rerun:
        return grad  # the loss does not depend on it

    def loss(v: np.ndarray) -> float:
        trial = dict(base)
        trial[name] = v
        return float(_run(rerun, trial))

    for pos in np.ndindex(value.shape):
        h = FD_STEP * max(abs(float(value[pos])), 1e-2)
        f = []
        for k in (2, 1, -1, -2):
            v = value.copy()
            v[pos] += k * h
            f.append(loss(v))
        grad[pos] = (-f[0] + 8 * f[1] - 8 * f[2] + f[3]) / (12 * h)
    return grad


def _dependent(
    fwd: Forward,
    after: list[LearnerLine],
    name: str,
    snapshot: Mapping[str, Any],
    final: Mapping[str, Any],
) -> tuple[list[LearnerLine], Mapping[str, Any]]:
    """The lines of ``after`` whose values depend on ``name``, and the values to run them
    in (the forward pass's final values, or the snapshot where names are reassigned)."""
    targets = [s.target for s in fwd.stmts if s.op != "def"]
    if len(set(targets)) < len(targets):
        return (after if any(name in _names(s.expr) for s in after) else []), snapshot
    moved = {name}
    rerun = []
    for s in after:
        if _names(s.expr) & moved:
            rerun.append(s)
            moved.add(s.target)
    if fwd.loss is None or fwd.loss.target not in moved:
        return [], snapshot
    return rerun, final


def uses(fwd: Forward, name: str) -> list[LearnerLine]:
    """The forward lines that read ``name`` (where its gradient comes from)."""
    return [s for s in fwd.stmts if s.op != "def" and name in _names(s.expr)]
