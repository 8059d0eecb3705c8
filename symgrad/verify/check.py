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
be written in a formula), a whole layer's Jacobian ``da2/da1`` (the product of its stages'),
or a layer's derivative by its own parameter ``dz1/dW1`` (given at ``p = i``).

The verdict is OK, WRONG or AMBIGUOUS: a matrix-notation formula that mixes ``*`` and
juxtaposition is read both ways, and one that is right only with juxtaposition binding
tighter is ambiguous, not wrong. A wrong formula gets a counterexample (in components and
as whole vectors / matrices) and hints that name the slip: a wrong shape (a matrix where a
vector is due), a constant factor and which way, a flipped sign, a transpose, ``z`` used
where ``a = f(z)`` belongs (found by evaluating the formula again with the values swapped),
a missing activation-derivative factor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import NoReturn

import numpy as np
import sympy as sp

from symgrad.calculus.contraction import contract
from symgrad.calculus.conv_form import TENSOR_OPS
from symgrad.calculus.forward_values import rewrite
from symgrad.calculus.program import program
from symgrad.calculus.reverse import Derivation, Step, grad_name
from symgrad.errors import DerivationError, SpecError
from symgrad.frontend.expr_parser import parse_expression
from symgrad.ir.indices import BATCH, SAMPLE, SAMPLE_NAMES, idx
from symgrad.ir.network import Network, Stage
from symgrad.ir.plain import PlainTextPrinter
from symgrad.pipeline import derive
from symgrad.verify.evaluation import eval_component, run_derivation, run_program_batch
from symgrad.verify.formula_rewrite import rewrite_component
from symgrad.verify.verify import concrete_sizes, random_targets

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
    jacobian: bool = False  # a local derivative: a diagonal Jacobian may be written diag(v)
    rows_alike: bool = False  # every row the same (dz1/dW1 at p = i is x^T in each row)


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
    if st.component.has(BATCH):
        meaning = f"dL/d{st.wrt} through batch statistics (sums over the batch; N its size)"
    elif st.kind == "loss":
        meaning = f"dL/d{st.wrt}, the loss gradient (per sample)"
    elif st.kind == "param":
        meaning = f"dL/d{st.wrt} (per sample; code sums over the batch)"
    else:
        meaning = f"dL/d{st.wrt} (per sample)"
    alt = st.unfused if st.fused and st.unfused is not None else None
    accept_i = st.kind == "param" and len(st.indices) == 1
    return _Target(st.grad, st.component, st.indices, ranges, meaning, alt, accept_i, st.matrix)


def _chain_target(net: Network, text: str, out: str, inp: str) -> _Target | None:
    """A whole layer's (or several stages') Jacobian ``d out[i]/d inp[k]``: the product of
    the stages' local Jacobians, contracted (``da2/da1 = diag(f'(z2)) W2``)."""
    names = [s.name for s in net.stages]
    starts = [n for n, s in enumerate(net.stages) if str(s.inp) == inp]
    if out not in names or not starts or starts[0] > names.index(out):
        return None
    first, last = starts[0], names.index(out)
    i, k = idx("i"), idx("k")
    jac: sp.Expr | None = None
    for n in range(first, last + 1):
        st = net.stages[n]
        m = sp.Dummy("m", integer=True)
        body = st.body.xreplace({st.index: i})
        local = rewrite(contract(sp.diff(body, st.inp[m])), _reindexed(st, i))
        if jac is None:
            jac = local.xreplace({m: k})
        else:  # d(out_n)[i]/d(inp)[k] = sum_m d(out_n)[i]/d(out_{n-1})[m] * J[m, k]
            prev = jac.xreplace({i: m})
            jac = contract(sp.Sum(local * prev, (m, 0, st.in_width - 1)))
    assert jac is not None
    w_out, w_in = net.size(net.stages[last].width), net.size(net.stages[first].in_width)
    meaning = f"the Jacobian d{out}[i]/d{inp}[k] through {last - first + 1} stages (per sample)"
    return _Target(text, jac, (i, k), {i: w_out, k: w_in}, meaning, jacobian=True)


def _param_target(net: Network, text: str, out: str, inp: str) -> _Target | None:
    """``dz1/dW1``: a layer output's derivative by its own parameter.

    The full tensor ``dz1[i]/dW1[p, q] = [i == p] x[q]`` has a Kronecker delta that no
    formula can write, so the formula asked for is its value on the diagonal ``p = i``
    (free indices ``i`` and ``q``), the textbook ``dz_i/dW_iq = x_q``; off it, it is 0.
    """
    stage = next((s for s in net.stages if s.name == out), None)
    param = next((p for p in (stage.params if stage else ()) if p.name == inp), None)
    if stage is None or param is None:
        return None
    i = idx("i")
    pidx = tuple(idx(nm) for nm in ("p", "q", "r")[: len(param.shape)])
    wrt = param.base[pidx] if pidx else param.base
    body = stage.body.xreplace({stage.index: i})
    local = rewrite(contract(sp.diff(body, wrt)), _reindexed(stage, i))
    if not pidx or not local.has(sp.KroneckerDelta):
        return None
    diag = contract(local.xreplace({pidx[0]: i}))
    free = (i, *pidx[1:])
    widths = (stage.width, *param.shape[1:])
    ranges = {f: net.size(w) for f, w in zip(free, widths, strict=True)}
    names = ", ".join(str(f) for f in pidx)
    meaning = (
        f"the local derivative d{out}[i]/d{inp}[{names}] = [i == p] * (this), given at "
        f"p = i: free indices {', '.join(str(f) for f in free)}; it is 0 for p != i"
    )
    return _Target(text, diag, free, ranges, meaning, jacobian=True, rows_alike=len(free) == 2)


def _local_target(net: Network, text: str, out: str, inp: str) -> _Target:
    stage = _stage_by_names(net, out, inp)
    if stage is None:
        by_param = _param_target(net, text, out, inp)
        if by_param is not None:
            return by_param
        chained = _chain_target(net, text, out, inp)
        if chained is not None:
            return chained
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
        return _Target(text, local, (i,), {i: w_out}, meaning, jacobian=True)
    k = idx("k")
    local = rewrite(contract(sp.diff(body, stage.inp[k])), _reindexed(stage, i))
    meaning = f"the local Jacobian d{out}[i]/d{inp}[k] ({stage.label})"
    return _Target(text, local, (i, k), {i: w_out, k: w_in}, meaning, jacobian=True)


def _reindexed(stage: Stage, i: sp.Symbol) -> Stage:
    from dataclasses import replace

    return replace(stage, body=stage.body.xreplace({stage.index: i}), index=i)


def _shapes(
    d: Derivation, net: Network, batched: set[str] | None = None
) -> dict[str, tuple[int, ...]]:
    """Each name's shape for one sample, or (``batched``: the names with a sample axis)
    with the batch's rows first, for the steps of a stage that couples the samples."""
    shapes: dict[str, tuple[int, ...]] = {
        str(net.input): tuple(net.input_shape) or (net.size(net.input_width),),
        str(net.loss.target): (net.size(net.output_width),),
    }
    for s in net.stages:  # a conv net's quantities have one axis per index
        shapes[s.name] = tuple(int(v) for v in s.shape) if s.shape else (net.size(s.width),)
    for p in net.params:
        shapes[p.name] = net.shape(p)
    for st in d.steps:
        shape = tuple(net.size(w) for w in st.shape)
        if SAMPLE in st.indices:  # a batch-norm step: its sample axis is the batch's rows
            shape = tuple(v for v, ix in zip(shape, st.indices, strict=True) if ix != SAMPLE)
        shapes[st.grad] = shape
    shapes["yhat"] = shapes[str(net.output)]  # the name the documents use for the output
    if batched is not None:
        shapes = {k: (BATCH_SIZE, *v) if k in batched else v for k, v in shapes.items()}
    return shapes


def _parse(
    text: str,
    target: _Target,
    shapes: dict[str, tuple[int, ...]],
    net: Network,
    samples: bool = False,
):
    arrays = {nm: sp.IndexedBase(nm, shape=shp) for nm, shp in shapes.items() if shp}
    scalars: dict[str, sp.Expr] = {str(s): sp.Integer(v) for s, v in net.sizes.items()}
    # 0-dim parameters (a learnable temperature) are written bare
    scalars.update({nm: sp.Symbol(nm, real=True) for nm, shp in shapes.items() if not shp})
    free_names = [str(f) for f in target.free]
    if target.accept_i and "i" not in free_names:
        free_names.append("i")
    placeholders = {}
    indices: dict[str, tuple[sp.Symbol, sp.Expr]] = {}
    for nm in free_names:
        indices[nm] = (idx(nm), sp.Integer(1))
    tensor = bool(net.input_shape)
    extra = (TENSOR_INDICES if tensor else ()) + (SAMPLE_NAMES if samples else ())
    for nm in SUM_INDICES + extra:
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
        index_arithmetic=tensor,
    )
    if target.accept_i:
        used = {s.name for s in _free_symbols(expr)}
        if {"i", "p"} <= used:
            raise SpecError(
                f"{target.name} has one free index: use p (or i), not both", field="--formula"
            )
        expr = expr.xreplace({idx("i"): target.free[0]})
    return expr, placeholders


_SUBSCRIPT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\s*\[")


def _implicit_products(text: str) -> str:
    """Juxtaposed factors in a component formula made explicit: ``a1[i](1 - a1[i])`` is
    ``a1[i]*(1 - a1[i])``, ``2(a2[i] - y[i])`` is ``2*(a2[i] - y[i])``. A name directly
    before ``(`` stays a call. Text the tokenizer rejects is left for the parser to report.
    """
    from symgrad.frontend.expr_parser import _tokenize

    def fail(message: str) -> NoReturn:
        raise SpecError(message, field="--formula")

    if not isinstance(text, str):
        return text
    try:
        toks = _tokenize(text, fail)
    except SpecError:
        return text
    out, last = [], 0
    for prev, tok in zip(toks, toks[1:], strict=False):
        ends_factor = prev.kind == "num" or prev.text in ("]", ")")
        starts_factor = tok.kind in ("name", "num") or tok.text == "("
        if ends_factor and starts_factor:
            out.append(text[last : tok.pos] + "*")
            last = tok.pos
    return "".join(out) + text[last:]


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
        if not e.args or not e.has(sp.Sum):  # rebuilding re-evaluates: only where needed
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


def _coupled(net: Network) -> bool:
    """Whether a stage couples the samples (batch norm): its steps need a batch."""
    return any(s.sample is not None for s in net.stages)


def _random_batch(
    d: Derivation, net: Network, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], set[str]]:
    """A random batch of BATCH_SIZE samples through the derivation's program, and the
    names that carry a sample axis."""
    params = {p.name: rng.uniform(-1.0, 1.0, net.shape(p)) for p in net.params}
    shape = tuple(net.input_shape) or (net.size(net.input_width),)
    x = rng.normal(0.0, 1.0, (BATCH_SIZE, *shape))
    y = random_targets(net, BATCH_SIZE, rng)
    env = {**params, str(net.input): x, str(net.loss.target): y}
    env, batched = run_program_batch(program(d), env, net.sizes, BATCH_SIZE)
    env["yhat"] = env[str(net.output)]
    batched.add("yhat")
    for sym, value in net.sizes.items():
        env.setdefault(str(sym), np.array(float(value)))
    return env, batched


def _random_env(d: Derivation, net: Network, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if _coupled(net):  # one sample of a batch (its statistics couple the samples)
        env, batched = _random_batch(d, net, rng)
        return {k: v[0] if k in batched else v for k, v in env.items()}
    params = {p.name: rng.uniform(-1.0, 1.0, net.shape(p)) for p in net.params}
    x = rng.normal(0.0, 1.0, net.size(net.input_width))
    y = random_targets(net, 1, rng)[0]
    _, env = run_derivation(d, params, x, y)  # a conv net's x is reshaped to its input shape
    env["yhat"] = env[str(net.output)]
    for sym, value in net.sizes.items():  # widths by name (n_2), as symgrad prints them
        env.setdefault(str(sym), np.array(float(value)))
    return env


_CACHE: dict[tuple[int, int], tuple[Network, Network, Derivation]] = {}


def _derivation(net: Network, seed: int) -> tuple[Network, Derivation]:
    """The (concrete) network and its derivation; the last few are kept for repeated checks."""
    key = (id(net), seed)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is net:
        return hit[1], hit[2]
    sized = concrete_sizes(net, seed)
    if _coupled(sized):  # batch statistics: the steps through them are checked on a batch
        sized = replace(sized, sizes={**sized.sizes, BATCH: BATCH_SIZE})
    d = derive(sized)
    if len(_CACHE) >= 8:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = (net, sized, d)
    return sized, d


def jacobian(net: Network, name: str) -> tuple[sp.Expr, tuple[str, ...], str]:
    """A derived quantity or a local / whole-layer derivative, as ``check`` reads ``--grad``.

    ``jacobian(net, "da2/da1")`` gives ``((1 - a2[i])*W2[i, k]*a2[i], ("i", "k"), meaning)``;
    ``"dz1/dW1"`` gives ``x[q]`` at ``p = i``; ``"delta1"`` the derived step.

    Raises:
        SpecError: ``name`` names nothing in this network.
    """
    net, d = _derivation(net, 0)
    target = _resolve(d, net, name)
    return target.expr, tuple(str(f) for f in target.free), target.meaning


def check_formula(net: Network, grad: str, formula: str, *, seed: int = 0) -> CheckResult:
    """Is ``formula`` (component form, per sample) the derived ``grad``?

    Raises:
        SpecError: ``grad`` names nothing in this network, or ``formula`` cannot be read.
    """
    net, d = _derivation(net, seed)
    target = _resolve(d, net, grad)
    batch = _coupled(net) and target.expr.has(BATCH)  # a step through batch statistics
    # Component form subscripts a name (a1[i]); a bracket after an operator is matrix
    # notation's Iverson bracket (da1*[z1 > 0]).
    if isinstance(formula, str) and not _SUBSCRIPT.search(formula) and batch:
        raise SpecError(
            f"{target.name} goes through batch statistics (sums over the batch): check grades "
            f"it in component form, with the sample index s and N the batch size, e.g. "
            f"{formula_text(target.expr)}",
            field="--formula",
        )
    if isinstance(formula, str) and not _SUBSCRIPT.search(formula):
        try:
            return _check_matrix(net, d, target, formula, seed)
        except SpecError as exc:
            if target.matrix is None or not target.matrix.has(*TENSOR_OPS):
                raise
            # a correlation, pooling or (un)flattening: no matrix notation to write it in
            raise SpecError(
                f"{exc.message}; {target.name} is a conv/pooling/flatten operation "
                f"({formula_text(target.matrix)}), which check grades in component form: "
                f"write it as e.g. {formula_text(target.expr)}",
                field="--formula",
            ) from None
    rng = np.random.default_rng(seed)
    envs: list[dict[str, np.ndarray]]
    if batch:  # whole batches: the formula reads every row (z1[t, i] under a sum over t)
        batches = [_random_batch(d, net, rng) for _ in range(POINTS)]
        envs = [env for env, _ in batches]
        shapes = _shapes(d, net, batches[0][1])
    else:
        envs = [_random_env(d, net, rng) for _ in range(POINTS)]
        shapes = _shapes(d, net)
    text = _implicit_products(rewrite_component(formula))
    expr, placeholders = _parse(text, target, shapes, net, batch)
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
    sizes = dict(net.sizes)
    wants = [eval_component(target.expr, env, sizes, target.free, target.ranges) for env in envs]
    for point in range(1, POINTS + 1):
        env, want = envs[point - 1], wants[point - 1]
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
        if want.size and float(np.max(diff)) > TOL * scale + ATOL:
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
        "matrix": _matrix_lines(np.asarray(got), want),
    }
    result.hints = _hints(
        lambda e: eval_component(expr, e, sizes, target.free, target.ranges),
        envs,
        wants,
        target,
        net,
        d,
    )
    return result


def _check_matrix(
    net: Network, d: Derivation, target: _Target, formula: str, seed: int
) -> CheckResult:
    """``check_formula`` for matrix notation (``delta2 a1^T``): per sample, vectors as columns.

    A formula that mixes ``*`` and juxtaposition is read both ways (left to right, and
    juxtaposition first); when only the second reading is right the verdict is AMBIGUOUS.
    """
    from symgrad.documents.render import TextPrinter
    from symgrad.verify.matrix_formula import evaluate_tree, parse, show

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
    envs = [_random_env(d, net, rng) for _ in range(POINTS)]
    sizes = dict(net.sizes)
    wants = [eval_component(target.expr, env, sizes, target.free, target.ranges) for env in envs]
    tree, juxtaposed = parse(formula, envs[0], field="--formula")
    trees = [tree]
    if juxtaposed:
        tight, _ = parse(formula, envs[0], field="--formula", juxtaposition_first=True)
        if show(tight) != show(tree):
            trees.append(tight)
    verdicts = [_judge(lambda env, t=t: evaluate_tree(t, env), envs, wants, target) for t in trees]
    first = verdicts[0]
    if first.ok or len(verdicts) == 1 or not verdicts[1].ok:
        if first.ok:
            result.ok, result.points = True, POINTS
            return result
        result.problem, result.counterexample = first.problem, first.counterexample
        result.hints = _hints(lambda env: evaluate_tree(tree, env), envs, wants, target, net, d)
        if not result.hints:
            edit = _one_edit(tree, envs, wants, target)
            if edit:
                result.hints.append(edit)
        return result
    result.ambiguous = True
    result.readings = [
        (f"read left to right, {show(trees[0])}", f"wrong: {first.problem or 'other numbers'}"),
        (
            f"@ and juxtaposition binding tighter than *, {show(trees[1])}",
            f"right: equals the derived {target.name}",
        ),
    ]
    return result


@dataclass
class _Verdict:
    ok: bool
    problem: str | None = None
    counterexample: dict = field(default_factory=dict)


def _fit(
    got: np.ndarray, want: np.ndarray, target: _Target
) -> tuple[np.ndarray | None, str | None]:
    """``got`` in ``want``'s layout, or the reason the shapes do not fit."""
    if want.ndim == 1 and got.shape == (want.shape[0], want.shape[0]) and want.shape[0] > 1:
        if not target.jacobian:
            n = want.shape[0]
            return None, (
                f"your formula is a {n} x {n} matrix where a vector is due: {target.name} is "
                f"a column vector ({n} x 1); diag(v) is a matrix, v itself is the vector"
            )
        return got, "diagonal"
    if want.ndim == 1 and got.shape == (want.shape[0], 1):
        got = got[:, 0]
    if target.rows_alike and want.ndim == 2 and got.shape == (1, want.shape[1]):
        got = np.broadcast_to(got, want.shape)  # x^T: the row every i shares
    if got.size == 1 and want.size != 1:
        got = np.broadcast_to(got.reshape(()), want.shape)
    if got.shape != want.shape:
        kind = "a column vector" if want.ndim == 1 else "a matrix"
        expect = f"{want.shape[0]} x 1" if want.ndim == 1 else " x ".join(map(str, want.shape))
        have = " x ".join(map(str, got.shape))
        return None, f"your formula is {have}; {target.name} is {kind} of shape {expect}"
    return got, None


def _judge(fn, envs, wants, target: _Target) -> _Verdict:
    """Evaluate ``fn`` at every point and compare with the derived values."""
    from symgrad.verify.matrix_formula import FormulaShapeError

    for point, (env, want) in enumerate(zip(envs, wants, strict=True), start=1):
        try:
            with np.errstate(all="ignore"):
                raw = fn(env)
        except FormulaShapeError as exc:
            return _Verdict(False, f"the shapes do not fit: {exc}")
        got, note = _fit(np.asarray(raw, dtype=float), want, target)
        if got is None:
            return _Verdict(False, note)
        if note == "diagonal":
            want = np.diag(want)  # a diagonal Jacobian written as diag(...)
        diff = _diff(got, want)
        if want.size and float(np.max(diff)) > TOL * _scale(want) + ATOL:
            pos = np.unravel_index(int(np.argmax(diff)), want.shape)
            names = [str(f) for f in target.free] if want.ndim == len(target.free) else ["i", "k"]
            return _Verdict(
                False,
                None,
                {
                    "point": point,
                    "index": {n: int(v) for n, v in zip(names, pos, strict=False)},
                    "yours": float(got[pos]),
                    "derived": float(want[pos]),
                    "values": "",
                    "matrix": _matrix_lines(got, want),
                },
            )
    return _Verdict(True)


def _scale(want: np.ndarray) -> float:
    return max(float(np.max(np.abs(want))) if want.size else 0.0, 1e-300)


def _diff(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        diff = np.abs(got - want)
    return np.where(np.isfinite(diff), diff, np.inf)


def _close(got, want) -> bool:
    got = np.asarray(got, dtype=float)
    return (
        got.shape == want.shape
        and float(np.max(_diff(got, want), initial=0.0)) <= 1e-7 * _scale(want) + ATOL
    )


def _matrix_lines(got: np.ndarray, want: np.ndarray) -> list[str]:
    """Both values at the counterexample as whole vectors / matrices (small ones only)."""
    if got.size > 48:
        return []

    def text(a: np.ndarray) -> str:
        a = a.reshape(-1, 1) if a.ndim == 1 else a
        return np.array2string(a, precision=4, suppress_small=True, max_line_width=200).replace(
            "\n", ""
        )

    return [f"yours   = {text(got)}", f"derived = {text(want)}"]


def _hints(fn, envs, wants, target: _Target, net: Network, d: Derivation) -> list[str]:
    """Name the likely slip: a constant factor (which way), a transpose, z used where a
    belongs (or a where z belongs), a missing activation-derivative factor."""
    from symgrad.verify.matrix_formula import FormulaShapeError

    def values(swap: dict[str, str] | None = None) -> list[np.ndarray] | None:
        out = []
        for env, want in zip(envs, wants, strict=True):
            e = env if not swap else {**env, **{k: env[v] for k, v in swap.items()}}
            try:
                with np.errstate(all="ignore"):
                    got = np.asarray(fn(e), dtype=float)
            except (FormulaShapeError, DerivationError, KeyError, IndexError, ValueError):
                return None
            if want.ndim == 1 and got.shape == (want.shape[0], 1):
                got = got[:, 0]
            out.append(got)
        return out

    hints: list[str] = []
    gots = values()
    if gots is None:
        return hints
    square = any(w.ndim == 2 and w.shape[0] > 1 and w.shape[1] > 1 for w in wants)
    if square and all(
        g.shape == w.T.shape and _close(g.T, w) for g, w in zip(gots, wants, strict=True)
    ):
        hints.append(f"yours is the transpose of {target.name}")
    if all(g.shape == w.shape for g, w in zip(gots, wants, strict=True)):
        factor = _factor(gots, wants)
        if factor is not None:
            hints.append(_factor_words(factor, target, net))
    pairs = [
        (s.name, str(s.inp))
        for s in net.stages
        if s.kind == "elementwise" and str(s.inp) in envs[0] and s.name in envs[0]
    ]
    for a_name, z_name in pairs:
        for used, belongs in ((z_name, a_name), (a_name, z_name)):
            swapped = values({used: belongs})
            if swapped is not None and all(
                _close(g, w) for g, w in zip(swapped, wants, strict=True)
            ):
                how = f"{a_name} = f({z_name})" if belongs == a_name else belongs
                hints.append(
                    f"you used {used} where {how} belongs: with {belongs} in place of "
                    f"{used} your formula is right"
                )
    for st in net.stages:
        if st.kind != "elementwise" or len(wants[0].shape) != 1:
            continue
        if wants[0].shape[0] != net.size(st.width):
            continue
        local = _local_target(net, f"d{st.name}/d{st.inp}", st.name, str(st.inp))
        if len(local.free) != 1:
            continue
        shown = formula_text(local.expr).replace("[i]", "")
        factors = [
            eval_component(local.expr, env, dict(net.sizes), local.free, local.ranges)
            for env in envs
        ]
        if all(
            g.shape == w.shape and _close(g * f, w)
            for g, f, w in zip(gots, factors, wants, strict=True)
        ):
            hints.append(
                f"a factor is missing: yours times d{st.name}/d{st.inp} = {shown} "
                f"(elementwise) is right"
            )
        elif all(
            g.shape == w.shape and _close(g, w * f)
            for g, f, w in zip(gots, factors, wants, strict=True)
        ):
            hints.append(f"an extra factor d{st.name}/d{st.inp} = {shown}: drop it")
    return hints


def _one_edit(tree, envs, wants, target: _Target) -> str | None:
    """A transpose or a product's order that, changed, makes a matrix formula right:
    ``delta2^T a1`` for dW2 is ``delta2 a1^T`` (per sample, vectors are columns)."""
    from symgrad.verify.matrix_formula import evaluate_tree, show

    def t(e):
        return e[1] if e[0] == "T" else ("T", e)

    def variants(e):
        if e[0] == "T":
            yield e[1]
        if e[0] == "name":
            yield ("T", e)
        if e[0] == "mm":
            yield ("mm", e[1], e[3], e[2])
            yield ("mm", e[1], t(e[2]), t(e[3]))
            yield ("mm", e[1], t(e[3]), t(e[2]))
        for k, child in enumerate(e):
            if isinstance(child, tuple) and child and isinstance(child[0], str):
                for v in variants(child):
                    yield (*e[:k], v, *e[k + 1 :])

    for variant in variants(tree):
        if _judge(lambda env, v=variant: evaluate_tree(v, env), envs, wants, target).ok:
            return (
                f"a transpose or the order of a product: {show(variant, explicit=False)} is right"
            )
    return None


def _factor(gots: list[np.ndarray], wants: list[np.ndarray]) -> float | None:
    """The constant c with yours = c * derived at every point, if there is one (c != 1)."""
    ratios = []
    for g, w in zip(gots, wants, strict=True):
        mask = np.abs(w) > 1e-9 * _scale(w)
        if not mask.any() or not np.all(np.isfinite(g)):
            return None
        if np.any(np.abs(g[~mask]) > 1e-9 * _scale(w)):
            return None
        ratios.append(g[mask] / w[mask])
    r = np.concatenate(ratios)
    c = float(np.median(r))
    if c == 0 or not np.allclose(r, c, rtol=1e-7, atol=0) or np.isclose(c, 1.0, rtol=1e-9):
        return None
    return c


def _factor_words(c: float, target: _Target, net: Network) -> str:
    if np.isclose(c, -1.0):
        return f"the sign is flipped: yours is -1 times the true {target.name}"
    widths = {int(v): str(k) for k, v in net.sizes.items()}
    base = f"yours is {c:.6g}x the true {target.name}"
    inv = 1.0 / c
    if abs(c - round(c)) < 1e-9 and abs(round(c)) > 1:
        name = widths.get(int(abs(round(c))))
        extra = f": is a 1/{name} = 1/{abs(round(c))} missing?" if name else ""
        return base + extra
    if abs(inv - round(inv)) < 1e-9 and abs(round(inv)) > 1:
        base = f"yours is 1/{abs(round(inv))} of the true {target.name} ({c:.6g}x)"
        name = widths.get(int(abs(round(inv))))
        return base + (f": divided by {name} once too often?" if name else "")
    return base


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


__all__ = ["CheckResult", "check_formula", "formula_text", "jacobian"]
