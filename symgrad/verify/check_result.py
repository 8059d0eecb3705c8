"""``check --formula``'s verdict and the formula printer it shows results in."""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from symgrad.ir.plain import PlainTextPrinter

#: Agreement needed at every point, relative to the largest derived value.
TOL = 1e-9
#: Absolute agreement that always suffices: random points have O(1) values, so a derived
#: value below this is a cancellation to zero (a bias before batch norm), not a number.
ATOL = 1e-12
POINTS = 5
SUM_INDICES = ("k", "j", "m", "l")
#: More index names for conv nets, whose quantities have (channels, [height,] width) axes
#: and whose formulas read positions such as ``x[q, h + r, w + s]``.
TENSOR_INDICES = ("c", "h", "w", "u", "v", "ci", "kh", "kw")
#: Samples per random point for a network with a stage that couples the samples (batch
#: norm): its steps are checked on a whole batch, the others on one sample of it.
BATCH_SIZE = 3


class _FormulaPrinter(PlainTextPrinter):
    """Prints in the syntax ``check`` reads: ``sum(W2[k, i]*delta2[k], k)``."""

    def _print_Sum(self, expr):
        body = self._print(expr.function)
        for var, _, _ in reversed(expr.limits):
            body = f"sum({body}, {var})"
        return body


def formula_text(expr: sp.Expr) -> str:
    """``expr`` in the formula syntax (Kronecker deltas shown as ``[i == k]``)."""
    return _FormulaPrinter().doprint(expr)


@dataclass
class CheckResult:
    """The verdict on one formula; ``format()`` explains it."""

    ok: bool
    grad: str
    formula: str
    parsed: str
    derived: str
    indices: tuple[str, ...]
    meaning: str
    points: int = 0
    alternative: str | None = None
    problem: str | None = None
    counterexample: dict = field(default_factory=dict)
    #: Likely slips, in words ("yours is 8x the true gradient", "z1 where a1 belongs").
    hints: list[str] = field(default_factory=list)
    #: For an ambiguous formula: (how it is read, what that reading gives), one per reading.
    readings: list[tuple[str, str]] = field(default_factory=list)
    ambiguous: bool = False

    @property
    def verdict(self) -> str:
        """``OK``, ``AMBIGUOUS`` (right under one reading of ``*`` versus juxtaposition
        only) or ``WRONG``."""
        return "OK" if self.ok else "AMBIGUOUS" if self.ambiguous else "WRONG"

    def format(self) -> str:
        ix = ", ".join(self.indices)
        head = f"{self.grad}[{ix}]" if ix else self.grad
        lines = [
            f"{head}: {self.meaning}",
            f"  your formula:    {self.formula}",
            f"  derived formula: {self.derived}",
        ]
        if self.alternative:
            lines.append(f"  (equivalently:  {self.alternative})")
        if self.ok:
            lines.append(
                f"OK: your formula equals the derived {self.grad} "
                f"(at {self.points} random points, rel tol {TOL:.0e})"
            )
            return "\n".join(lines)
        if self.ambiguous:
            lines.append("  * and @ (or juxtaposition) can be read two ways here:")
            for how, what in self.readings:
                lines.append(f"    {how}: {what}")
            right = next((how for how, what in self.readings if what.startswith("right")), "")
            lines.append(
                f"AMBIGUOUS: your formula is right only when read as {right.split(': ')[-1]}; "
                "write those parentheses"
            )
            return "\n".join(lines)
        if self.problem:
            lines.append(f"  {self.problem}")
        ce = self.counterexample
        if ce:
            where = ", ".join(f"{k}={v}" for k, v in ce["index"].items())
            at = f" at {where}" if where else ""
            lines.append(
                f"  counterexample (random point {ce['point']}){at}: "
                f"yours = {ce['yours']:.10g}, derived = {ce['derived']:.10g}"
            )
            if ce.get("values"):
                lines.append(f"    where {ce['values']}")
            if ce.get("matrix"):
                lines.append("  the same point in matrix notation:")
                lines.extend(f"    {t}" for t in ce["matrix"])
        lines.extend(f"  hint: {h}" for h in self.hints)
        lines.append(f"WRONG: your formula for {self.grad} differs from the derivation")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()

    def _repr_markdown_(self) -> str:
        """The notebook display: the verdict in bold, the report as a code block."""
        return f"**{self.verdict}**\n\n```\n{self.format()}\n```\n"
