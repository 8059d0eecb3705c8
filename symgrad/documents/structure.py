"""What the documents read off a step's expressions: the matrix of a local derivative,
whether a parameter enters as a weight or a bias, Nielsen's BP tag of a step, whether a
Kronecker delta removes a sum. Everything is decided from the expressions, never from a
layer's name.
"""

from __future__ import annotations

import sympy as sp

from symgrad.calculus.matrix_form import Mat, to_matrix
from symgrad.calculus.reverse import Derivation, Step
from symgrad.documents.latex_printer import Diag, is_vector_valued
from symgrad.errors import DerivationError
from symgrad.ir.network import Stage

I = sp.Symbol("i", integer=True)  # noqa: E741 - the chain rule's index
K = sp.Symbol("k", integer=True)
#: Indices free for renaming a summation index out of the way (``j`` first).
SPARE = tuple(sp.Symbol(c, integer=True) for c in "jmtuvw")


def swap_ik(e: sp.Expr) -> sp.Expr:
    """Rename the free index i <-> the first dummy k (the chain rule's k is free)."""
    return e.xreplace({I: K, K: I})


def _delta_term_matrix(t: sp.Expr) -> sp.Expr | None:
    rest = t.xreplace({sp.KroneckerDelta(I, K): sp.S.One})
    if rest.has(K):
        return None
    m = to_matrix(rest, (I,))
    return Diag(m) if is_vector_valued(m) else m * Mat("I")


def jacobian_matrix(local: sp.Expr, diagonal: bool = False) -> sp.Expr | None:
    """The matrix ``[d out_i / d in_k]`` of a local derivative in i, k, if it has one."""
    kd = sp.KroneckerDelta(I, K)
    terms = []
    try:
        if diagonal:
            return _delta_term_matrix(local)
        for t in sp.Add.make_args(local):
            if isinstance(t, sp.Indexed) and len(t.indices) == 2:
                if t.indices != (I, K):
                    return None
                terms.append(Mat(str(t.base.label)))
            elif t.has(kd):
                m = _delta_term_matrix(t)
                if m is None:
                    return None
                terms.append(m)
            else:
                terms.append(to_matrix(t, (I, K)))
    except DerivationError:  # no matrix form: shown in components only
        return None
    return sp.Add(*terms)


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


def collapses(local: sp.Expr, dummy: sp.Symbol) -> bool:
    """Whether every term of ``local`` carries a bracket on ``dummy``: then the chain
    rule's sum over ``dummy`` collapses to one term (otherwise a sum remains)."""
    terms = sp.Add.make_args(sp.expand(local))
    return all(any(dummy in d.free_symbols for d in t.atoms(sp.KroneckerDelta)) for t in terms)


def own_functions(body: sp.Expr, arg: sp.Expr) -> list[sp.Function]:
    """symgrad's own activation functions applied to ``arg`` (``sigma(z_i)``)."""
    out = []
    for f in body.atoms(sp.Function):
        if f.args == (arg,) and type(f).__module__.startswith("symgrad."):
            out.append(f)
    return sorted(out, key=sp.default_sort_key)


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


def apply_sum_identity(expr: sp.Expr, net) -> sp.Expr:
    """``sum_i y_i = 1`` where the loss declares it (targets one-hot or probabilities)."""
    if not any(kind == "sum_y_is_1" for kind, _ in net.loss.identities):
        return expr
    y = net.loss.target
    return sp.expand(
        expr.replace(
            lambda e: (
                isinstance(e, sp.Sum)
                and e.function == y[e.limits[0][0]]
                and e.limits[0][1] == 0
                and e.limits[0][2] == net.loss.width - 1
            ),
            lambda e: sp.S.One,
        )
    )


class Grouped(sp.Function):
    """Parentheses kept around a substituted sub-expression (display only)."""

    nargs = 1

    def _symgrad_latex(self, printer) -> str:
        return r"\left(%s\right)" % printer._print(self.args[0])  # noqa: UP031

    def _sympystr(self, printer) -> str:
        return "(%s)" % printer._print(self.args[0])  # noqa: UP031


def deltas(e: sp.Basic) -> list[sp.KroneckerDelta]:
    return sorted(e.atoms(sp.KroneckerDelta), key=sp.default_sort_key)
