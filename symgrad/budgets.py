"""Resource budgets: every limit on sizes, memory and symbolic work, in one place.

A network whose parameters or activations would not fit is refused when it is built
(spec time, before any array exists), with one line naming the limit and the value.
Symbolic work (derive, codegen) runs under a time budget and gives up with one line past
it; ``verify`` estimates its memory before it allocates anything. A refusal is a
:class:`BudgetError` (bad input: exit code 2); running out of memory or time while
working is a :class:`ResourceError` (exit code 2 too, never a gradient mismatch).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from symgrad.errors import SpecError, SymgradError

if TYPE_CHECKING:
    import sympy as sp

    from symgrad.ir.network import Network

#: Elements of one layer's output (or of the input) per sample.
MAX_WIDTH = 4_194_304
#: Elements of all layers' outputs together, per sample.
MAX_ACTIVATIONS = 16_777_216
#: Elements of all parameters together (128 MiB in float64).
MAX_PARAMETERS = 16_777_216
#: Memory verify may plan to use for arrays (its estimate, in bytes).
MAX_VERIFY_BYTES = 1 << 30
#: Copies of each activation verify's estimate counts: the module's forward and backward
#: passes, the two autograd references, finite differences' trial points.
VERIFY_COPIES = 8
#: CPU seconds of symbolic work (derive, codegen, documents) before giving up: a backstop
#: for what the estimates below do not foresee (the inputs they refuse are refused at
#: once). CPU time, not wall time: a busy machine does not make a command fail.
SYMBOLIC_SECONDS = 20.0
#: Estimated size (expression-tree nodes) of one layer's or the loss's first derivative:
#: a product of k factors has a derivative of k products of k - 1 factors.
MAX_DERIVATIVE_NODES = 20_000
#: Arguments of all max() and min() calls of one layer or loss together (each kink
#: multiplies the cases the derivative distinguishes).
MAX_KINK_ARGUMENTS = 12


class BudgetError(SpecError, ValueError):
    """A network or a request over a budget, refused before any work (bad input)."""


class ResourceError(SymgradError):
    """Memory or time ran out while working: one line, exit code 2, never a mismatch."""


def _concrete(net: Network, w: object) -> int | None:
    try:
        return net.size(w)
    except SpecError:
        return None


def _elements(net: Network, shape: tuple) -> int | None:
    total = 1
    for s in shape:
        v = _concrete(net, s)
        if v is None:
            return None
        total *= v
    return total


def check_sizes(net: Network) -> Network:
    """Refuse ``net`` if a concrete width, the activations or the parameters are over budget.

    Symbolic widths are checked when they get values (``verify``, ``codegen``).
    """
    width_in = _elements(net, net.input_shape) if net.input_shape else None
    if width_in is None and net.stages:
        width_in = _concrete(net, net.input_width)
    if width_in is not None and width_in > MAX_WIDTH:
        raise BudgetError(
            f"the input has {width_in:,} elements per sample (limit MAX_WIDTH = {MAX_WIDTH:,})"
        )
    activations = 0
    for st in net.stages:
        w = _elements(net, st.shape) if st.shape else _concrete(net, st.width)
        if w is None:
            continue
        if w > MAX_WIDTH:
            raise BudgetError(
                f"layer {st.layer}: {st.name} has {w:,} elements per sample "
                f"(limit MAX_WIDTH = {MAX_WIDTH:,})"
            )
        activations += w
    if activations > MAX_ACTIVATIONS:
        raise BudgetError(
            f"the layers' outputs hold {activations:,} elements per sample "
            f"(limit MAX_ACTIVATIONS = {MAX_ACTIVATIONS:,})"
        )
    total = 0
    for p in net.params:
        size = _elements(net, p.shape)
        if size is None:
            continue
        if size > MAX_PARAMETERS:
            raise BudgetError(
                f"parameter {p.name} has {size:,} elements "
                f"(limit MAX_PARAMETERS = {MAX_PARAMETERS:,} for all parameters together)"
            )
        total += size
    if total > MAX_PARAMETERS:
        raise BudgetError(
            f"the parameters hold {total:,} elements (limit MAX_PARAMETERS = {MAX_PARAMETERS:,})"
        )
    return check_work(net)


def _nodes(e: sp.Basic, memo: dict[sp.Basic, int]) -> int:
    if e not in memo:
        memo[e] = 1 + sum(_nodes(a, memo) for a in e.args)
    return memo[e]


def derivative_nodes(e: sp.Basic, memo: dict[sp.Basic, int] | None = None) -> int:
    """An estimate of the size of ``e``'s first derivative (expression-tree nodes), from
    its structure alone (differentiating is what would take the time)."""
    import sympy as sp

    memo = {} if memo is None else memo
    if not e.args:
        return 1
    parts = [a for a in e.args if not a.is_number]
    inner = sum(derivative_nodes(a, memo) for a in parts)
    if isinstance(e, sp.Add):
        return inner
    if isinstance(e, sp.Mul):  # product rule: one copy of the product per factor
        return max(len(parts), 1) * _nodes(e, memo) + inner
    return _nodes(e, memo) + inner


def kink_arguments(e: sp.Basic) -> int:
    """The arguments of every max() and min() in ``e`` together."""
    import sympy as sp

    return sum(len(f.args) for f in e.atoms(sp.Max, sp.Min))


def check_work(net: Network) -> Network:
    """Refuse a layer or loss whose derivative would take unbounded symbolic work."""
    exprs = [(f"layer {st.layer}", st.body) for st in net.stages]
    exprs.append(("the loss", net.loss.elementwise or net.loss.body))
    for where, e in exprs:
        kinks = kink_arguments(e)
        if kinks > MAX_KINK_ARGUMENTS:
            raise BudgetError(
                f"{where}: max() and min() have {kinks} arguments in all "
                f"(limit MAX_KINK_ARGUMENTS = {MAX_KINK_ARGUMENTS})"
            )
        size = derivative_nodes(e)
        if size > MAX_DERIVATIVE_NODES:
            raise BudgetError(
                f"{where}: its derivative would have about {size:,} terms "
                f"(limit MAX_DERIVATIVE_NODES = {MAX_DERIVATIVE_NODES:,}); write the "
                "expression with fewer factors"
            )
    return net


def _summed_terms(net: Network, body: sp.Basic) -> int:
    """The terms one output element of ``body`` sums (a dense row, a conv window over its
    input channels): what an im2col-style evaluation holds per output element."""
    import sympy as sp

    best = 1
    for s in body.atoms(sp.Sum):
        terms = 1
        for _, lo, hi in s.limits:
            n = _concrete(net, hi - lo + 1)
            terms *= n if n is not None else 1
        best = max(best, terms)
    return best


def verify_bytes(net: Network, batch: int) -> int:
    """verify's estimate of the memory its arrays take at ``batch`` samples (bytes):
    :data:`VERIFY_COPIES` copies of the parameters and activations, plus one expanded
    copy of each layer's summed terms (a conv layer's windows)."""
    per_sample = 0
    expanded = 0
    if net.input_shape:
        per_sample += _elements(net, net.input_shape) or 0
    else:
        per_sample += _concrete(net, net.input_width) or 0
    for st in net.stages:
        width = (_elements(net, st.shape) if st.shape else _concrete(net, st.width)) or 0
        per_sample += width
        if st.shape:  # windows over every input channel (a dense layer expands nothing)
            channels = _concrete(net, st.shape[0]) or 1
            expanded += width // channels * _summed_terms(net, st.body)
    params = sum(_elements(net, p.shape) or 0 for p in net.params)
    return 8 * (VERIFY_COPIES * (batch * per_sample + params) + batch * expanded)


def check_verify_memory(net: Network, batch: int) -> None:
    """Refuse a verification whose arrays would not fit :data:`MAX_VERIFY_BYTES`."""
    need = verify_bytes(net, batch)
    if need > MAX_VERIFY_BYTES:
        raise BudgetError(
            f"verifying at a batch of {batch} needs about {need / 2**20:,.0f} MiB of arrays "
            f"(limit MAX_VERIFY_BYTES = {MAX_VERIFY_BYTES / 2**20:,.0f} MiB); "
            "try a smaller --batch",
            field="--batch",
        )


@contextlib.contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Give up ``what`` with a :class:`ResourceError` after ``seconds`` of CPU time.

    Uses a profiling timer (SIGPROF), so it applies in the main thread of a POSIX process
    only (the command line); elsewhere the work runs without this limit.
    """
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable or seconds <= 0:
        yield
        return

    def expired(signum: int, frame: object) -> None:
        raise ResourceError(
            f"{what} gave up after {seconds:g} s (CPU) of symbolic work "
            f"(limit SYMBOLIC_SECONDS = {seconds:g} s): the expressions are too "
            "large; simplify the custom activation, map or loss"
        )

    old = signal.signal(signal.SIGPROF, expired)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)


__all__ = [
    "MAX_ACTIVATIONS",
    "MAX_DERIVATIVE_NODES",
    "MAX_KINK_ARGUMENTS",
    "MAX_PARAMETERS",
    "MAX_VERIFY_BYTES",
    "MAX_WIDTH",
    "SYMBOLIC_SECONDS",
    "VERIFY_COPIES",
    "BudgetError",
    "ResourceError",
    "check_sizes",
    "check_work",
    "derivative_nodes",
    "kink_arguments",
    "check_verify_memory",
    "time_limit",
    "verify_bytes",
]
