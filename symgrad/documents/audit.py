"""Audit document: the numerical story of every statement of the generated program.

For each statement of the forward pass, the loss and the backward pass (the target-free
program of ``backends/codegen.py``, before any backend prints it) the audit lists the
component formula it computes, the stable form symgrad computes it in, the rewrites of
``calculus/stability.py`` that produced that form (before -> after, and the hazard each
one removes), and the hazards that remain: overflow, division by a value that can reach
0, log of 0, cancellation. ``symgrad audit SPEC`` prints :meth:`Audit.text`.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from dataclasses import dataclass

from symgrad.calculus.reverse import Derivation
from symgrad.calculus.stability_hazards import Hazard
from symgrad.derivations import lower
from symgrad.ir.network import Network
from symgrad.ir.plain import PlainTextPrinter

WIDTH = 92


class _PlainPrinter(PlainTextPrinter):
    """Batched expressions as readable text (``A1 @ W2.T``, ``rowsum(e)``, ``softmax(z1)``):
    the shared plain-text printer with the statement's names and the stability rewrites'
    nodes."""

    def __init__(self, names: dict[str, str]):
        super().__init__({"order": "none"})
        self.names = names

    def _print_Symbol(self, expr):
        return self.names.get(expr.name, expr.name)

    _print_Vec = _print_Symbol
    _print_Mat = _print_Symbol

    def _print_ClampMin(self, expr):
        return f"max({self._print(expr.args[0])}, 1e-12)"

    def _print_SafeLog(self, expr):
        return f"max(log({self._print(expr.args[0])}), -100)"

    def _print_SafeLog1p(self, expr):
        return f"max(log1p({self._print(expr.args[0])}), -100)"

    def _print_LogSumExp(self, expr):
        return f"logsumexp({self._print(expr.args[0])})"

    def _print_Softmax(self, expr):
        return f"softmax({self._print(expr.args[0])})"

    def _print_LogCosh(self, expr):
        return f"logcosh({self._print(expr.args[0])})"

    def _print_Float(self, expr):
        return repr(float(expr))


@dataclass(frozen=True)
class Rewrite:
    """One rewrite applied to a statement, in words."""

    rule: str
    before: str
    after: str
    removes: str


@dataclass(frozen=True)
class Entry:
    """One statement of the program: what it computes, how, and what can still go wrong."""

    section: str  # "forward", "loss" or "backward"
    target: str
    formula: str
    computed: str  # the stable, target-free form (one batch: samples are rows)
    rewrites: tuple[Rewrite, ...]
    hazards: tuple[tuple[str, str, str], ...]  # (kind, where, detail)


@dataclass(frozen=True)
class Audit:
    """The audit of one network's generated program."""

    network: str
    source: str
    entries: tuple[Entry, ...]

    @property
    def n_rewrites(self) -> int:
        return sum(len(e.rewrites) for e in self.entries)

    @property
    def n_hazards(self) -> int:
        return sum(len(e.hazards) for e in self.entries)

    def text(self) -> str:
        """The report as plain text, for the terminal."""
        lines = [
            f"symgrad audit: {self.network} ({self.source})",
            "",
            "Each statement of the generated program: the formula it computes, the form it is",
            "computed in (a batch, samples as rows), the rewrites symgrad applied to keep it",
            "finite and accurate, and the hazards that remain. float64 exp() overflows above",
            "709.8 and float32 above 88.7; a value that can reach 0 must not be divided by.",
        ]
        titles = {"forward": "FORWARD PASS", "loss": "LOSS", "backward": "BACKWARD PASS"}
        section = None
        for e in self.entries:
            if e.section != section:
                section = e.section
                lines += ["", titles[section]]
            lines.append("")
            lines.append(f"  {e.target}")
            lines += _wrap("formula:  ", e.formula)
            lines += _wrap("computed: ", f"{e.target} = {e.computed}")
            for r in e.rewrites:
                lines += _wrap("rewrote:  ", f"[{r.rule}] {r.before}  ->  {r.after}")
                lines += _wrap("          ", f"(removes: {r.removes})")
            for kind, where, detail in e.hazards:
                lines += _wrap("hazard:   ", f"[{kind}] {where}: {detail}")
            if not e.rewrites and not e.hazards:
                lines.append("    ok:       nothing to rewrite, no hazard found")
        kinds = Counter(k for e in self.entries for k, _, _ in e.hazards)
        remain = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        lines += [
            "",
            f"Summary: {_count(len(self.entries), 'statement')}, "
            f"{_count(self.n_rewrites, 'rewrite')} applied, "
            f"{_count(self.n_hazards, 'hazard')} remaining" + (f" ({remain})." if remain else "."),
        ]
        return "\n".join(lines) + "\n"


def _count(k: int, noun: str) -> str:
    return f"{k} {noun}" + ("" if k == 1 else "s")


def _wrap(head: str, text: str) -> list[str]:
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent="    " + head,
        subsequent_indent="    " + " " * len(head) + "  ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def audit(net: Network | Derivation, *, source: str | None = None) -> Audit:
    """Audit the program symgrad generates for ``net`` (the Python API of ``symgrad audit``).

    Args:
        net: a network, or its derivation.
        source: shown in the report's title (defaults to the network's source).
    """
    prog = lower(net)
    n = prog.derivation.network
    names = {str(n.input): "X", str(n.loss.target): "Y", "N": "n"}
    pr = _PlainPrinter(names)
    entries = []
    for it in prog.items:
        rewrites = tuple(
            Rewrite(
                a.rule.name,
                _short(pr.doprint(a.before)),
                _short(pr.doprint(a.after)),
                a.rule.hazard,
            )
            for a in it.applied
        )
        found: list[Hazard] = prog.hazards(it)
        seen: set[tuple[str, str]] = set()
        hz = []
        for h in found:
            key = (h.kind, pr.doprint(h.where))
            if key not in seen:
                seen.add(key)
                hz.append((h.kind, _short(key[1]), h.detail))
        entries.append(
            Entry(it.section, it.target, it.formula, pr.doprint(it.expr), rewrites, tuple(hz))
        )
    return Audit(n.name, source or n.source, tuple(entries))


def audit_text(net: Network | Derivation, *, source: str | None = None) -> str:
    """:func:`audit` as plain text."""
    return audit(net, source=source).text()


__all__ = ["Audit", "Entry", "Rewrite", "audit", "audit_text"]
