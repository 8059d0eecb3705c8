"""Stage 3, per stage: the local derivatives of one stage and its contracted adjoints.

Deep networks repeat the same few stages, so each stage is derived once under placeholder
names (``_in``, ``_out``, ``_g``, ``_p0``...) and memoised on its shape; a stage of that
shape gets the memoised calculus with the renaming back to its own names
(:class:`Named`). Its final forms (the canonical local derivatives, the finished
adjoints) are memoised in the placeholder names too, so a repeated layer costs one
renaming per expression (:mod:`symgrad.calculus.reverse` assembles the steps).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass, field

import sympy as sp

from symgrad.calculus.contraction import contract, has_delta
from symgrad.calculus.forward_values import centre_samples, pull_out, rewrite, tanh_from_ratio
from symgrad.calculus.renamed_memo import renamed, shape_key
from symgrad.calculus.reverse_indices import (
    _PARAM_IDX,
    _TENSOR_IDX,
    _in_index,
    _is_tensor,
    _out_index,
    _out_limits,
)
from symgrad.calculus.softmax_values import rewrite_softmax
from symgrad.ir.indices import BATCH, K, canonical
from symgrad.ir.network import Param, Stage


def _local(body: sp.Expr, wrt: sp.Indexed) -> sp.Expr:
    return contract(sp.diff(body, wrt))


def _structure(local: sp.Expr, stage: Stage) -> str:
    # is_zero asks the assumption system, which takes minutes on deeply nested
    # derivatives: only small expressions get the full query (bounded time).
    if local == 0 or (sp.count_ops(local) <= 60 and local.is_zero):
        return "zero"
    if _is_tensor(stage):
        pairs = list(zip(_out_index(stage), _in_index(stage), strict=False))
        if (
            stage.indices
            and stage.shape == stage.in_shape
            and all(has_delta(local, a, b) for a, b in pairs)
        ):
            return "diagonal"
    elif stage.sample is None and has_delta(local, stage.index, K):
        return "diagonal"
    if not local.has(stage.inp):
        return "linear"
    return "full"


@dataclass(frozen=True)
class _Calculus:
    """The local derivatives and contracted adjoints of one stage."""

    params: tuple[tuple[sp.Expr, sp.Expr], ...]
    local: sp.Expr
    comp: sp.Expr
    structure: str
    #: (local, contracted adjoint) for each of ``stage.extra`` (other inputs read)
    extra: tuple[tuple[sp.Expr, sp.Expr], ...] = ()
    #: the local derivatives as ``sympy.diff`` gives them, before they are restated in
    #: forward values: the input's, then each parameter's (for the documents)
    raw: tuple[sp.Expr, ...] = ()
    #: (local, contracted adjoint) for each of ``stage.shared`` (earlier layers' parameters)
    shared: tuple[tuple[sp.Expr, sp.Expr], ...] = ()


#: Per-stage calculus memoised by the stage's shape (least recently used entries are
#: dropped beyond ``_CACHE_SIZE``: the cache stays bounded in a long-running process).
_CACHE: OrderedDict[tuple, _Calculus] = OrderedDict()
_CACHE_SIZE = 256


def clear() -> None:
    """Forget every memoised stage calculus."""
    _CACHE.clear()


def _param_wrt(p: Param) -> sp.Expr:
    pidx = _PARAM_IDX[: len(p.shape)]
    return p.base[pidx] if pidx else p.base


def _compute(stage: Stage, g: sp.IndexedBase) -> _Calculus:
    # ``rewrite`` states derivatives in a vector stage's forward values; a (channels, h, w)
    # stage keeps its local derivatives as they are.
    # A stage that couples the samples keeps them as they are too (its output carries the
    # sample index, which the forward-value identities do not).
    rw = (lambda e, _s: e) if _is_tensor(stage) or stage.sample is not None else rewrite
    if stage.indices:  # a softmax over an index of a tensor map: its forward values
        rw = rewrite_softmax
    g_out = g[_out_index(stage)]
    limits = _out_limits(stage)

    def adjoint(local: sp.Expr, ranges: dict) -> sp.Expr:
        out = pull_out(contract(sp.Sum(g_out * local, *limits), ranges))
        if stage.sample is not None:  # through batch statistics: centred on the batch mean
            out = centre_samples(out, stage.inp, BATCH)
        return out

    raw_params: list[sp.Expr] = []

    def of_params(ps: tuple[Param, ...], keep_raw: bool) -> tuple[tuple[sp.Expr, sp.Expr], ...]:
        out = []
        for p in ps:
            raw = _local(stage.body, _param_wrt(p))
            if keep_raw:
                raw_params.append(raw)
            local = rw(raw, stage)
            out.append((local, adjoint(local, dict(zip(_PARAM_IDX, p.shape, strict=False)))))
        return tuple(out)

    params = of_params(stage.params, keep_raw=True)
    kin = _in_index(stage)
    in_shape = stage.in_shape or (
        (BATCH, stage.in_width) if stage.sample is not None else (stage.in_width,)
    )
    local_raw = _local(stage.body, stage.inp[kin])
    local = rw(local_raw, stage)
    extra = []
    shapes = stage.extra_shapes or ((),) * len(stage.extra)
    for (base, w), shp in zip(stage.extra, shapes, strict=True):
        kx = _TENSOR_IDX[: len(shp)] if shp else (K,)
        lo = rw(_local(stage.body, base[kx]), stage)
        extra.append((lo, adjoint(lo, dict(zip(kx, shp or (w,), strict=True)))))
    comp = adjoint(local, dict(zip(kin, in_shape, strict=False)))
    if stage.indices:
        comp = rewrite_softmax(comp, stage)
    structure = _structure(local_raw, stage)
    return _Calculus(
        params,
        local,
        comp,
        structure,
        tuple(extra),
        raw=(local_raw, *raw_params),
        shared=of_params(stage.shared, keep_raw=False),
    )


@functools.lru_cache(maxsize=64)
def _placeholder(name: str) -> sp.IndexedBase:
    """The placeholder array ``name`` (made once: an ``IndexedBase`` deduces its
    assumptions each time it is built)."""
    return sp.IndexedBase(name, real=True)


def stage_calculus(stage: Stage, g: sp.IndexedBase) -> Named:
    """``_compute`` memoised on the stage's shape: deep networks repeat the same few stages,
    so a stage is derived once under placeholder names and renamed (this keeps the cost of
    a derivation linear in depth with a small constant)."""
    ren: dict[sp.Basic, sp.Basic] = {
        stage.inp: _placeholder("_in"),
        stage.out: _placeholder("_out"),
        g: _placeholder("_g"),
    }
    for n_, p in enumerate(stage.params):
        ren[p.base] = (
            sp.Symbol(f"_p{n_}", real=True)
            if isinstance(p.base, sp.Symbol)
            else _placeholder(f"_p{n_}")
        )
    for n_, (base, _) in enumerate(stage.extra):
        ren[base] = _placeholder(f"_x{n_}")
    wren: dict[sp.Basic, sp.Basic] = {}
    for n_, w in enumerate(
        dict.fromkeys([stage.in_width, stage.width, *(w for _, w in stage.extra)])
    ):
        if not w.is_Integer:
            wren[w] = sp.Symbol(f"_w{n_}", integer=True, positive=True)
    ren.update(wren)
    if _is_tensor(stage) or stage.shared or any(stage.extra_shapes):
        # concrete shapes, or parameters of other layers
        return Named(_compute(stage, g), {})
    # the body in placeholder names, as a key: its structure and its atoms renamed (no
    # expression is rebuilt unless the shape is new)
    structure, atoms = shape_key(stage.body)
    key = (
        structure,
        tuple(ren.get(a, a) for a in atoms),
        stage.width.xreplace(wren),
        stage.in_width.xreplace(wren),
        tuple(tuple(s_.xreplace(wren) for s_ in p.shape) for p in stage.params),
        tuple((ren[b], w.xreplace(wren)) for b, w in stage.extra),
        stage.sample,
    )
    if key in _CACHE:
        _CACHE.move_to_end(key)
    else:
        cstage = Stage(
            ren[stage.out],
            ren[stage.inp],
            stage.width.xreplace(wren),
            stage.in_width.xreplace(wren),
            stage.body.xreplace(ren),
            0,
            stage.kind,
            stage.label,
            tuple(
                Param(p.name, ren[p.base], tuple(s_.xreplace(wren) for s_ in p.shape))
                for p in stage.params
            ),
            stage.index,
            extra=tuple((ren[b], w.xreplace(wren)) for b, w in stage.extra),
            sample=stage.sample,
        )
        _CACHE[key] = _compute(cstage, ren[g])
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return Named(_CACHE[key], {v: k for k, v in ren.items()})


@dataclass(frozen=True)
class Named:
    """A stage's calculus (in placeholder names, or the stage's own when ``back`` is
    empty) and the renaming back to the stage's names."""

    calc: _Calculus
    back: dict[sp.Basic, sp.Basic]
    #: renamed sub-expressions: a stage's expressions share most of their subtrees
    #: (``W3[j, k]``, ``a2[k]``), each rebuilt once per stage
    _done: dict[sp.Basic, sp.Basic] = field(default_factory=dict, compare=False, repr=False)

    def named(self, e: sp.Expr) -> sp.Expr:
        """``e`` in the stage's own names (``e.xreplace(back)``, with the rebuilt
        sub-expressions shared between the calls)."""
        return _replaced(e, self.back, self._done) if self.back else e

    def finished(self, e: sp.Expr, free: tuple[sp.Symbol, ...], names: tuple[str, ...]) -> sp.Expr:
        """:func:`finish` of ``e``, in the stage's own names."""
        return self.named(finish(e, free, names))

    def canonical(self, e: sp.Expr, free: tuple[sp.Symbol, ...], names: tuple[str, ...]) -> sp.Expr:
        """:func:`canonical_form` of ``e``, in the stage's own names."""
        return self.named(canonical_form(e, free, names))


def _replaced(e: sp.Basic, rule: dict[sp.Basic, sp.Basic], done: dict) -> sp.Basic:
    """``e.xreplace(rule)``, remembering every rebuilt node in ``done``."""
    hit = done.get(e)
    if hit is not None:
        return hit
    if e in rule:
        out = rule[e]
    elif not e.args:
        out = e
    else:
        args = tuple(_replaced(a, rule, done) for a in e.args)
        out = e.func(*args) if any(a is not b for a, b in zip(args, e.args, strict=True)) else e
    done[e] = out
    return out


def finish(expr: sp.Expr, free: tuple[sp.Symbol, ...], names: tuple[str, ...]) -> sp.Expr:
    """A gradient's final component form (memoised up to the names of quantities)."""
    return renamed(
        "finish",
        lambda e: canonical(sp.factor_terms(tanh_from_ratio(e)), free, names),
        expr,
        extra=(free, names),
    )


def canonical_form(expr: sp.Expr, free: tuple[sp.Symbol, ...], names: tuple[str, ...]) -> sp.Expr:
    """:func:`~symgrad.ir.indices.canonical`, memoised up to the names of quantities."""
    return renamed("canonical", lambda e: canonical(e, free, names), expr, extra=(free, names))
