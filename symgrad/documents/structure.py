"""What the documents read off a step's expressions: whether a parameter enters as a
weight or a bias, Nielsen's BP tag of a step. Everything is decided from the expressions,
never from a layer's name; the matrix of a local derivative and the contraction of the
chain rule's sum are the step's own (``Step.local_matrix``, ``Step.reason``).
"""

from __future__ import annotations

import sympy as sp

from symgrad.calculus.reverse import Derivation, Step
from symgrad.ir.network import Stage

I = sp.Symbol("i", integer=True)  # noqa: E741 - the chain rule's index
K = sp.Symbol("k", integer=True)
#: Indices free for renaming a summation index out of the way (``j`` first).
SPARE = tuple(sp.Symbol(c, integer=True) for c in "jmtuvw")


def swap_ik(e: sp.Expr) -> sp.Expr:
    """Rename the free index i <-> the first dummy k (the chain rule's k is free)."""
    return e.xreplace({I: K, K: I})


def is_additive(st: Step) -> bool:
    """A parameter that enters its stage additively (``z_i = ... + b_i``): local = [i = p]."""
    return st.local is not None and isinstance(st.local, sp.KroneckerDelta)


def is_weight(st: Step) -> bool:
    """A matrix parameter entering linearly in the input: ``dz_i/dW_pq = [i = p] in_q``."""
    if st.local is None or st.param is None or len(st.param.shape) != 2:
        return False
    ds = [f for f in sp.Mul.make_args(st.local) if isinstance(f, sp.KroneckerDelta)]
    rest = [f for f in sp.Mul.make_args(st.local) if not isinstance(f, sp.KroneckerDelta)]
    return len(ds) == 1 and len(rest) == 1 and isinstance(rest[0], sp.Indexed)


def is_permutation(st: Step) -> bool:
    """A step whose local derivative is a product of brackets only (a reshape such as
    flatten): its Jacobian is a permutation matrix, it moves entries without weighting."""
    if st.local is None or st.kind != "input":
        return False
    factors = sp.Mul.make_args(st.local)
    return all(isinstance(f, sp.KroneckerDelta) for f in factors)


def free_names(stage: Stage) -> list[str]:
    """The free indices of a stage's component form: ``i``, ``s, i`` (a stage that couples
    the samples), or ``c, h, w``."""
    if stage.sample is not None:
        return [str(stage.sample), "i"]
    return [str(i) for i in stage.indices] if stage.indices else ["i"]


#: Per derivation (by identity): its steps by the adjoint they read and by their own name,
#: so that a lookup per step stays linear in the number of steps.
_INDEX: dict[int, tuple[Derivation, dict[str | None, list[Step]], dict[str, list[Step]]]] = {}


def _index(d: Derivation) -> tuple[dict[str | None, list[Step]], dict[str, list[Step]]]:
    hit = _INDEX.get(id(d))
    if hit is None or hit[0] is not d:
        by_upstream: dict[str | None, list[Step]] = {}
        by_grad: dict[str, list[Step]] = {}
        for x in d.steps:
            by_upstream.setdefault(x.upstream, []).append(x)
            by_grad.setdefault(x.grad, []).append(x)
        if len(_INDEX) >= 8:
            _INDEX.clear()
        hit = _INDEX[id(d)] = (d, by_upstream, by_grad)
    return hit[1], hit[2]


def readers(d: Derivation, grad: str) -> list[Step]:
    """The steps that read the adjoint ``grad`` (``x.upstream == grad``), in order."""
    return _index(d)[0].get(grad, [])


def bp_tag(d: Derivation, st: Step) -> str:
    """Nielsen's name of a step, from its structure (never from a layer's name)."""
    if st.kind == "param":
        if is_weight(st):
            return "BP4"
        if is_additive(st):
            return "BP3"
        return ""
    if st.kind == "loss" or (
        st.kind == "input" and st.jacobian in ("diagonal", "full") and st.stage is not None
    ):
        # an error delta<l>: the adjoint of a quantity that enters an affine stage
        # linearly (the pre-activation z = W a + b), whatever the stage is called
        below = [x for x in readers(d, st.grad) if x.kind == "input"]
        if not below or below[0].jacobian != "linear":
            return ""
        if st.kind == "loss" or st.stage is d.network.stages[-1]:
            return "BP1"
        return "BP2"
    return ""


def pass_back(d: Derivation, st: Step) -> Step | None:
    """The linear step that feeds ``st`` (``da1 = W2^T delta2`` for ``delta1``)."""
    for x in _index(d)[1].get(st.upstream or "", []) if st.upstream is not None else ():
        if x.kind == "input" and x.jacobian == "linear":
            return x
    return None


class Grouped(sp.Function):
    """Parentheses kept around a substituted sub-expression (display only)."""

    nargs = 1

    def _symgrad_latex(self, printer) -> str:
        return r"\left(%s\right)" % printer._print(self.args[0])  # noqa: UP031

    def _sympystr(self, printer) -> str:
        return "(%s)" % printer._print(self.args[0])  # noqa: UP031
