"""The derivation as one program of equations, which the engine can consume again.

After reverse accumulation (``reverse.py``) a network's forward pass, its loss and its
backward pass are all equations ``target[indices] = body`` over named quantities: the
forward values ``a1[i]``, the loss ``L``, the adjoints ``delta2[i]``, ``dW2[p, q]``. Each
body reads earlier targets by name (an adjoint reads the adjoints of every consumer, so
the program is a DAG, not a chain). :func:`program` lists them in evaluation order with
their typed quantity (:class:`~symgrad.ir.naming.Quantity`), and :meth:`Program.tangent`
differentiates the whole program once more along a parameter direction V: the
R-operator of every equation, forward-over-reverse, whose parameter-adjoint tangents are
the Hessian-vector product ``H V`` (``derive --hvp`` prints it; the numeric evaluator in
``verify/evaluation.py`` runs it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import sympy as sp

from symgrad.calculus.forward import tangent
from symgrad.calculus.reverse import Derivation, Step
from symgrad.errors import DerivationError
from symgrad.ir.conv import MaxOver
from symgrad.ir.indices import BATCH
from symgrad.ir.naming import Quantity, primal_name, split, tangent_name

#: The loss's name in the program.
LOSS = "L"

#: The phases an equation belongs to.
PHASES = ("forward", "loss", "backward", "tangent")


def _quantity(name: str, params: tuple[str, ...], inp: str) -> Quantity:
    """The typed quantity of a forward value or parameter named ``name``."""
    base, layer = split(name)
    if name in params:
        role = "param"
    elif name == inp:
        role = "input"
    else:
        role = "pre" if base == "z" else "act"
    return Quantity(role, base, int(layer) if layer and role != "input" else None)


@dataclass(frozen=True, kw_only=True)
class Equation:
    """One equation ``target[indices] = body`` of the program.

    Attributes:
        target: the quantity computed (``a1``, ``L``, ``delta2``, ``dW2``, ``Rz1``).
        quantity: its typed name (role, base, layer); adjoints and tangents have the
            role of the quantity they belong to, see ``of``.
        phase: "forward", "loss", "backward" (an adjoint) or "tangent" (an R-operator).
        indices: its free indices (empty for a scalar).
        shape: the symbolic range of each index.
        body: the component form, reading earlier targets, parameters, ``x`` and ``y``.
        of: for an adjoint, the quantity it is dL/d of; for a tangent, the quantity
            whose directional derivative it is; None for forward values and the loss.
        matrix: the per-sample matrix form, where the matrix-form pass has given one.
        needed: whether generated code computes it (the loss gradient fused into the
            next step and ``dx`` are stated for the reader and for checks only).
        step: the backward :class:`~symgrad.calculus.reverse.Step` it came from.
    """

    target: str
    quantity: Quantity
    phase: str
    indices: tuple[sp.Symbol, ...]
    shape: tuple[sp.Expr, ...]
    body: sp.Expr
    of: str | None = None
    matrix: sp.Expr | None = None
    needed: bool = True
    #: for a stage that couples the samples (batch norm): its sample index, which the body
    #: reads across the batch (``z1[t, i]`` under a sum over ``t``); None per sample.
    sample: sp.Symbol | None = None
    step: Step | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"unknown phase {self.phase!r} (known: {', '.join(PHASES)})")

    @property
    def reads(self) -> frozenset[str]:
        """The names the body reads: earlier targets, parameters, the input, the target."""
        names = {str(b.label) for b in self.body.atoms(sp.IndexedBase)}
        names |= {s.name for s in self.body.free_symbols if isinstance(s, sp.Symbol)}
        return frozenset(names)

    @property
    def lhs(self) -> sp.Expr:
        """The left-hand side as SymPy: ``a1[i]`` or the symbol ``L``."""
        if not self.indices:
            return sp.Symbol(self.target, real=True)
        return sp.IndexedBase(self.target, real=True)[self.indices]


@dataclass(frozen=True)
class Program:
    """Equations in evaluation order: each reads only parameters, ``x``, ``y`` and the
    targets of earlier equations."""

    equations: tuple[Equation, ...]
    params: tuple[str, ...]
    inputs: tuple[str, ...]

    def __iter__(self) -> Iterator[Equation]:
        return iter(self.equations)

    def __len__(self) -> int:
        return len(self.equations)

    def __getitem__(self, target: str) -> Equation:
        for eq in self.equations:
            if eq.target == target:
                return eq
        raise KeyError(target)

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(eq.target for eq in self.equations)

    def gradients(self) -> dict[str, Equation]:
        """The parameter adjoints ``dW2``, ... by parameter name."""
        return {
            eq.of: eq
            for eq in self.equations
            if eq.phase == "backward" and eq.of is not None and eq.of in self.params
        }

    def check(self) -> None:
        """Raise :class:`DerivationError` unless every equation reads only what exists
        before it (the program is a well-ordered DAG)."""
        known = set(self.params) | set(self.inputs)
        for eq in self.equations:
            missing = {r for r in eq.reads if r not in known and not _is_index_or_size(r, eq)}
            if missing:
                raise DerivationError(
                    f"{eq.target} reads {', '.join(sorted(missing))} before it is computed"
                )
            known.add(eq.target)

    def tangent(self) -> Program:
        """Forward-over-reverse: this program followed by the R-operator of each of its
        equations along a direction V (``R{theta} = V`` for every parameter, named
        ``R<param>``; ``R{x} = R{y} = 0``). The tangents of the parameter adjoints,
        ``RdW2``, ... are the Hessian-vector product H V."""
        tan: dict[sp.Basic, sp.Expr] = {}
        by_name: dict[str, sp.Basic] = {}
        for eq in self.equations:
            for b in eq.body.atoms(sp.IndexedBase):
                by_name.setdefault(str(b.label), b)
            for s in eq.body.free_symbols:
                if isinstance(s, sp.Symbol):
                    by_name.setdefault(s.name, s)
        for p in self.params:
            if p in by_name:
                base = by_name[p]
                tname = tangent_name(p)
                tan[base] = (
                    sp.IndexedBase(tname, real=True)
                    if isinstance(base, sp.IndexedBase)
                    else sp.Symbol(tname, real=True)
                )
        # f'(u) is written in forward values, as the derivation writes it (sigma(z1[i])
        # reads a1[i]): the same numbers, the form a learner recognises.
        # (A window max stays as it is: its arg-max indicator holds it by structure.)
        values = {
            eq.body: eq.lhs
            for eq in self.equations
            if eq.phase == "forward" and not eq.body.has(MaxOver)
        }
        extra: list[Equation] = []
        for eq in self.equations:
            r = tangent(eq.body, tan).xreplace(values)
            if r == 0:
                continue
            lhs = eq.lhs
            tname = tangent_name(eq.target)
            key = lhs.base if isinstance(lhs, sp.Indexed) else lhs
            tan[key] = (
                sp.IndexedBase(tname, real=True)
                if isinstance(lhs, sp.Indexed)
                else sp.Symbol(tname, real=True)
            )
            extra.append(
                Equation(
                    target=tname,
                    quantity=eq.quantity,
                    phase="tangent",
                    indices=eq.indices,
                    shape=eq.shape,
                    body=r,
                    of=eq.target,
                    needed=eq.needed,
                    sample=eq.sample,
                    step=eq.step,
                )
            )
        params = (*self.params, *(tangent_name(p) for p in self.params))
        return Program((*self.equations, *extra), params, self.inputs)


def _is_index_or_size(name: str, eq: Equation) -> bool:
    """Bound indices and symbolic widths are not quantities."""
    syms = {s.name: s for s in eq.body.free_symbols if isinstance(s, sp.Symbol)}
    s = syms.get(name)
    if s is None:
        return False
    return bool(s.is_integer)


def program(d: Derivation) -> Program:
    """The derivation ``d`` as one program: forward equations, the loss, then every backward
    step (those code does not compute, a fused loss gradient and ``dx``, have
    ``needed=False``)."""
    net = d.network
    eqs: list[Equation] = []
    for f in d.forward:
        s = f.stage
        idx = tuple(s.indices) or (s.index,)
        shape = tuple(s.shape) or (s.width,)
        if s.sample is not None:
            idx, shape = (s.sample, s.index), (BATCH, s.width)
        eqs.append(
            Equation(
                target=s.name,
                quantity=_quantity(s.name, net.param_names, str(net.input)),
                phase="forward",
                indices=idx,
                shape=shape,
                body=f.component,
                matrix=f.matrix,
                sample=s.sample,
            )
        )
    loss = d.loss if net.penalty is None else d.loss + net.penalty
    eqs.append(
        Equation(
            target=LOSS,
            quantity=Quantity("loss", LOSS),
            phase="loss",
            indices=(),
            shape=(),
            body=loss,
        )
    )
    for st in d.steps:
        eqs.append(
            Equation(
                target=st.grad,
                quantity=_quantity(primal_name(st.grad) or st.wrt, net.param_names, str(net.input)),
                phase="backward",
                indices=st.indices,
                shape=st.shape,
                body=st.component,
                of=st.wrt,
                matrix=st.matrix,
                needed=st.needed,
                sample=st.stage.sample if st.stage is not None else None,
                step=st,
            )
        )
    prog = Program(
        tuple(eqs),
        net.param_names,
        (str(net.input), str(net.loss.target)),
    )
    prog.check()
    return prog


__all__ = ["LOSS", "PHASES", "Equation", "Program", "program"]
