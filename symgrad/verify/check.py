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

import numpy as np
import sympy as sp

from symgrad.calculus.conv_form import TENSOR_OPS
from symgrad.calculus.reverse import Derivation
from symgrad.errors import DerivationError, SpecError
from symgrad.ir.indices import BATCH
from symgrad.ir.network import Network
from symgrad.verify.check_hints import _hints, _judge, _matrix_lines, _one_edit, _values_used
from symgrad.verify.check_parse import (
    _SUBSCRIPT,
    _bind_ranges,
    _free_index_problems,
    _parse,
)
from symgrad.verify.check_points import _coupled, _derivation, _random_batch, _random_env
from symgrad.verify.check_result import ATOL, POINTS, TOL, CheckResult, formula_text
from symgrad.verify.check_targets import _local_target, _resolve, _shapes, _Target
from symgrad.verify.evaluation import eval_component


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
    expr, placeholders = _parse(formula, target, shapes, net, batch)
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
    return _compare_component(net, d, target, expr, envs, result)


def _compare_component(net: Network, d: Derivation, target, expr, envs, result) -> CheckResult:
    """Evaluate the parsed component formula and the derived step at every point; fill in
    ``result`` (right, or the first counterexample and the hints)."""
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


__all__ = [
    "CheckResult",
    "_derivation",
    "_local_target",
    "check_formula",
    "formula_text",
    "jacobian",
]
