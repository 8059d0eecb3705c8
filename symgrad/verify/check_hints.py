"""Judging a formula against the derived values, and the hints that name a slip."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from symgrad.calculus.reverse import Derivation
from symgrad.errors import DerivationError
from symgrad.ir.network import Network
from symgrad.verify.check_result import ATOL, TOL, formula_text
from symgrad.verify.check_targets import _local_target, _Target
from symgrad.verify.evaluation import eval_component
from symgrad.verify.stages import is_elementwise


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
        if is_elementwise(s) and str(s.inp) in envs[0] and s.name in envs[0]
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
        if not is_elementwise(st) or len(wants[0].shape) != 1:
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
