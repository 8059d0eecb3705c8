"""Grading a steps file: each gradient compared once the learner has finished with it.

A gradient is graded after its last update before its next use (or the end of the file),
however many unrelated lines come between: ``dhprebn = dbndiff.copy()``, a line for
``dbnmeani``, then ``dhprebn += ...`` is one step, graded after the ``+=``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from symgrad.errors import SpecError
from symgrad.ir.network import Network
from symgrad.learn.steps import forward as fw
from symgrad.learn.steps.compare import (
    _counterexample,
    _per_sample_scale,
    _plain,
    _shape_note,
    should_be_short,
)
from symgrad.learn.steps.evaluate import BudgetError, _run, _Shape
from symgrad.learn.steps.parse import LearnerLine, parse_steps
from symgrad.learn.steps.report import ATOL, RTOL, LineVerdict, StepsReport, _same
from symgrad.learn.steps.slips import _diagnose
from symgrad.learn.steps.targets import (
    BATCH,
    _aliases,
    _Point,
    columns,
    coupled,
    drawn,
    points,
)
from symgrad.learn.steps.variants import _names
from symgrad.verify.stages import is_elementwise

LAYOUTS = ("rows", "column")


class StepsInternalError(SpecError):
    """Grading failed inside symgrad (a bug, never a verdict on the learner's file)."""


@dataclass
class Target:
    """What one name of the learner's file is graded against."""

    grad: str  # the name shown (symgrad's step name, or dL/dNAME)
    kind: str  # "param" (no per-sample scale), "input" or "loss" (adjoints)
    wants: list[np.ndarray]
    step: Any = None  # the derivation's step, for symgrad's own gradients
    uses: list[LearnerLine] = field(default_factory=list)  # forward lines it flows through
    rtol: float = RTOL
    atol: float = ATOL
    factors: tuple[float, ...] = (1.0,)  # the scales accepted (per-sample, a convention)
    upstream: list[np.ndarray] | None = None  # the adjoint this step reads, at each point
    swaps: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # the file's own
    made: dict[str, str] = field(default_factory=dict)  # a2 -> "sigmoid(z2)"


def check_steps(
    net: Network, text: str, *, file: str = "<steps>", seed: int = 0, layout: str | None = None
) -> StepsReport:
    """Check a whole hand-written backward pass (see the package docstring).

    ``layout`` is ``"rows"`` (batched, samples are rows), ``"column"`` (one sample, column
    vectors: Nielsen's form) or None: the one that fits the file's shapes.

    Raises:
        SpecError: the file cannot be read, it reads a name that is not defined, or it
            would allocate past the budget.
    """
    from symgrad.verify.check import _derivation

    if layout not in (None, *LAYOUTS):
        raise SpecError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    stmts = parse_steps(text, file=file)
    net, d = _derivation(net, seed)
    if layout is not None:
        return _grade(net, d, stmts, file, seed, layout)
    try:
        rows = _grade(net, d, stmts, file, seed, "rows")
    except StepsInternalError:
        raise
    except SpecError as exc:  # a forward pass in columns leaves names undefined in rows
        if not coupled(net):
            raise
        try:
            return _grade(net, d, stmts, file, seed, "column")
        except SpecError:
            raise exc from None
    if rows.ok or (_batched(stmts, net) and not coupled(net)):
        return rows
    try:
        col = _grade(net, d, stmts, file, seed, "column")
    except SpecError:
        return rows
    return col if _score(col) > _score(rows) else rows


def _batched(stmts: list[LearnerLine], net: Network) -> bool:
    """Whether the file says it works on a batch: it reads the batch size (``N``, ``n``,
    ``len(...)``, ``.shape[0]``) or an upper-case batch (``X``, ``A1``, ``Yhat``)."""
    batch = {"N", "n", "X", "Y", "Yhat"} | {s.name.upper() for s in net.stages}
    assigned = {s.target for s in stmts}
    for s in stmts:
        read = _names(s.expr) - assigned
        if read & batch or _calls(s.expr, "len") or _calls(s.expr, "shape0"):
            return True
    return False


def _calls(e: Any, what: str) -> bool:
    if not isinstance(e, tuple) or not e:
        return False
    if (e[0] == "bare" and e[1] == what) or (what == "shape0" and e[0] == "shape" and e[2] == 0):
        return True
    return any(_calls(c, what) for c in e)


def _score(report: StepsReport) -> tuple[bool, int, int]:
    first = report.first_wrong
    line = first.lines[0] if first else 10**9
    right = sum(v.status.startswith("right") for v in report.verdicts)
    return (report.ok, line, right)


def _grade(net: Network, d: Any, stmts: list[LearnerLine], file: str, seed: int, layout: str):
    try:
        return _Grader(net, d, stmts, file, seed, layout).run()
    except (SpecError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # never shown as a verdict on the learner's file
        raise StepsInternalError(
            f"internal error while grading ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:100]}); this is a bug in symgrad, please report it",
            file=file,
        ) from exc


class _Grader:
    """One pass over the file: the forward part run and checked, then each backward line
    run and each gradient graded when the learner has finished with it."""

    def __init__(
        self, net: Network, d: Any, stmts: list[LearnerLine], file: str, seed: int, layout
    ):
        self.net, self.d, self.stmts, self.file, self.layout = net, d, stmts, file, layout
        batches = points(net, d, seed)
        self.points: list[_Point] = batches if layout == "rows" else columns(net, d, batches)
        # a batch either way (rows, or batch norm's samples as columns): adjoints carry 1/N
        self.batch = layout == "rows" or coupled(net)
        self.envs = [dict(p.env) for p in self.points]
        self.by_alias: dict[str, Any] = {}
        for step in d.steps:  # symgrad's own names first: dA2 of a parameter A2 beats da2
            self.by_alias[step.grad] = step
        for step in d.steps:
            for a in _aliases(step.grad, step.wrt, step.kind):
                self.by_alias.setdefault(a, step)
        params = {p.name for p in net.params}
        self.fwd = fw.split(stmts, set(self.by_alias), params)
        self.steps = {step.grad: step for step in d.steps}
        self.written = {s.target for s in stmts}  # the names the learner assigns
        self.shown_layout = layout if layout == "rows" or not self.batch else "batch-column"
        self.report = StepsReport(file, layout=layout, drawn=drawn(net, seed, self.shown_layout))
        self.report.batched = self.batch
        self.yours: dict[str, str] = {}  # symgrad's name of a gradient -> the learner's
        self.scales: dict[str, float] = {}  # a gradient -> the scale the learner uses
        self.convention: tuple[float, str] | None = None  # a loss convention in use
        self.snapshots: list[list[dict[str, Any]]] = []  # forward: env after each line
        self.before: dict[int, list[dict[str, Any]]] = {}
        self.broken: dict[str, str] = {}  # a name whose line failed -> the reason
        self.graded: dict[str, int] = {}  # name -> the last line index it was graded at

    # -- the pass ------------------------------------------------------------------------

    def run(self) -> StepsReport:
        self.run_forward()
        for k in range(len(self.fwd.stmts), len(self.stmts)):
            self.before[k] = [dict(e) for e in self.envs]
            self.execute(k)
            if self.stmts[k].op != "def" and self.finished(k):
                self.grade(k)
        self.report.missing = self.missing()
        return self.report

    def execute(self, k: int) -> None:
        s = self.stmts[k]
        if s.op != "def" and ({*_names(s.expr)} | {s.target}) & set(self.broken):
            bad = sorted(({*_names(s.expr)} | {s.target}) & set(self.broken))[0]
            if bad != s.target or s.op != "=":
                self.broken[s.target] = f"it uses {bad}, whose line could not be computed"
                return
        try:
            for env in self.envs:
                _run([s], env)
            self.broken.pop(s.target, None)
        except KeyError as exc:
            raise SpecError(
                f"line {s.line}: {exc.args[0]!r} is not defined (known: forward values "
                f"x, y, z1, a1 ..., parameters, N, and your earlier assignments)",
                file=self.file,
            ) from None
        except BudgetError as exc:
            raise SpecError(f"line {s.line}: {exc.message}", file=self.file) from None
        except _Shape as exc:
            self.broken[s.target] = str(exc)
            for env, old in zip(self.envs, self.before[k], strict=True):
                env.pop(s.target, None)
                if s.target in old:
                    env[s.target] = old[s.target]

    def finished(self, k: int) -> bool:
        """Whether line ``k``'s target is final: the next line that touches it reads it
        (or reassigns it afresh), rather than updating it."""
        name = self.stmts[k].target
        for s in self.stmts[k + 1 :]:
            reads = name in _names(s.expr) or (s.index is not None and name in _names(s.index))
            if s.target == name and s.op != "def":
                return not (s.op != "=" or s.index is not None or reads)
            if reads:
                return True
        return True

    def span(self, k: int) -> int:
        """The first line of the step that ends at ``k``: its target's fresh assignment
        (``NAME = ...`` not reading NAME), after the last time it was graded."""
        name = self.stmts[k].target
        stop = max(len(self.fwd.stmts), self.graded.get(name, -1) + 1)
        for j in range(k, stop - 1, -1):
            s = self.stmts[j]
            fresh = s.op == "=" and s.index is None and name not in _names(s.expr)
            if s.target == name and fresh:
                return j
        return next(j for j in range(stop, k + 1) if self.stmts[j].target == name)

    # -- the learner's forward pass --------------------------------------------------------

    def run_forward(self) -> None:
        fwd = self.fwd
        if not fwd.stmts:
            return
        for env in self.envs:
            snaps = []
            for k, s in enumerate(fwd.stmts):
                try:
                    _run([s], env)
                except KeyError as exc:
                    raise SpecError(
                        f"line {s.line}: {exc.args[0]!r} is not defined (known: the network's "
                        "x, y, parameters, N, and your earlier assignments)",
                        file=self.file,
                    ) from None
                except BudgetError as exc:
                    raise SpecError(f"line {s.line}: {exc.message}", file=self.file) from None
                except _Shape as exc:
                    self.forward_verdict(fwd.stmts[: k + 1], f"the shapes do not fit: {exc}")
                    helpers = [s for s in fwd.stmts if s.op == "def"]
                    for other in self.envs:  # the helpers it defines, for the lines after
                        if helpers:
                            _run(helpers, other)
                    return
                snaps.append(dict(env))
            self.snapshots.append(snaps)
        loss = fw.find_loss(fwd, self.envs)
        if loss is None:
            return
        theirs = [float(env[loss.target]) for env in self.envs]
        right = [fw.network_loss(self.net, p.env, self.layout) for p in self.points]
        if not all(
            abs(a - b) <= 1e-9 * max(1.0, abs(b)) for a, b in zip(theirs, right, strict=True)
        ):
            self.forward_verdict(
                fwd.stmts[: fwd.stmts.index(loss) + 1],
                f"your forward pass gives {loss.target} = {theirs[0]:.8g}; the network's loss "
                f"on this batch is {right[0]:.8g}",
            )
            return
        fwd.loss = loss
        lines = fwd.stmts[: fwd.stmts.index(loss) + 1]
        v = LineVerdict(tuple(s.line for s in lines), loss.target, "your forward pass", "right")
        v.grad = "the network's loss"
        self.report.verdicts.append(v)

    def forward_verdict(self, lines: list[LearnerLine], problem: str) -> None:
        v = LineVerdict(
            tuple(s.line for s in lines), lines[-1].target, "your forward pass", "wrong"
        )
        v.problem = problem
        self.report.verdicts.append(v)

    # -- what a name is graded against -------------------------------------------------------

    def target(self, name: str) -> Target | None:
        base = name[1:] if name.startswith("d") else None
        if base is not None and self.fwd.defines(base):
            return self.forward_target(name, base)
        step = self.by_alias.get(name)
        if step is None:
            return None
        wants = [p.targets[step.grad] for p in self.points]
        tgt = Target(step.grad, step.kind, wants, step=step)
        if self.fwd.loss is not None:  # values before it may carry the differences' error
            tgt.rtol, tgt.atol = fw.FD_RTOL, fw.FD_ATOL
        if step.upstream in self.points[0].targets:
            tgt.upstream = [p.targets[step.upstream] for p in self.points]
        return self.with_names(tgt)

    def with_names(self, tgt: Target) -> Target:
        """What the slips may name: each activation's output (the network's, and the
        file's own ``h = np.tanh(hpreact)``), and the names a slip may swap."""
        for stage in self.net.stages:
            if is_elementwise(stage):
                tgt.made[stage.name] = f"{stage.label}({stage.inp})"
        for s in self.fwd.stmts:
            e = s.expr
            if s.op == "=" and e[0] in ("bare", "np") and len(e) == 3:
                arg = e[2] if e[0] == "bare" else e[2][0] if len(e[2]) == 1 else None
                if arg is not None and arg[0] == "name":
                    a, z = s.target, arg[1]
                    tgt.made[a] = f"{e[1]}({z})"
                    tgt.swaps.setdefault(z, []).append((a, f"{z} where {a} = {e[1]}({z}) belongs"))
                    tgt.swaps.setdefault(a, []).append(
                        (z, f"{a} where {z} belongs: {a} is already {e[1]}({z})")
                    )
        return tgt

    def forward_target(self, name: str, base: str) -> Target:
        last = fw.last_assignment(self.fwd, base)
        wants = [fw.gradient(self.fwd, base, s[last], s[-1]) for s in self.snapshots]
        # the file's own loss fixes the scale: no per-sample alternative ("param")
        tgt = Target(
            f"dL/d{base}",
            "param",
            wants,
            uses=fw.uses(self.fwd, base),
            rtol=fw.FD_RTOL,
            atol=fw.FD_ATOL,
        )
        return self.with_names(tgt)

    # -- grading -------------------------------------------------------------------------------

    def grade(self, k: int) -> None:
        start = self.span(k)
        name = self.stmts[k].target
        self.graded[name] = k
        span = self.stmts[start : k + 1]
        group = [s for s in span if s.target == name]
        shown = "; ".join(s.text for s in group)
        lines = tuple(s.line for s in group)
        tgt = self.target(name)
        if tgt is None:
            status = "wrong" if name in self.broken else "yours"
            v = LineVerdict(lines, name, shown, status)
            if name in self.broken:
                v.problem = f"the shapes do not fit: {self.broken[name]}"
            self.report.verdicts.append(v)
            return
        if tgt.step is not None:
            self.yours.setdefault(tgt.step.grad, name)
        tgt.factors = self.factors(tgt)
        verdict = LineVerdict(lines, name, shown, "wrong", grad=tgt.grad)
        gots = None if name in self.broken else [env[name] for env in self.envs]
        if gots is not None and self.judge(verdict, tgt, gots, group):
            self.report.verdicts.append(verdict)
            return
        self.explain(verdict, tgt, gots, span, start)
        self.report.verdicts.append(verdict)

    def factors(self, tgt: Target) -> tuple[float, ...]:
        """The scales a right value may carry: 1, N for an adjoint without the batch's 1/N
        (rows only), times the loss convention the file uses."""
        base = [1.0] + ([float(BATCH)] if tgt.kind != "param" and self.batch else [])
        conv = [1.0] if self.convention is None else [self.convention[0]]
        return tuple(b * c for b in base for c in conv)

    def judge(self, verdict: LineVerdict, tgt: Target, gots: list[Any], group) -> bool:
        """Mark ``verdict`` right if the values are; returns whether they are."""
        name = verdict.name
        for f in tgt.factors:
            tags = [
                _same(g, w * f, tgt.rtol, tgt.atol) for g, w in zip(gots, tgt.wants, strict=True)
            ]
            if all(tags):
                verdict.status = self.right_words(tgt, group, f, tags)
                self.scales[name] = f
                return True
        if self.convention is None:
            for c, words in self.conventions():
                for f in (c, c * BATCH) if tgt.kind != "param" and self.batch else (c,):
                    if all(
                        _same(g, w * f, tgt.rtol, tgt.atol)
                        for g, w in zip(gots, tgt.wants, strict=True)
                    ):
                        self.convention = (c, words)
                        self.scales[name] = f
                        verdict.status = f"right ({words})"
                        return True
        return False

    def right_words(self, tgt: Target, group, f: float, tags) -> str:
        if self.convention is not None and f != 1.0 and f in (self.convention[0],):
            return f"right ({self.convention[1]})"
        if f not in (1.0,) and (self.convention is None or f != self.convention[0]):
            return "right (per-sample scale: without the 1/N of the batch mean)"
        if "keepdims" in tags:
            return "right (equivalent: the same values, with a kept axis)"
        if tgt.step is not None and _plain(group, tgt.step):
            return "right"
        return "right (equivalent)" if tgt.step is not None else "right"

    def conventions(self) -> list[tuple[float, str]]:
        """Other normalisations of the loss a learner may use, as factors on every gradient:
        read off the loss gradient (``yhat - y`` against the network's dL/dyhat)."""
        loss_steps = [s for s in self.d.steps if s.kind == "loss"]
        if not loss_steps:
            return []
        out_name, y_name = str(self.net.output), str(self.net.loss.target)
        env = self.points[0].env
        want = self.points[0].targets[loss_steps[0].grad]
        want = want * (BATCH if self.batch else 1)
        diff = np.asarray(env[out_name], dtype=float) - np.asarray(env[y_name], dtype=float)
        ratio = diff[np.abs(want) > 1e-12] / want[np.abs(want) > 1e-12]
        if ratio.size == 0 or not np.allclose(ratio, ratio.flat[0], rtol=1e-9):
            return []
        c = float(ratio.flat[0])  # (yhat - y) = c * dL/dyhat: the 1/2-sum convention
        width = self.net.size(self.net.output_width)
        words = (
            "the 1/2-sum convention: your loss is 1/2 sum (yhat - y)**2 per sample; the "
            f"network's is the mean over the {width} outputs, {2 / width:.6g} times that "
            "gradient"
        )
        sum_words = (
            "the sum convention: your loss is sum (yhat - y)**2 per sample; the network's is "
            f"the mean over the {width} outputs"
        )
        return [(c, words), (2 * c, sum_words)] if abs(c - 1) > 1e-9 else []

    def explain(self, verdict: LineVerdict, tgt: Target, gots, span, start: int) -> None:
        """A wrong step: what it should be, the slip, a counterexample; then the right value
        goes on at the learner's scale."""
        name = verdict.name
        if tgt.step is not None:
            verdict.should_be = should_be_short(
                tgt.step, self.your_names(), self.shown_layout, self.steps, self.written
            )
        else:
            verdict.should_be = _through(tgt)
        if gots is None:
            verdict.problem = f"the shapes do not fit: {self.broken[name]}"
        else:
            verdict.problem = _shape_note(gots[0], tgt.wants[0], tgt.grad)
            verdict.counterexample = _counterexample(
                gots, tgt.wants, "rows" if self.batch else "column"
            )
        verdict.slip, verdict.fix = _diagnose(
            span, self.before[start], tgt.wants, tgt, self.net, self.by_alias
        )
        if verdict.slip is None and gots is not None and len(tgt.uses) > 1:
            verdict.slip = self.one_branch(name, tgt, gots)
        factor = self.learner_scale(tgt, span, gots)
        self.scales[name] = factor
        self.broken.pop(name, None)
        for env, want in zip(self.envs, tgt.wants, strict=True):
            env[name] = want * factor

    def your_names(self) -> dict[str, str]:
        """symgrad's names -> the learner's: the gradients graded so far, the forward
        values the learner's own forward pass computes under other names (``h`` for
        ``a3``), and the adjoint of such a value where the file writes it (``dlogits``)."""
        names = dict(self.yours)
        if not self.fwd.stmts or not self.snapshots:
            return names
        finals = [snaps[-1] for snaps in self.snapshots]
        for stage in self.net.stages:
            if stage.name in names:
                continue
            for s in self.fwd.stmts:
                if s.op == "def" or s.target in (stage.name, stage.name.upper()):
                    continue
                if all(
                    _same(env.get(s.target), p.env[stage.name]) == "exact"
                    for env, p in zip(finals, self.points, strict=True)
                ):
                    names[stage.name] = s.target
                    break
        for step in self.d.steps:
            mine = names.get(step.wrt)
            if step.grad not in names and mine and "d" + mine in self.written:
                names[step.grad] = "d" + mine
        return names

    def one_branch(self, name: str, tgt: Target, gots: list[Any]) -> str | None:
        """A name the forward pass uses on several lines, with the gradient through only
        some of them (a forgotten ``+=`` branch)."""
        base = name[1:]
        last = fw.last_assignment(self.fwd, base)
        for use in tgt.uses:
            parts = [fw.gradient(self.fwd, base, s[last], s[-1], only=use) for s in self.snapshots]
            if all(_same(g, p, tgt.rtol, tgt.atol) for g, p in zip(gots, parts, strict=True)):
                others = ", ".join(str(u.line) for u in tgt.uses if u is not use)
                return (
                    f"a missing branch: yours is only the gradient through line {use.line}; "
                    f"{base} is also used on line {others}, so add that branch's gradient "
                    f"too ({name} += ...)"
                )
        return None

    def learner_scale(self, tgt: Target, span, gots) -> float:
        """The scale the learner seems to use for this value: that of the gradients it reads,
        failing those its magnitude (an adjoint with or without the batch's 1/N)."""
        conv = 1.0 if self.convention is None else self.convention[0]
        read = [self.scales[n] for s in span for n in _names(s.expr) if n in self.scales]
        if read:
            scale = max(read)
            return scale if tgt.kind != "param" else min(scale, conv)
        if tgt.kind != "param" and gots is not None and _per_sample_scale(gots, tgt.wants):
            return float(BATCH) * conv
        return conv

    def missing(self) -> list[str]:
        done = {v.grad for v in self.report.verdicts if v.grad}
        covered = {
            self.fwd.renames[v.grad[4:]]
            for v in self.report.verdicts
            if v.grad and v.grad.startswith("dL/d") and v.grad[4:] in self.fwd.renames
        }
        out = []
        for s in self.d.steps:
            if s.kind == "param" and s.grad not in done and s.wrt not in covered:
                out.append(s.grad)
        return out


def _through(tgt: Target) -> str:
    """A learner intermediate's right value, in words: where its gradient comes from."""
    if not tgt.uses:
        return "0 (the loss does not depend on it)"
    lines = ", ".join(f"line {s.line} ({s.text})" for s in tgt.uses[:2])
    more = f" and {len(tgt.uses) - 2} more" if len(tgt.uses) > 2 else ""
    both = "the sum of its gradients through" if len(tgt.uses) > 1 else "its gradient through"
    return f"{both} {lines}{more}"
