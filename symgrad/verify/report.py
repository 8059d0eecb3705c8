"""Verification results: one row per numeric comparison, the report, error measures.

:func:`rel_error` and :func:`compare` measure a gradient against its reference (relative
to the reference's largest magnitude, with an absolute floor for gradients that are ~0);
:func:`diagnose` names the likely slip of a wrong one (a sign, a transpose, a factor).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

#: Relative tolerances, float64 module.
TOL_AUTOGRAD = 1e-7
TOL_FD = 1e-6
#: Relative tolerance for a float32 module against the float64 references.
TOL_FLOAT32 = 1e-3
#: Relative tolerance of matrix form vs component form (``symbolic=True``).
TOL_SYMBOLIC = 1e-10
#: Denominator floor of the relative error (a gradient that is all ~0 is compared absolutely).
REL_FLOOR = 1e-8


# -- the report ------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One numeric comparison of ``name`` (a parameter, ``loss``, ``yhat``) with ``reference``."""

    name: str
    reference: str
    max_abs: float
    max_rel: float
    tol: float
    ok: bool
    note: str = ""

    def line(self) -> str:
        return (
            f"{self.name} ({self.reference}): max rel err {self.max_rel:.1e} "
            f"(max abs err {self.max_abs:.1e}, tol {self.tol:.0e})"
            + (f"; {self.note}" if self.note else "")
        )


@dataclass
class VerifyReport:
    """The result of :func:`verify_network`: numeric rows, structural checks, skips."""

    network: str
    module: str
    dtype: str
    seed: int
    batch: int
    rows: list[Row] = field(default_factory=list)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # (what, ok, message)
    skipped: list[str] = field(default_factory=list)
    symbolic: list[Row] = field(default_factory=list)
    #: The further calls of loss_and_grads (other batch sizes, the repeat), as described.
    calls: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows + self.symbolic) and all(c[1] for c in self.checks)

    @property
    def n_checks(self) -> int:
        return len(self.rows) + len(self.symbolic) + len(self.checks)

    def failures(self) -> list[str]:
        out = [msg for _, ok, msg in self.checks if not ok]
        out += [r.line() for r in self.rows + self.symbolic if not r.ok]
        return out

    def row(self, name: str, reference: str) -> Row:
        for r in self.rows + self.symbolic:
            if r.name == name and r.reference == reference:
                return r
        raise KeyError((name, reference))

    def check(self, what: str, ok: bool, message: str = "") -> bool:
        self.checks.append((what, ok, message or what))
        return ok

    def format(self) -> str:
        lines = [
            f"verify {self.network}: module {self.module}, dtype {self.dtype}, "
            f"batch {self.batch}, seed {self.seed}"
        ]
        if self.rows:
            lines.append(_table(self.rows, "quantity"))
        if self.symbolic:
            lines.append("symbolic derivation (matrix form vs component form, one sample):")
            lines.append(_table(self.symbolic, "step"))
        if self.calls:
            lines.append("loss_and_grads called again: " + "; ".join(self.calls))
        for s in self.skipped:
            lines.append(f"skipped: {s}")
        fails = self.failures()
        if not fails:
            lines.append(f"OK: {self.n_checks} checks passed")
            return "\n".join(lines)
        if len(fails) > 1:
            lines.append(f"{len(fails)} of {self.n_checks} checks failed:")
            lines.extend(f"  {f}" for f in fails)
        lines.append(f"FAIL: {fails[0]}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _table(rows: Sequence[Row], first: str) -> str:
    head = (first, "reference", "max abs err", "max rel err", "tol", "result")
    body = [
        (
            r.name,
            r.reference,
            f"{r.max_abs:.2e}",
            f"{r.max_rel:.2e}",
            f"{r.tol:.0e}",
            "ok" if r.ok else "FAIL" + (f" ({r.note})" if r.note else ""),
        )
        for r in rows
    ]
    widths = [max(len(t[c]) for t in [head, *body]) for c in range(len(head))]
    fmt = "  " + "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*t).rstrip() for t in [head, *body])


def rel_error(got, ref, floor: float = REL_FLOOR) -> tuple[float, float]:
    """``(max |got - ref|, max |got - ref| / max(max |ref|, floor))``; inf on shape mismatch."""
    g = np.asarray(got, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    if g.shape != r.shape:
        return math.inf, math.inf
    if g.size == 0:
        return 0.0, 0.0
    if not (np.all(np.isfinite(g)) and np.all(np.isfinite(r))):
        same = np.array_equal(g, r, equal_nan=True)
        return (0.0, 0.0) if same else (math.inf, math.inf)
    err = float(np.max(np.abs(g - r)))
    return err, err / max(float(np.max(np.abs(r))), floor)


def compare(
    got: np.ndarray | float, ref: np.ndarray | float, tol: float, abs_floor: float
) -> tuple[float, float, bool]:
    """``(max abs err, max rel err, ok)``.

    The relative error is ``max |got - ref| / max |ref|`` (``REL_FLOOR`` at least); the
    check passes when the absolute error is within ``tol`` times the reference's largest
    magnitude or within ``abs_floor`` (the reference's own noise, and a floor relative to
    the whole gradient's scale): a gradient that is exactly zero (a dead relu, a vanishing
    deep net) is compared with the noise of its reference, not with itself.
    """
    a, rel = rel_error(got, ref)
    if not math.isfinite(a):
        return a, rel, False
    r = np.asarray(ref, dtype=np.float64)
    scale = float(np.max(np.abs(r))) if r.size else 0.0
    return a, rel, a <= max(tol * scale, abs_floor)


def diagnose(got: np.ndarray, ref: np.ndarray, tol: float, floor: float = 0.0) -> str:
    """A hint at the kind of mistake: a sign, a transpose, a constant factor.

    Only for a reference that is clearly non-zero (above the comparison's floor), and only
    when the whole error is explained by the hint (a constant factor, not a varying one).
    """
    if got.shape != ref.shape:
        return f"shape {got.shape} vs {ref.shape}"
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    if scale <= max(10 * floor, 1e3 * REL_FLOOR * tol):
        return ""

    def close(a):
        return float(np.max(np.abs(a - ref))) <= 10 * tol * scale

    if close(-got):
        return "sign flipped"
    if got.ndim == 2 and got.shape[0] == got.shape[1] and close(got.T):
        return "transposed"
    denom = float(np.vdot(got, got))
    if denom > 0:
        c = float(np.vdot(got, ref)) / denom
        if close(c * got) and abs(c - 1) > 1e-6 and abs(c) > 1e-6:
            return f"off by a factor {c:.4g}"
    return ""
