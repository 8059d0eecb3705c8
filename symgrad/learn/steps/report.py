"""The verdicts on a steps file and their text."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

RTOL = 1e-7
#: Absolute agreement that always suffices: the random batches have O(1) values, so a
#: derived value below this is a cancellation to zero (a bias before batch norm).
ATOL = 1e-12


@dataclass
class LineVerdict:
    """The verdict on one step of the learner's file (one or more statements)."""

    lines: tuple[int, ...]
    name: str
    text: str
    status: str  # "right", "right (equivalent)", "right (per-sample scale)", "wrong", "yours"
    grad: str | None = None
    should_be: str | None = None
    slip: str | None = None
    fix: str | None = None
    problem: str | None = None
    counterexample: str | None = None

    @property
    def where(self) -> str:
        a, b = self.lines[0], self.lines[-1]
        return f"line {a}" if a == b else f"lines {a}-{b}"


@dataclass
class StepsReport:
    """The verdict on a whole backward pass; ``format()`` explains it."""

    file: str
    verdicts: list[LineVerdict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    layout: str = "rows"  # "rows" (batched, samples are rows) or "column" (one sample)
    drawn: str | None = None  # how the random batches were drawn (to draw them again)
    batched: bool = True  # a batch (rows, or columns where batch norm couples the samples)

    @property
    def ok(self) -> bool:
        return not any(v.status == "wrong" for v in self.verdicts)

    @property
    def first_wrong(self) -> LineVerdict | None:
        return next((v for v in self.verdicts if v.status == "wrong"), None)

    def format(self) -> str:
        how = {"rows": "batched, rows are samples", "column": "one sample, column vectors"}
        shown = how[self.layout]
        if self.layout == "column" and self.batched:
            shown = "batched, columns are samples"
        out = [f"{self.file}: your backward pass, step by step ({shown})"]
        first = self.first_wrong
        for v in self.verdicts:
            label = {"yours": "your intermediate (not checked)"}.get(v.status, v.status)
            if v.status == "wrong" and v is not first:
                label = "wrong too (checked with the right values before it)"
            out.append(f"  {v.where:<11} {v.text}")
            out.append(
                f"  {'':<11} -> {label}" + (f": {v.grad}" if v.grad and v.grad != v.name else "")
            )
            if v.status == "wrong":
                if v.problem:
                    out.append(f"  {'':<11}    {v.problem}")
                if v.should_be:
                    out.append(f"  {'':<11}    should be: {v.name} = {v.should_be}")
                if v.slip:
                    out.append(f"  {'':<11}    likely slip: {v.slip}")
                if v.fix:
                    out.append(f"  {'':<11}    with that fixed: {v.fix}")
                if v.counterexample:
                    out.append(f"  {'':<11}    counterexample: {v.counterexample}")
        if self.missing:
            out.append(f"  not computed in your file: {', '.join(self.missing)}")
        if self.drawn and any(v.counterexample for v in self.verdicts):
            out.append(f"  the random values: {self.drawn}")
        if first is None:
            n = sum(v.status.startswith("right") for v in self.verdicts)
            out.append(f"OK: all {n} checked steps are right")
        else:
            out.append(f"WRONG: {first.where} ({first.name}) is the first wrong step")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.format()

    def _repr_markdown_(self) -> str:
        """The notebook display: the report as a code block."""
        return f"```\n{self.format()}\n```\n"


def _same(got: Any, want: np.ndarray, rtol: float = RTOL, atol: float = ATOL) -> str | None:
    """ "exact" if got equals want, "keepdims" if only its shape differs (a kept axis),
    None otherwise."""
    g = np.asarray(got, dtype=float)
    if g.shape != want.shape:
        if g.size == want.size and g.squeeze().shape == want.squeeze().shape:
            g = g.reshape(want.shape)
            tag = "keepdims"
        else:
            return None
    else:
        tag = "exact"
    scale = max(float(np.max(np.abs(want), initial=0.0)), 1e-300)
    with np.errstate(invalid="ignore"):
        diff = np.abs(g - want)
    if not np.all(np.isfinite(diff)) or float(np.max(diff, initial=0.0)) > rtol * scale + atol:
        return None
    return tag
