"""What ``check --formula`` compares with: a step, a quantity, a local Jacobian."""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from symgrad.calculus.reverse import Derivation, Step
from symgrad.derivations import chain_jacobian, diagonal, stage_local
from symgrad.errors import SpecError
from symgrad.ir.indices import BATCH, SAMPLE, idx
from symgrad.ir.naming import adjoint_name
from symgrad.ir.network import Network, Stage
from symgrad.verify.check_result import BATCH_SIZE
from symgrad.verify.stages import is_elementwise


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
    cands = [text, adjoint_name(text)]
    if text.startswith("d") and len(text) > 1:
        cands.append(adjoint_name(text[1:]))
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
    jac = chain_jacobian(net.stages[first : last + 1], i, k)
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
    local = stage_local(stage, i, wrt)
    if not pidx or not local.has(sp.KroneckerDelta):
        return None
    diag = diagonal(local, pidx[0], i)
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
    w_out, w_in = net.size(stage.width), net.size(stage.in_width)
    if is_elementwise(stage):
        local = stage_local(stage, i, stage.inp[i])
        meaning = f"the local derivative d{out}[i]/d{inp}[i] ({stage.label}, diagonal Jacobian)"
        return _Target(text, local, (i,), {i: w_out}, meaning, jacobian=True)
    k = idx("k")
    local = stage_local(stage, i, stage.inp[k])
    meaning = f"the local Jacobian d{out}[i]/d{inp}[k] ({stage.label})"
    return _Target(text, local, (i, k), {i: w_out, k: w_in}, meaning, jacobian=True)


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
