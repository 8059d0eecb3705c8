"""Grading a steps file: each gradient compared, once the learner has finished with it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from symgrad.errors import SpecError
from symgrad.ir.network import Network
from symgrad.learn.steps.evaluate import _run, _Shape, _shape_text
from symgrad.learn.steps.parse import Statement, parse_steps
from symgrad.learn.steps.report import LineVerdict, StepsReport, _same
from symgrad.learn.steps.slips import _diagnose, _names
from symgrad.learn.steps.targets import _POINTS, BATCH, _aliases, _points, _should_be


def check_steps(net: Network, text: str, *, file: str = "<steps>", seed: int = 0) -> StepsReport:
    """Check a whole hand-written backward pass (see the module docstring).

    Raises:
        SpecError: the file cannot be read, or it reads a name that is not defined.
    """
    from symgrad.verify.check import _derivation

    stmts = parse_steps(text, file=file)
    net, d = _derivation(net, seed)
    by_alias: dict[str, Any] = {}
    for step in d.steps:  # symgrad's own names first: dA2 of a parameter A2 beats da2's alias
        by_alias[step.grad] = step
    for step in d.steps:
        for a in _aliases(step.grad, step.wrt, step.kind):
            by_alias.setdefault(a, step)
    key = (id(d), seed)
    if key not in _POINTS or _POINTS[key][0] is not d:
        if len(_POINTS) >= 8:
            _POINTS.pop(next(iter(_POINTS)))
        _POINTS[key] = (d, _points(net, d, seed))
    points = _POINTS[key][1]
    envs = [dict(p.env) for p in points]
    groups: list[list[Statement]] = []
    for s in stmts:  # consecutive statements with one target are one step
        if groups and groups[-1][-1].target == s.target and s.op != "=":
            groups[-1].append(s)
        else:
            groups.append([s])
    report = StepsReport(file)
    yours: dict[str, str] = {}  # symgrad's name of a gradient -> the learner's (delta1 -> dz1)
    scales: dict[str, float] = {}  # adjoint -> the scale the learner uses (1, or N: no 1/N)
    for group in groups:
        name = group[0].target
        st: Any = by_alias.get(name)
        shown = "; ".join(s.text for s in group)
        lines = tuple(s.line for s in group)
        before = [dict(e) for e in envs]
        try:
            gots = [_run(group, env) for env in envs]
        except KeyError as exc:
            missing = exc.args[0]
            raise SpecError(
                f"line {group[0].line}: {missing!r} is not defined (known: forward values "
                f"x, y, z1, a1 ..., parameters, N, and your earlier assignments)",
                file=file,
            ) from None
        except _Shape as exc:
            if st is None:
                report.verdicts.append(
                    LineVerdict(
                        lines, name, shown, "wrong", problem=f"the shapes do not fit: {exc}"
                    )
                )
                for env, b in zip(envs, before, strict=True):
                    env.pop(name, None)
                    env.update({k: v for k, v in b.items() if k == name})
                continue
            gots = None
            shape_problem = str(exc)
        if st is None:
            report.verdicts.append(LineVerdict(lines, name, shown, "yours"))
            continue
        yours.setdefault(st.grad, name)
        wants = [p.targets[st.grad] for p in points]
        verdict = LineVerdict(lines, name, shown, "wrong", grad=st.grad)
        if gots is not None:
            tags = [_same(g, w) for g, w in zip(gots, wants, strict=True)]
            tags_n = (
                [_same(g, w * BATCH) for g, w in zip(gots, wants, strict=True)]
                if st.kind != "param"
                else [None]
            )
            if all(tags):
                verdict.status = "right" if _plain(group, st) else "right (equivalent)"
                if "keepdims" in tags:
                    verdict.status = "right (equivalent: the same values, with a kept axis)"
            if all(tags):
                scales[name] = 1.0
            elif all(tags_n):
                verdict.status = "right (per-sample scale: without the 1/N of the batch mean)"
                scales[name] = float(BATCH)
        if verdict.status == "wrong":
            verdict.should_be = _in_your_names(_should_be(st), yours)
            if gots is None:
                verdict.problem = f"the shapes do not fit: {shape_problem}"
            else:
                verdict.problem = _shape_note(gots[0], wants[0], st.grad)
                verdict.counterexample = _counterexample(gots, wants)
            verdict.slip, verdict.fix = _diagnose(group, before, wants, st, net, by_alias)
            # Later lines are checked with the right value of this one, at the scale the
            # learner seems to use (an adjoint with or without the batch's 1/N).
            # The scale of the adjoints it reads decides; failing those, its magnitude.
            factor = 1.0
            read = [scales[n] for s in group for n in _names(s.expr) if n in scales]
            if st.kind != "param" and read:
                factor = max(read)
            elif st.kind != "param" and gots is not None and _per_sample_scale(gots, wants):
                factor = float(BATCH)
            scales[name] = factor
            for env, want in zip(envs, wants, strict=True):
                env[name] = want * factor
        report.verdicts.append(verdict)
    done = {v.grad for v in report.verdicts if v.grad}
    report.missing = [s.grad for s in d.steps if s.kind == "param" and s.grad not in done]
    return report


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


def _plain(group: list[Statement], st) -> bool:
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


def _counterexample(gots: list[Any], wants: list[np.ndarray]) -> str | None:
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
            return f"random batch {k}, entry [{at}]: yours = {g[pos]:.8g}, right = {w[pos]:.8g}"
    return None
