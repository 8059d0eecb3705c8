"""The scalar explorer: derivatives of a one-line expression, step by step, micrograd-style.

``scalar("3*x**2 - 4*x + 5", at={"x": 3})`` is the first lesson of every backprop course
done with symgrad: the derivative symbolically (6x - 4), its value at the point (14), the
forward finite-difference estimate (f(3.001) - f(3))/0.001 = 14.003, a table of how the
forward-difference error shrinks with h until round-off takes over, and the chain rule
on the expression graph: every node's value on the way forward and its gradient
(upstream gradient times local derivative, summed over the node's uses) on the way back.

The expression is read by the whitelist parser of :mod:`symgrad.frontend.expr_parser`
(never eval/sympify). Its structure is kept as written (``a - b`` is ``a + (-1)*b``
and ``a/b`` is ``a * b**-1``, as in micrograd), so the graph shows the learner's own
expression rather than SymPy's canonical form. Values are computed in float64 with
:mod:`math`, so the finite differences show real round-off.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import sympy as sp

from symgrad.errors import SpecError
from symgrad.frontend.expr_parser import _Parser, scalar_names
from symgrad.frontend.tokens import SPEC, tokenize
from symgrad.learn.scalar_graph import graph_dot, write_graph
from symgrad.learn.scalar_kinks import not_differentiable
from symgrad.learn.scalar_nodes import Node, _build_graph, _tidy
from symgrad.learn.scalar_values import _float, _fmt, _fmt_h, _safe_float

#: Scalar expressions are short; the bound keeps symbolic simplification fast.
MAX_CHARS = 500
MAX_VARIABLES = 12
#: Step sizes of the error table: 1e-1 down to 1e-12.
TABLE_STEPS = tuple(10.0**-k for k in range(1, 13))
EXPR_FIELD = "EXPR"


class _StructuredParser(_Parser):
    """The whitelist parser, building arithmetic unevaluated so the tree stays as written.

    Constant sub-expressions still fold (``2*3`` is 6): the parent class does that.
    """

    def build(self, tok: Any, fn: Callable[..., sp.Expr], *args: sp.Expr, fold: bool = True):
        if all(a.is_Number for a in args):
            return super().build(tok, fn, *args, fold=fold)
        with sp.evaluate(False):
            return super().build(tok, fn, *args, fold=False)


# -- the result --------------------------------------------------------------------------


@dataclass(frozen=True)
class ScalarResult:
    """Everything the explorer found; ``format()`` (text), ``markdown()`` and ``to_dot()``
    show it, and a notebook displays it as Markdown.

    Attributes:
        text: the expression as written.
        expr: the expression (SymPy, evaluated form).
        variables: the variable names, in order of first appearance.
        point: the value of each variable.
        h: the finite-difference step.
        value: f at the point.
        derivatives: df/dv symbolically, per variable.
        gradient: df/dv at the point.
        fd: the forward difference (f(v + h) - f(v))/h per variable.
        table: (h, {variable: forward-difference estimate}) for h = 1e-1 ... 1e-12.
        nodes: the expression graph, children before parents; the last node is f.
    """

    text: str
    expr: sp.Expr
    variables: tuple[str, ...]
    point: dict[str, float]
    h: float
    value: float
    derivatives: dict[str, sp.Expr]
    gradient: dict[str, float]
    fd: dict[str, float]
    table: tuple[tuple[float, dict[str, float]], ...]
    nodes: tuple[Node, ...]
    #: variable -> why df/dv does not exist at the point (a kink, a singular point)
    no_derivative: dict[str, str] = field(default_factory=dict)

    # -- summaries ------------------------------------------------------------------------
    def best_h(self, var: str) -> float | None:
        """The table's step with the smallest forward-difference error for ``var``."""
        errs = [(abs(est[var] - self.gradient[var]), h) for h, est in self.table]
        errs = [(e, h) for e, h in errs if math.isfinite(e)]
        return min(errs)[1] if errs else None

    def _at(self) -> str:
        return ", ".join(f"{v} = {_fmt(self.point[v])}" for v in self.variables)

    def _backward_lines(self) -> list[str]:
        """The backward pass, node by node: grad(node) as the sum over its uses."""
        bwd: list[str] = []
        parents: dict[int, list[int]] = {}
        for k, n in enumerate(self.nodes):
            for c in n.children:
                parents.setdefault(c, [])
                if k not in parents[c]:
                    parents[c].append(k)
        for k in range(len(self.nodes) - 1, -1, -1):
            n = self.nodes[k]
            if n.grad is None:
                continue
            if not parents.get(k):
                bwd.append(f"grad({n.name}) = 1")
                continue
            terms, nums = [], []
            for pk in parents[k]:
                p = self.nodes[pk]
                for c, (dsym, dval) in zip(p.children, p.locals, strict=True):
                    if c != k:
                        continue
                    assert p.grad is not None
                    terms.append(f"grad({p.name}) * d{p.name}/d{n.name}")
                    nums.append(f"{_fmt(p.grad)} * {_fmt(dval)}")
                    if not dsym.is_Number:
                        nums[-1] += f" [d{p.name}/d{n.name} = {sp.sstr(dsym)}]"
            bwd.append(
                f"grad({n.name}) = {' + '.join(terms)} = {' + '.join(nums)} = {_fmt(n.grad)}"
            )
        return bwd

    def _lines(self) -> dict[str, list[str]]:
        """The text of each section (shared by format and markdown)."""
        var = self.variables
        deriv = [f"df/d{v} = {sp.sstr(self.derivatives[v])}" for v in var]
        values = [f"f = {_fmt(self.value)}"] + [
            self.no_derivative.get(v, f"df/d{v} = {_fmt(self.gradient[v])}") for v in var
        ]
        fd = [
            f"df/d{v} ~ (f({v} + h) - f({v}))/h = {_fmt(self.fd[v], 10)}"
            f"   (error {_fmt(self.fd[v] - self.gradient[v])})"
            for v in var
        ]
        fwd: list[str] = []
        width = max((len(n.name) for n in self.nodes), default=1)
        for n in self.nodes:
            if n.op == "var":
                fwd.append(f"{n.name:<{width}} = {_fmt(n.value)}   (input)")
            elif n.op != "const":
                fwd.append(f"{n.name:<{width}} = {n.definition} = {_fmt(n.value)}")
        bwd = self._backward_lines()
        table = []
        head = ["h".rjust(7)] + [
            f"(f({v}+h) - f({v}))/h".rjust(22) + "  error".rjust(10) for v in var
        ]
        table.append("  ".join(head))
        for h, est in self.table:
            row = [_fmt_h(h).rjust(7)]
            for v in var:
                err = est[v] - self.gradient[v]
                row.append(f"{est[v]:22.12g}  {abs(err):9.1e}")
            table.append("  ".join(row))
        notes = []
        for v in var:
            best = self.best_h(v)
            errs = [abs(est[v] - self.gradient[v]) for _, est in self.table]
            if v in self.no_derivative:
                notes.append(
                    f"df/d{v}: no derivative at this point, so the quotients approach no "
                    "single value and the error column does not shrink with h."
                )
            elif (
                errs
                and errs[0] > 1e-6 * max(1.0, abs(self.gradient[v]))
                and (min(errs) > 0.5 * errs[0])
            ):
                notes.append(f"df/d{v}: the error does not shrink as h does.")
            elif best == TABLE_STEPS[0]:
                notes.append(
                    f"df/d{v}: no truncation error (f is linear in {v}): every error is "
                    "round-off, and it grows as h shrinks."
                )
            elif best is not None:
                notes.append(
                    f"df/d{v}: the error shrinks in proportion to h (truncation) down to "
                    f"h = {best:.0e}; below that round-off in f(x + h) - f(x) takes over."
                )
        return {
            "derivatives": deriv,
            "values": values,
            "fd": fd,
            "forward": fwd,
            "backward": bwd,
            "table": table,
            "notes": notes,
        }

    def format(self) -> str:
        """The explorer's report as plain text (what ``symgrad scalar`` prints)."""
        s = self._lines()
        out = [f"f({', '.join(self.variables)}) = {self.text.strip()}", ""]
        out += ["Derivatives (symbolic):", *(f"  {t}" for t in s["derivatives"]), ""]
        out += [f"At {self._at()}:", *(f"  {t}" for t in s["values"]), ""]
        out += [f"Forward differences, h = {_fmt(self.h)}:", *(f"  {t}" for t in s["fd"]), ""]
        out += [
            "Chain rule on the expression graph (micrograd-style):",
            "  forward pass, each node's value:",
            *(f"    {t}" for t in s["forward"]),
            "  backward pass, grad(node) = df/dnode = the sum over the node's uses of "
            "grad(user) * (local derivative):",
            *(f"    {t}" for t in s["backward"]),
            "",
            "How the forward-difference error depends on h:",
            *(f"  {t}" for t in s["table"]),
            *(f"  {t}" for t in s["notes"]),
        ]
        return "\n".join(out) + "\n"

    def __str__(self) -> str:
        return self.format()

    def markdown(self) -> str:
        """The report as Markdown (the notebook display)."""
        s = self._lines()
        md = [f"**f({', '.join(self.variables)}) = `{self.text.strip()}`**", ""]
        md += ["Derivatives: " + "; ".join(f"`{t}`" for t in s["derivatives"]), ""]
        md += [f"At {self._at()}: " + "; ".join(f"`{t}`" for t in s["values"]), ""]
        md += [f"Forward differences (h = {_fmt(self.h)}):", ""]
        md += [f"- `{t}`" for t in s["fd"]] + [""]
        md += ["Chain rule on the expression graph:", "", "```"]
        md += [*s["forward"], "", *s["backward"], "```", ""]
        md += ["| h | " + " | ".join(f"estimate df/d{v} | error" for v in self.variables) + " |"]
        md += ["|---" * (1 + 2 * len(self.variables)) + "|"]
        for h, est in self.table:
            cells = [
                f"{est[v]:.12g} | {abs(est[v] - self.gradient[v]):.1e}" for v in self.variables
            ]
            md.append(f"| {_fmt_h(h)} | " + " | ".join(cells) + " |")
        md += ["", *s["notes"]]
        return "\n".join(md) + "\n"

    def _repr_markdown_(self) -> str:
        return self.markdown()

    def to_dot(self) -> str:
        """The expression graph in Graphviz DOT: a record per value (name, value, gradient)
        and a small node per operation, as micrograd draws it."""
        return graph_dot(self.nodes, _fmt)

    def write_graph(self, path: str | os.PathLike[str], *, force: bool = False) -> list[str]:
        """Write the graph: ``FILE.dot`` always, and ``FILE.svg`` / ``FILE.png`` when asked
        for and Graphviz ``dot`` is installed. Returns the files written.

        Raises:
            SpecError: not a .dot/.svg/.png name, or a file symgrad did not write (or, for
                a PNG, any existing file) is in the way and ``force`` is not given.
        """
        return write_graph(self.to_dot(), path, force=force)


def parse_point(text: str) -> dict[str, float]:
    """``"x=3,y=-2.5"`` -> ``{"x": 3.0, "y": -2.5}`` (the ``--at`` option)."""
    point: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, eq, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not eq or not name.isidentifier() or not value:
            raise SpecError(f"expected NAME=VALUE, got {part.strip()!r}", field="--at")
        try:
            number = float(value)  # a float literal only: float() never evaluates code
        except ValueError:
            raise SpecError(f"{name}: {value!r} is not a number", field="--at") from None
        if not math.isfinite(number):
            raise SpecError(f"{name}: {value!r} is not a finite number", field="--at")
        if name in point:
            raise SpecError(f"{name} is given twice", field="--at")
        point[name] = number
    return point


def _read(
    expr: str, at: dict[str, float], h: float
) -> tuple[tuple[str, ...], dict[str, sp.Symbol], sp.Expr, dict[sp.Symbol, float]]:
    """The checked input: the variables, their symbols, the parsed tree and the point.

    Raises:
        SpecError: see :func:`scalar`.
    """
    if not isinstance(expr, str):
        raise SpecError(
            f"expected a string expression, got {type(expr).__name__}", field=EXPR_FIELD
        )
    if len(expr) > MAX_CHARS:
        raise SpecError(
            f"expression is too long ({len(expr)} characters, at most {MAX_CHARS})",
            field=EXPR_FIELD,
        )
    if not (isinstance(h, (int, float)) and math.isfinite(h) and h > 0):
        raise SpecError(f"the step must be a positive number, got {h!r}", field="--h")
    names = scalar_names(expr, field=EXPR_FIELD)
    if len(names) > MAX_VARIABLES:
        raise SpecError(
            f"too many variables ({len(names)}, at most {MAX_VARIABLES})", field=EXPR_FIELD
        )
    symbols = {n: sp.Symbol(n, real=True) for n in names}

    def fail(message: str) -> NoReturn:
        raise SpecError(message, field=EXPR_FIELD)

    try:
        tree = _StructuredParser(
            tokenize(expr, fail, SPEC),
            fail,
            scalars=symbols,
            arrays={},
            indices={},
            free_indices=(),
        ).parse()
    except SpecError as exc:
        if "exponent" not in exc.message:
            raise
        fail(
            f"{exc.message}; for a variable exponent write exp(...*log(...)): x**x is "
            "exp(x*log(x)) (for x > 0)"
        )
    if tree.is_Number or not names:
        fail("the expression is a constant (nothing to differentiate)")
    missing = [n for n in names if n not in at]
    if missing:
        want = ",".join(f"{n}=..." for n in missing)
        raise SpecError(
            f"no value for {', '.join(missing)} (give --at {want}; the variables are "
            f"{', '.join(names)})",
            field="--at",
        )
    extra = [n for n in at if n not in names]
    if extra:
        raise SpecError(
            f"{', '.join(extra)} is not a variable of the expression (its variables: "
            f"{', '.join(names)})",
            field="--at",
        )
    point = {symbols[n]: float(at[n]) for n in names}
    return names, symbols, tree, point


def scalar(expr: str, at: Mapping[str, float] | None = None, *, h: float = 1e-3) -> ScalarResult:
    """Explore the derivatives of a scalar expression at a point.

    Args:
        expr: the expression, e.g. ``"3*x**2 - 4*x + 5"`` or ``"a*b + c"``: numbers,
            ``+ - * / **``, and ``exp log sqrt abs tanh cosh sinh sin cos sigmoid max min``.
            Every other name is a variable.
        at: a value for every variable, e.g. ``{"x": 3}``.
        h: the forward-difference step.

    Returns:
        A :class:`ScalarResult`; print it, or display it in a notebook.

    Raises:
        SpecError: the expression cannot be read, a variable has no value, a value names
            no variable, or f is not defined at the point.
    """
    at = dict(at or {})
    names, symbols, tree, point = _read(expr, at, h)
    try:
        value = _float(tree, point)
    except (ValueError, OverflowError, ZeroDivisionError) as exc:
        raise SpecError(
            f"f is not defined at {', '.join(f'{n}={_fmt(at[n])}' for n in names)} ({exc})",
            field="--at",
        ) from None
    if not math.isfinite(value):
        raise SpecError("f is not finite at the point", field="--at")
    nodes, _ = _build_graph(tree, point)
    evaluated = tree.doit()
    derivatives = {n: _tidy(sp.diff(evaluated, symbols[n])) for n in names}
    by_name = {n.name: n for n in nodes}
    gradient = {n: float(by_name[n].grad or 0.0) for n in names}

    def forward_diff(name: str, step: float) -> float:
        moved = dict(point)
        moved[symbols[name]] = point[symbols[name]] + step
        return (_safe_float(tree, moved) - value) / step

    fd = {n: forward_diff(n, h) for n in names}
    nowhere = not_differentiable(evaluated, point, gradient, lambda p: _safe_float(tree, p))
    table = tuple((s, {n: forward_diff(n, s) for n in names}) for s in TABLE_STEPS)
    return ScalarResult(
        text=expr,
        expr=evaluated,
        variables=names,
        point={n: float(at[n]) for n in names},
        h=float(h),
        value=value,
        derivatives=derivatives,
        gradient=gradient,
        fd=fd,
        table=table,
        nodes=nodes,
        no_derivative=nowhere,
    )


__all__ = ["Node", "ScalarResult", "parse_point", "scalar", "write_graph"]
