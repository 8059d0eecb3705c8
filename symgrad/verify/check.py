"""Check my derivation: is a formula someone wrote for a gradient the derived one?

``check_formula(net, grad="delta1", formula="da1[i]*a1[i]*(1 - a1[i])")`` parses the
formula with the whitelist parser (the arrays are the network's forward quantities,
parameters, adjoints, ``x`` and ``y``), evaluates it and the derived step with
:func:`~symgrad.evaluation.eval_component` at several random points where every value is
consistent (``a1 = sigmoid(z1)``, ``da1 = W2^T delta2`` ... from
:func:`~symgrad.evaluation.run_derivation`), and compares them. Formulas are per sample
(the gradient of one sample's loss), in component form: free index ``i`` for vectors,
``p, q`` for parameter matrices (``p`` for bias-like vectors; ``i`` is accepted too), and
sums ``sum(expr, k)`` over ``k``, ``j``, ``m`` or ``l`` whose range is the length of the
array dimension the summation index subscripts.

``grad`` names a derived quantity: a step's name (``delta2``, ``da1``, ``dW2``, ``db2``,
``dx``, and ``da2``, the loss gradient dL/dyhat), a quantity (``W2``, ``z1``, ``dL/dW2``),
or a local derivative ``da1/dz1``: the local Jacobian of one stage (free index ``i`` for
an elementwise stage; ``i`` and ``k`` for a full Jacobian, whose Kronecker deltas cannot
be written in a formula).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from symgrad.calculus.contraction import contract
from symgrad.calculus.forward_values import rewrite
from symgrad.calculus.reverse import Derivation, Step, grad_name
from symgrad.errors import DerivationError, SpecError
from symgrad.frontend.expr_parser import parse_expression
from symgrad.ir.indices import idx
from symgrad.ir.network import Network, Stage
from symgrad.ir.plain import PlainTextPrinter
from symgrad.pipeline import derive
from symgrad.verify.evaluation import eval_component, run_derivation
from symgrad.verify.verify import concrete_sizes, random_targets

#: Agreement needed at every point, relative to the largest derived value.
TOL = 1e-9
POINTS = 5
SUM_INDICES = ("k", "j", "m", "l")


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
        lines.append(f"WRONG: your formula for {self.grad} differs from the derivation")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


@dataclass(frozen=True)
class _Target:
    """What the formula should equal: an expression with free indices and their ranges."""

    name: str
    expr: sp.Expr
    free: tuple[sp.Symbol, ...]
    ranges: dict[sp.Symbol, int]
    meaning: str
    alternative: sp.Expr | None = None
    accept_i: bool = False  # a one-index parameter gradient: i may stand for p
    matrix: sp.Expr | None = None  # the per-sample matrix form, for matrix-notation formulas


def _stage_by_names(net: Network, out: str, inp: str) -> Stage | None:
    for s in net.stages:
        if s.name == out and str(s.inp) == inp:
            return s
    return None


def _resolve(d: Derivation, net: Network, grad: str) -> _Target:
    text = "".join(str(grad).split())
    names = [s.grad for s in d.steps]
    known = ", ".join(names)
    if "/" in text:
        num, den = text.split("/", 1)
        if num == "dL" and den.startswith("d"):
            text = den[1:]
        elif num.startswith("d") and den.startswith("d"):
            return _local_target(net, text, num[1:], den[1:])
        else:
            raise SpecError(
                f"cannot read {grad!r}: write a gradient (e.g. dW2, delta1, dL/dW2) or a "
                "local derivative (e.g. da1/dz1)",
                field="--grad",
            )
    cands = [text, grad_name(text)]
    if text.startswith("d") and len(text) > 1:
        cands.append(grad_name(text[1:]))
    for c in cands:
        if c in names:
            st = d.step(c)
            return _step_target(net, st)
    raise SpecError(f"unknown gradient {grad!r} (this network has: {known})", field="--grad")


def _step_target(net: Network, st: Step) -> _Target:
    ranges = {ix: net.size(w) for ix, w in zip(st.indices, st.shape, strict=True)}
    if st.kind == "loss":
        meaning = f"dL/d{st.wrt}, the loss gradient (per sample)"
    elif st.kind == "param":
        meaning = f"dL/d{st.wrt} (per sample; code sums over the batch)"
    else:
        meaning = f"dL/d{st.wrt} (per sample)"
    alt = st.unfused if st.fused and st.unfused is not None else None
    accept_i = st.kind == "param" and len(st.indices) == 1
    return _Target(st.grad, st.component, st.indices, ranges, meaning, alt, accept_i, st.matrix)


def _local_target(net: Network, text: str, out: str, inp: str) -> _Target:
    stage = _stage_by_names(net, out, inp)
    if stage is None:
        pairs = ", ".join(f"d{s.name}/d{s.inp}" for s in net.stages)
        raise SpecError(
            f"no stage computes {out} from {inp} (local derivatives here: {pairs})",
            field="--grad",
        )
    i = idx("i")
    body = stage.body.xreplace({stage.index: i})
    w_out, w_in = net.size(stage.width), net.size(stage.in_width)
    if stage.kind == "elementwise":
        local = rewrite(contract(sp.diff(body, stage.inp[i])), _reindexed(stage, i))
        meaning = f"the local derivative d{out}[i]/d{inp}[i] ({stage.label}, diagonal Jacobian)"
        return _Target(text, local, (i,), {i: w_out}, meaning)
    k = idx("k")
    local = rewrite(contract(sp.diff(body, stage.inp[k])), _reindexed(stage, i))
    meaning = f"the local Jacobian d{out}[i]/d{inp}[k] ({stage.label})"
    return _Target(text, local, (i, k), {i: w_out, k: w_in}, meaning)


def _reindexed(stage: Stage, i: sp.Symbol) -> Stage:
    from dataclasses import replace

    return replace(stage, body=stage.body.xreplace({stage.index: i}), index=i)


def _shapes(d: Derivation, net: Network) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {
        str(net.input): (net.size(net.input_width),),
        str(net.loss.target): (net.size(net.output_width),),
    }
    for s in net.stages:
        shapes[s.name] = (net.size(s.width),)
    for p in net.params:
        shapes[p.name] = net.shape(p)
    for st in d.steps:
        shapes[st.grad] = tuple(net.size(w) for w in st.shape)
    return shapes


def _parse(text: str, target: _Target, shapes: dict[str, tuple[int, ...]], net: Network):
    arrays = {nm: sp.IndexedBase(nm, shape=shp) for nm, shp in shapes.items()}
    scalars = {str(s): sp.Integer(v) for s, v in net.sizes.items()}
    free_names = [str(f) for f in target.free]
    if target.accept_i and "i" not in free_names:
        free_names.append("i")
    placeholders = {}
    indices: dict[str, tuple[sp.Symbol, sp.Expr]] = {}
    for nm in free_names:
        indices[nm] = (idx(nm), sp.Integer(1))
    for nm in SUM_INDICES:
        if nm in indices:
            continue
        ph = sp.Symbol(f"_range_{nm}", integer=True, positive=True)
        placeholders[ph] = nm
        indices[nm] = (idx(nm), ph)
    expr = parse_expression(
        text,
        scalars=scalars,
        arrays=arrays,
        indices=indices,
        free_indices=free_names,
        field="--formula",
    )
    if target.accept_i:
        used = {s.name for s in _free_symbols(expr)}
        if {"i", "p"} <= used:
            raise SpecError(
                f"{target.name} has one free index: use p (or i), not both", field="--formula"
            )
        expr = expr.xreplace({idx("i"): target.free[0]})
    return expr, placeholders


def _free_symbols(expr: sp.Expr) -> set[sp.Symbol]:
    return {s for s in expr.free_symbols if s.is_integer and not s.is_positive}


def _bind_ranges(expr: sp.Expr, placeholders, shapes) -> tuple[sp.Expr, list[str]]:
    """Give each ``sum(., k)`` the length of the array dimension ``k`` subscripts."""
    problems: list[str] = []

    def walk(e):
        if isinstance(e, sp.Sum):
            body = walk(e.function)
            limits = []
            for var, lo, hi in e.limits:
                ph = next((p for p in hi.free_symbols if p in placeholders), None)
                if ph is None:
                    limits.append((var, lo, hi))
                    continue
                uses = [
                    (str(t.base.label), pos, shapes[str(t.base.label)][pos])
                    for t in body.atoms(sp.Indexed)
                    for pos, s in enumerate(t.indices)
                    if s == var
                ]
                if not uses:
                    raise SpecError(
                        f"sum over {var}: {var} subscripts no array, so its range is unknown",
                        field="--formula",
                    )
                widths = sorted({u[2] for u in uses})
                if len(widths) > 1:
                    what = ", ".join(f"{a} (axis {p}: length {w})" for a, p, w in uses)
                    problems.append(
                        f"shapes do not match: the sum over {var} runs over arrays of "
                        f"different lengths: {what}"
                    )
                limits.append((var, 0, uses[0][2] - 1))
            return sp.Sum(body, *limits)
        if not e.args:
            return e
        return e.func(*[walk(a) for a in e.args])

    return walk(expr), problems


def _free_index_problems(expr, target: _Target, shapes) -> list[str]:
    out = []
    for t in expr.atoms(sp.Indexed):
        for pos, s in enumerate(t.indices):
            if s in target.ranges and shapes[str(t.base.label)][pos] != target.ranges[s]:
                out.append(
                    f"shapes do not match: {t} uses {s} (0..{target.ranges[s] - 1}) on axis "
                    f"{pos} of {t.base.label}, which has length {shapes[str(t.base.label)][pos]}"
                )
    return out


def _random_env(d: Derivation, net: Network, rng: np.random.Generator) -> dict[str, np.ndarray]:
    params = {p.name: rng.uniform(-1.0, 1.0, net.shape(p)) for p in net.params}
    x = rng.normal(0.0, 1.0, net.size(net.input_width))
    y = random_targets(net, 1, rng)[0]
    _, env = run_derivation(d, params, x, y)
    return env


_CACHE: dict[tuple[int, int], tuple[Network, Network, Derivation]] = {}


def _derivation(net: Network, seed: int) -> tuple[Network, Derivation]:
    """The (concrete) network and its derivation; the last few are kept for repeated checks."""
    key = (id(net), seed)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is net:
        return hit[1], hit[2]
    sized = concrete_sizes(net, seed)
    d = derive(sized)
    if len(_CACHE) >= 8:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = (net, sized, d)
    return sized, d


def check_formula(net: Network, grad: str, formula: str, *, seed: int = 0) -> CheckResult:
    """Is ``formula`` (component form, per sample) the derived ``grad``?

    Raises:
        SpecError: ``grad`` names nothing in this network, or ``formula`` cannot be read.
    """
    net, d = _derivation(net, seed)
    target = _resolve(d, net, grad)
    if isinstance(formula, str) and "[" not in formula:
        return _check_matrix(net, d, target, formula, seed)
    shapes = _shapes(d, net)
    expr, placeholders = _parse(formula, target, shapes, net)
    expr, problems = _bind_ranges(expr, placeholders, shapes)
    problems += _free_index_problems(expr, target, shapes)
    result = CheckResult(
        ok=False,
        grad=target.name,
        formula=formula.strip(),
        parsed=formula_text(expr),
        derived=formula_text(target.expr),
        indices=tuple(str(f) for f in target.free),
        meaning=target.meaning,
        alternative=formula_text(target.alternative) if target.alternative is not None else None,
    )
    if problems:
        result.problem = problems[0]
        return result
    rng = np.random.default_rng(seed)
    sizes = dict(net.sizes)
    for point in range(1, POINTS + 1):
        env = _random_env(d, net, rng)
        want = eval_component(target.expr, env, sizes, target.free, target.ranges)
        try:
            with np.errstate(all="ignore"):
                got = eval_component(expr, env, sizes, target.free, target.ranges)
        except (DerivationError, KeyError, IndexError, ValueError) as exc:
            result.problem = f"cannot evaluate your formula: {' '.join(str(exc).split())}"
            return result
        got = np.broadcast_to(got, want.shape)
        scale = max(float(np.max(np.abs(want))) if want.size else 0.0, 1e-300)
        with np.errstate(invalid="ignore"):
            diff = np.abs(got - want)
        diff = np.where(np.isfinite(diff), diff, np.inf)
        if want.size and float(np.max(diff)) > TOL * scale:
            bad = (point, env, got, want, diff)
            break
        result.points = point
    else:
        result.ok = True
        return result
    point, env, got, want, diff = bad
    pos = np.unravel_index(int(np.argmax(diff)), want.shape) if want.shape else ()
    index = {str(f): int(v) for f, v in zip(target.free, pos, strict=True)}
    result.counterexample = {
        "point": point,
        "index": index,
        "yours": float(got[pos]),
        "derived": float(want[pos]),
        "values": _values_used(expr, target, env, index),
    }
    return result


def _check_matrix(
    net: Network, d: Derivation, target: _Target, formula: str, seed: int
) -> CheckResult:
    """``check_formula`` for matrix notation (``delta2 a1^T``): per sample, vectors as columns."""
    from symgrad.documents.render import TextPrinter
    from symgrad.verify.matrix_formula import FormulaShapeError, evaluate

    shown = TextPrinter().doprint(target.matrix) if target.matrix is not None else None
    result = CheckResult(
        ok=False,
        grad=target.name,
        formula=formula.strip(),
        parsed=formula.strip(),
        derived=shown or formula_text(target.expr),
        indices=() if shown else tuple(str(f) for f in target.free),
        meaning=target.meaning,
        alternative=formula_text(target.expr) if shown else None,
    )
    rng = np.random.default_rng(seed)
    sizes = dict(net.sizes)
    for point in range(1, POINTS + 1):
        env = _random_env(d, net, rng)
        want = eval_component(target.expr, env, sizes, target.free, target.ranges)
        try:
            got = evaluate(formula, env, field="--formula")
        except FormulaShapeError as exc:
            result.problem = f"the shapes do not fit: {exc}"
            return result
        if want.ndim == 1 and got.shape == (want.shape[0], want.shape[0]) and want.shape[0] > 1:
            want = np.diag(want)  # a diagonal Jacobian written as diag(...)
        elif want.ndim == 1 and got.shape == (want.shape[0], 1):
            got = got[:, 0]
        if got.size == 1 and want.size != 1:
            got = np.broadcast_to(got.reshape(()), want.shape)
        if got.shape != want.shape:
            kind = "a column vector" if want.ndim == 1 else "a matrix"
            expect = f"{want.shape[0]} x 1" if want.ndim == 1 else " x ".join(map(str, want.shape))
            have = " x ".join(map(str, got.shape))
            result.problem = f"your formula is {have}; {target.name} is {kind} of shape {expect}"
            return result
        scale = max(float(np.max(np.abs(want))) if want.size else 0.0, 1e-300)
        with np.errstate(invalid="ignore"):
            diff = np.abs(got - want)
        diff = np.where(np.isfinite(diff), diff, np.inf)
        if want.size and float(np.max(diff)) > TOL * scale:
            pos = np.unravel_index(int(np.argmax(diff)), want.shape)
            names = [str(f) for f in target.free] if want.ndim == len(target.free) else ["i", "k"]
            result.counterexample = {
                "point": point,
                "index": {n: int(v) for n, v in zip(names, pos, strict=False)},
                "yours": float(got[pos]),
                "derived": float(want[pos]),
                "values": "",
            }
            return result
        result.points = point
    result.ok = True
    return result


def _values_used(expr, target: _Target, env, index: dict[str, int]) -> str:
    """The values of the arrays the formulas read at the counterexample (free indices fixed)."""
    out = []
    seen = set()
    atoms = sorted(expr.atoms(sp.Indexed) | target.expr.atoms(sp.Indexed), key=lambda t: str(t))
    for t in atoms:
        if any(str(s) not in index for s in t.indices) or str(t) in seen:
            continue
        seen.add(str(t))
        pos = tuple(index[str(s)] for s in t.indices)
        label = f"{t.base.label}[{', '.join(str(p) for p in pos)}]"
        out.append(f"{label} = {float(np.asarray(env[str(t.base.label)])[pos]):.6g}")
        if len(out) >= 6:
            break
    return ", ".join(out)


__all__ = ["CheckResult", "check_formula", "formula_text"]
