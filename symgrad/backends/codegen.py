"""Code generation stage: derivation -> standalone NumPy module (via ``templates/module.py.j2``).

First the target-free program (:func:`build_program`): the forward equations, the loss
and each backward step's batched matrix form (``layout.batched_step``), with the stability
rules of ``calculus/stability.py`` applied to the layer bodies and the loss before the
derivation and to every batched expression after it. Every choice is made from the
expressions, never from a layer's or a loss's name. Then the NumPy printer prints it (one
CSE over the whole program, in-place updates) and the template only loops over the
printed statements and formats them. Other backends can print the same ``Program``.
"""

from __future__ import annotations

import hashlib
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import sympy as sp
from sympy.codegen.cfunctions import log1p

from symgrad._version import __version__
from symgrad.backends.loss_dot import dot_loss_terms
from symgrad.backends.numpy_printer import (
    LogSumExp,
    Softmax,
    recognise,
)
from symgrad.backends.pyformat import respace
from symgrad.backends.statement import Statement, dead_code
from symgrad.backends.target import NUMPY, Target
from symgrad.backends.widening import widen
from symgrad.calculus.conv_form import VIEWS
from symgrad.calculus.einsum import LOWERED, Einsum, Full, lower
from symgrad.calculus.layout import (
    BMatMul,
    BOuter,
    ColSum,
    N,
    RowSum,
    batch,
    batched_step,
    lower_fallbacks,
)
from symgrad.calculus.matrix_form import Comp, Vec, to_matrix
from symgrad.calculus.reverse import Derivation
from symgrad.calculus.stability import (
    COMPONENT_LOGSUMEXP,
    COMPONENT_SOFTMAX,
    GUARD_RULES,
    IR_RULES,
    LOG_THROUGH_OUTPUT,
    SIGMOID_COMPLEMENT,
    Applied,
    RowMax,
    SafeLog,
    SafeLog1p,
    Total,
    share_softmax_logsumexp,
    stabilise,
)
from symgrad.derivations import derive_stable
from symgrad.errors import SpecError
from symgrad.escape import py_docstring
from symgrad.files import marker_line
from symgrad.ir import ops as F
from symgrad.ir.network import Network
from symgrad.ir.plain import plain

LINE = 88
OPTIMIZERS = ("sgd", "momentum", "adam")


def _names(net: Network) -> dict[str, str]:
    return {str(net.input): "X", str(net.loss.target): "Y", str(N): "n"}


class _Printer:
    def __init__(self, net: Network, target: Target = NUMPY, inplace: bool | None = None):
        self.net = net
        self.p = target.printer_class()(_names(net))
        # In-place updates of a statement's own fresh array: NumPy and CuPy always; torch
        # only where autograd is off (inside the autograd Functions' passes), and never
        # for a sum (torch's V W^T + b is one fused addmm).
        self.inplace = target.inplace if inplace is None else inplace
        self.inplace_add = target.inplace_add
        self.buffers = target.buffers  # ``out=`` into dead buffers
        self.sizes = {k: sp.Integer(v) for k, v in net.sizes.items()}
        self.tmp = 0
        self.params = set(net.param_names)
        self.full_temps: dict[sp.Symbol, bool] = {}

    def prepare(self, expr: sp.Expr) -> sp.Expr:
        expr = _prepare(lower_fallbacks(expr).xreplace(self.sizes))
        # Non-integer rationals print as floats (0.5 * x, not (1/2) * x).
        return expr.xreplace({r: sp.Float(r, 17) for r in expr.atoms(sp.Rational) if r.q != 1})

    def code(self, expr: sp.Expr) -> str:
        return _strip_parens(respace(self.p.doprint(expr)))

    def program(self, items: list[tuple[str, sp.Expr, tuple[str, ...]]]) -> list[list[Statement]]:
        """Print ``target = expr`` for every item with one common-subexpression elimination
        over the whole program: a temporary is defined right before its first use, so a
        value the forward pass computes is reused by the backward pass. Over-long lines
        are split into temporaries too."""
        exprs = share_softmax_logsumexp([self.prepare(e) for _, e, _ in items])
        repl, reduced = sp.cse(exprs, symbols=self._symbols(), optimizations=None, order="none")
        temps = {sym for sym, _ in repl}
        first: dict[sp.Symbol, int] = {}
        for n_, e in enumerate(reduced):
            for t in e.free_symbols & temps:
                first[t] = min(first.get(t, n_), n_)
        for sym, e in reversed(repl):
            for t in e.free_symbols & temps:
                if sym in first:
                    first[t] = min(first.get(t, first[sym]), first[sym])
        out: list[list[Statement]] = []
        for n_, ((target, _, comment), e) in enumerate(zip(items, reduced, strict=True)):
            block: list[Statement] = []
            for sym, sub in repl:
                if first.get(sym) == n_:
                    block.extend(self._split(str(sym), sub, ()))
            block.extend(self._split(target, e, comment))
            out.append(block)
        return out

    def _symbols(self):
        while True:
            self.tmp += 1
            yield sp.Symbol(f"t{self.tmp}")

    def _is_full(self, e: sp.Expr) -> bool:
        """Whether ``e`` has the full batched shape (n, width) (not a row, column or scalar)."""
        if isinstance(e, Full):  # the component fallback broadcast to the batched shape
            return bool(e.args[1]) and e.args[1][0] == N
        if isinstance(e, Einsum):  # a batched product over every axis of the scope
            spec, slots = e.args[0].name, e.args[1].name
            return spec.split("->")[1].startswith("a") and not slots
        if isinstance(e, LOWERED):  # views and reductions of the component fallback
            return False
        if isinstance(e, Vec):
            return e.name not in self.params
        if e.is_Symbol:
            return self.full_temps.get(e, False)
        if isinstance(e, BMatMul | Softmax):
            return True
        if isinstance(e, RowSum | ColSum | BOuter | LogSumExp | Total | RowMax):
            return False
        return any(self._is_full(a) for a in e.args)

    def _inplace(self, target: str, expr: sp.Expr) -> tuple[str, tuple[str, ...]] | None:
        """``target = fresh; target op= rest``: one array allocated instead of one per operator.

        Only when some operand is a freshly computed array of the full shape (never a bare
        variable, which in-place updates would corrupt), and only for targets whose arrays
        may be written (not tensors saved for autograd, not immutable JAX arrays)."""
        if not self.inplace:
            return None
        if isinstance(expr, sp.Function) and len(expr.args) == 1:
            arg = expr.args[0]
            if arg.is_Symbol or not self._is_full(arg) or isinstance(arg, VIEWS):
                return None
            probe = self.code(expr.func(sp.Symbol(target)))
            if not _UFUNC_OUT.match(probe):
                return None
            return self.code(arg), (f"= {probe[:-1]}, out={target})",)
        if not (expr.is_Mul or (expr.is_Add and self.inplace_add)):
            return None
        args = list(expr.args)
        full = [
            a for a in args if not a.is_Symbol and self._is_full(a) and not isinstance(a, VIEWS)
        ]
        if not full:
            return None
        fresh = full[0]
        if expr.is_Add:  # a positive term first: the others added or subtracted, none negated
            fresh = next((a for a in full if not a.could_extract_minus_sign()), fresh)
        args.remove(fresh)
        ops: list[str] = []
        if expr.is_Add:
            for a in args:
                neg = a.could_extract_minus_sign()
                ops.append(f"{'-=' if neg else '+='} {self.code(-a if neg else a)}")
            return self.code(fresh), tuple(ops)
        scalars = sp.Mul(*[a for a in args if not (a.free_symbols - {N})])
        for a in args:
            if a.free_symbols - {N}:
                if a.is_Pow and a.exp == -1:
                    ops.append(f"/= {self.code(a.base)}")
                else:
                    ops.append(f"*= {self.code(a)}")
        if scalars != 1:
            num, den = sp.fraction(scalars)
            ops.append(f"/= {self.code(den)}" if num == 1 else f"*= {self.code(scalars)}")
        return self.code(fresh), tuple(ops)

    def _split(self, target: str, expr: sp.Expr, comment: tuple[str, ...]) -> list[Statement]:
        uses = frozenset(self.p.names.get(str(f), str(f)) for f in expr.free_symbols)
        return [replace(st, uses=st.uses | uses) for st in self._split1(target, expr, comment)]

    def _split1(self, target: str, expr: sp.Expr, comment: tuple[str, ...]) -> list[Statement]:
        sym = sp.Symbol(target)
        self.full_temps[sym] = self._is_full(expr)
        plan = self._inplace(target, expr)
        if plan is not None:
            first, ops = plan
            if all(len(target) + len(x) + 8 <= LINE for x in (first, *ops)):
                return [Statement(target, first, comment, ops)]
        code = self.code(expr)
        if len(target) + len(code) + 7 <= LINE or not (expr.is_Add or expr.is_Mul):
            return [Statement(target, code, comment)]
        out: list[Statement] = []
        args = list(expr.args)
        half = len(args) // 2
        parts = [expr.func(*args[:half]), expr.func(*args[half:])]
        syms = []
        for part in parts:
            s = next(self._symbols())
            out.extend(self._split1(str(s), part, ()))
            syms.append(s)
        out.append(Statement(target, self.code(expr.func(*syms)), comment))
        return out


#: Printed unary functions that can write into their argument (``out=``).
_UFUNC_OUT = re.compile(
    r"^(np\.(?:tanh|exp|expm1|log1p|sin|cos|sinh|cosh|abs|sqrt|log)|_sigmoid|_softmax)\((\w+)\)$"
)
_RELU = re.compile(r"^np\.maximum\((\w+), 0\)$")


def _reuse_dead_buffers(stmts: list[Statement], live: set[str], owned: set[str]) -> list[Statement]:
    """``a1 = np.tanh(z1)`` becomes ``a1 = np.tanh(z1, out=z1)`` when nothing reads ``z1``
    afterwards: the activation overwrites its pre-activation, as careful hand-written code
    does. Never for inputs or parameters (``owned`` by the caller) or values still needed."""
    later: set[str] = set(live)
    out: list[Statement] = []
    for st in reversed(stmts):
        code = st.code
        if not st.inplace:
            m = _UFUNC_OUT.match(code)
            r = _RELU.match(code)
            var = m.group(2) if m else r.group(1) if r else None
            if var and var not in later and var not in owned and var != st.target:
                code = code[:-1] + f", out={var})"
        out.append(replace(st, code=code))
        later |= st.uses
    return out[::-1]


def _strip_parens(code: str) -> str:
    """Drop one pair of parentheses around a whole expression (ruff removes them too)."""
    if not (code.startswith("(") and code.endswith(")")):
        return code
    depth = 0
    for pos, ch in enumerate(code):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and pos < len(code) - 1:
            return code
    return code[1:-1]


def comment_text(expr: sp.Expr) -> str:
    return plain(expr)


def _loss_expression(net: Network, log: list[Applied] | None = None) -> sp.Expr:
    """The per-sample loss, with each log of the output rewritten through the last stage's
    body where the stability rules then leave no log that can reach 0: log(softmax(z)_i) =
    z_i - logsumexp(z), log(sigmoid(u)) = -softplus(-u), log(1 - sigmoid(u)) = -softplus(u).
    These are identities, chosen from the expressions (never from a layer's or loss's name);
    other occurrences of the output keep reading its (stably computed) forward value."""
    body = net.loss.body
    if not net.stages:
        return body
    last = net.stages[-1]
    out = net.output

    def through(e: sp.Expr) -> sp.Expr:
        (t,) = [u for u in e.args[0].atoms(sp.Indexed) if u.base == out]
        value = last.body.xreplace({last.index: t.indices[0]})
        cand = sp.expand_log(sp.log(e.args[0].xreplace({t: value})), force=True)
        mine: list[Applied] = []
        cand = stabilise(cand, IR_RULES, mine)
        # Accepted only if every log left is a log-sum-exp (printed shifted by the max).
        if all(
            isinstance(g.args[0], sp.Sum) and isinstance(g.args[0].function, sp.exp)
            for g in cand.atoms(sp.log)
        ):
            if log is not None:
                log.append(Applied(LOG_THROUGH_OUTPUT, e, cand))
                log.extend(mine)
            return cand
        return e

    body = body.replace(
        lambda e: (
            isinstance(e, sp.log)
            and len({u for u in e.args[0].atoms(sp.Indexed) if u.base == out}) == 1
            and not e.args[0].atoms(sp.Sum)
        ),
        through,
    )
    pairs = {f.args[0] for f in body.atoms(F.softplus)}
    if any(-u in pairs for u in pairs):
        # softplus(-u) = softplus(u) - u: BCE becomes softplus(z) - y z, one softplus. The
        # products are expanded to combine the terms, but powers are not: a residual
        # (a - y)**2 stays a difference squared (expanded, it cancels near convergence).
        body = body.replace(
            lambda e: isinstance(e, F.softplus) and e.args[0].could_extract_minus_sign(),
            lambda e: F.softplus(-e.args[0]) + e.args[0],
        )
        body = body.replace(
            lambda e: isinstance(e, sp.Sum),
            lambda e: sp.Sum(
                sp.expand(e.function, multinomial=False, power_exp=False, power_base=False),
                *e.limits,
            ),
        )
    return body


def _free(stage) -> str:
    """The free indices a stage's component form is stated in (``i``, ``s, i`` for a stage
    that couples the samples, or ``c, h, w``)."""
    if stage.sample is not None:
        return f"{stage.sample}, {stage.index}"
    return ", ".join(str(s) for s in stage.indices) if stage.indices else str(stage.index)


def _wrap_comment(lines: tuple[str, ...], width: int = 94) -> tuple[str, ...]:
    """Comment lines broken at spaces so that ``    # line`` stays within 100 columns
    (conv nets' formulas are long); continuation lines are indented."""
    out: list[str] = []
    for line in lines:
        if len(line) <= width:
            out.append(line)
            continue
        out.extend(textwrap.wrap(line, width, subsequent_indent="    ", break_long_words=False))
    return tuple(out)


def _comment(d: Derivation, step) -> tuple[str, ...]:
    idx = ", ".join(str(s) for s in step.indices)
    lhs = f"dL/d{step.wrt}[{idx}]"
    comp = comment_text(step.component)
    what = {"loss": "loss gradient", "input": f"through {step.stage.label}" if step.stage else ""}
    lines = [f"{lhs} = {comp}"]
    if step.kind == "param":
        lines[0] = f"dL/d{step.wrt}[{idx}] = {comp}  (summed over the batch)"
    elif step.kind in what and what[step.kind]:
        lines.append(
            f"({what[step.kind]}: {step.jacobian} Jacobian"
            + (", fused with the loss)" if step.fused else ")")
        )
    return tuple(lines)


@dataclass(frozen=True)
class ProgramItem:
    """One target-free statement ``target = expr`` (batched, stabilised, before CSE)."""

    target: str
    expr: sp.Expr
    comment: tuple[str, ...]
    section: str  # "forward", "loss" or "backward"
    formula: str  # the component formula it computes (one sample)
    applied: tuple[Applied, ...]  # the stability rewrites that produced ``expr``
    # The full shape to broadcast to when ``expr`` is not of it (a constant activation or
    # loss gradient, a map summing over its input into a column), as shape code.
    widen: str | None = None


@dataclass(frozen=True)
class Program:
    """The whole target-free program: every statement, and the loss value's expression."""

    derivation: Derivation
    items: tuple[ProgramItem, ...]
    total: sp.Expr  # the batch sum of the per-sample loss, in the l<k> temporaries


def build_program(
    d: Derivation | Network, adjust: Callable[[Derivation], Derivation] | None = None
) -> Program:
    """The target-free program: forward, loss and backward statements as batched SymPy
    expressions with every stability rule applied (``calculus/stability.py``). Backends
    print it; nothing in it depends on what a layer or a loss is called.

    ``adjust`` marks up the stabilised derivation before it is printed (the input
    gradient, the loss's incoming gradient): a network the IR rules rewrote is derived
    again, so marks made on the derivation it came from would be lost."""
    d, ir_logs = derive_stable(d)
    if adjust is not None:
        d = adjust(d)
    net = d.network
    if not net.is_concrete:
        raise SpecError("every width must be a concrete integer to generate code")
    sizes = {k: sp.Integer(v) for k, v in net.sizes.items()}
    items: list[ProgramItem] = []
    shape_probe = _Printer(net)
    hide = {Vec(p): sp.Dummy(p) for p in net.param_names}
    unhide = {v: k for k, v in hide.items()}

    def rows_of(width: sp.Expr | int) -> str:
        return f"(X.shape[0], {net.size(width)})"

    def rows_of_shape(shape: tuple) -> str:  # (channels, h, w) quantities of conv nets
        return f"(X.shape[0], {', '.join(str(net.size(w)) for w in shape)})"

    def add(
        target: str,
        expr: sp.Expr,
        comment: tuple[str, ...],
        section: str,
        formula: str,
        ir: list[Applied] | tuple[Applied, ...] = (),
        full: str | None = None,
    ) -> None:
        log: list[Applied] = list(ir)
        # (before the component fallbacks are lowered, which split a sum into its terms)
        expr = stabilise(expr, BEFORE_LOWERING, log)
        expr = _prepare(lower_fallbacks(expr).xreplace(sizes), log)
        if section == "backward":
            # The guards clamp values that lie in [0, 1] (an output, a probability); a
            # parameter (a learnable temperature) has either sign: hidden from them.
            expr = stabilise(expr.xreplace(hide), GUARD_RULES, log).xreplace(unhide)
        widen = None if full is None or shape_probe._is_full(expr) else full
        items.append(ProgramItem(target, expr, comment, section, formula, tuple(log), widen))

    for f in d.forward:
        formula = f"{f.stage.name}[{_free(f.stage)}] = {comment_text(f.component)}"
        add(
            f.stage.name,
            batch(f.matrix),
            (formula,),
            "forward",
            formula,
            ir_logs[f.stage.name],
            # a stage that couples the samples is lowered with its sample axis: full already
            None
            if f.stage.sample is not None
            else rows_of_shape(f.stage.shape)
            if f.stage.shape
            else rows_of(f.stage.width),
        )
    # The loss: the mean over samples of the per-sample loss; logs left in it are clamped
    # (the stable log-softmax and log-sigmoid forms are recognised first).
    llog: list[Applied] = list(ir_logs["loss"])
    lbody = _loss_expression(net, llog)
    lformula = f"l = {comment_text(net.loss.body)}"
    lexpr = _prepare(batch(to_matrix(lbody, ())).xreplace(sizes), llog)
    lexpr = lexpr.replace(sp.log, SafeLog).replace(log1p, SafeLog1p)
    total = sp.S.Zero
    for n_, t in enumerate(sp.Add.make_args(lexpr), start=1):
        rows = [f for f in sp.Mul.make_args(t) if isinstance(f, RowSum)]
        inner, coeff = (rows[0].args[0], t / rows[0]) if len(rows) == 1 else (t, sp.S.One)
        widen = None
        if not shape_probe._is_full(inner):  # a constant term: one value per element
            widen = rows_of(net.output_width) if len(rows) == 1 else "(X.shape[0], 1)"
        items.append(ProgramItem(f"l{n_}", inner, (), "loss", lformula, tuple(llog), widen))
        llog = []  # the loss's rewrites are reported once, on its first statement
        total += coeff * Total(sp.Symbol(f"l{n_}"))
    if net.penalty is not None:  # added once to the batch loss (weight decay)
        names = sp.Tuple(*(sp.Symbol(p) for p in net.param_names))
        pen = lower(Comp(net.penalty, sp.Tuple(), sp.Tuple(), names), batched=False)
        pformula = f"penalty = {comment_text(net.penalty)} (added once per batch)"
        pen = _prepare(pen.xreplace(sizes))
        items.append(ProgramItem("l_penalty", pen, (), "loss", pformula, (), None))
        total += N * Total(sp.Symbol("l_penalty"))  # the template divides by n
    for step in d.steps:
        if step.needed:
            comment = _comment(d, step)
            expr = batched_step(step)
            if step.kind == "param":
                full = None
                if not (expr.free_symbols - {N}):  # a constant parameter gradient
                    full = str(tuple(net.size(w) for w in step.shape))
                add(step.grad, expr, comment, "backward", comment[0])
                if full is not None:
                    items[-1] = replace(items[-1], widen=full)
            else:
                # (N, width), the sample index explicit: lowered with its sample axis, full
                shape = (
                    None
                    if step.shape[0] == N
                    else rows_of_shape(step.shape)
                    if len(step.shape) > 1
                    else rows_of(step.shape[0])
                )
                add(step.grad, expr, comment, "backward", comment[0], (), shape)
    return Program(d, tuple(items), total)


#: Rules for component forms, applied before the component fallbacks are lowered to array
#: code (which splits a sum into its terms and a ratio of sums into reductions).
BEFORE_LOWERING = (SIGMOID_COMPLEMENT, COMPONENT_SOFTMAX, COMPONENT_LOGSUMEXP)


def _is_float(e: sp.Expr) -> bool:
    try:
        return isinstance(e.evalf(17), sp.Float)
    except (TypeError, ValueError):
        return False


def _prepare(expr: sp.Expr, log: list[Applied] | None = None) -> sp.Expr:
    expr = recognise(expr, log)
    # Constant subexpressions (sqrt(pi), 1/sqrt(2)) become one Float: printed as a Python
    # float, which keeps float32 arrays float32 (an np.float64 scalar would upcast them).
    # (Only plain numbers: a constant inside a layout node, RowSum(2), stays a node.)
    expr = expr.replace(
        lambda e: e.is_number and not e.is_Atom and not e.is_Rational and _is_float(e),
        lambda e: sp.Float(e.evalf(17), 17),
    )
    return expr.xreplace({c: sp.Float(c, 17) for c in expr.atoms(sp.NumberSymbol)})


def build_context(
    d: Derivation,
    *,
    optimizer: str | None = None,
    source: str | None = None,
    target: Target = NUMPY,
    inplace: bool | None = None,
    adjust: Callable[[Derivation], Derivation] | None = None,
) -> dict:
    """Everything the module template needs, printed with ``target``'s printer (``inplace``:
    whether statements may update their own fresh arrays; by default NumPy and CuPy;
    ``adjust``: as :func:`build_program`'s)."""
    prog = build_program(d, adjust)
    net = prog.derivation.network
    pr = _Printer(net, target, inplace)
    items = [(it.target, it.expr, it.comment) for it in prog.items]
    n_forward = sum(it.section == "forward" for it in prog.items)
    n_loss = n_forward + sum(it.section == "loss" for it in prog.items)
    # a loss statement that is a product of two full arrays is summed as a dot product
    items, total = dot_loss_terms(items, range(n_forward, n_loss), prog.total, pr._is_full)
    blocks = pr.program(items)
    widen(blocks, [it.widen for it in prog.items], target)
    loss_value = pr.code(pr.prepare(total))
    live = {net.output.name, *(str(s) for s in total.free_symbols)}
    owned = {"X", "Y", *net.param_names}
    flat = [s for b in blocks for s in b]
    if pr.inplace and pr.buffers:
        flat = _reuse_dead_buffers(flat, live, owned)
    flat = [replace(st, comment=_wrap_comment(st.comment)) for st in flat]
    n_f = sum(len(b) for b in blocks[:n_forward])
    n_l = sum(len(b) for b in blocks[:n_loss])
    forward, loss_statements, backward = flat[:n_f], flat[n_f:n_l], flat[n_l:]
    # (what no gradient reads goes: the input of a layer whose derivative is 0)
    backward = dead_code(backward, {"d" + p for p in net.param_names} | {"dx"})
    params = [
        {
            "name": p.name,
            "shape": net.shape(p),
            "init": p.init,
            "fan_in": net.size(p.fan_in) if p.fan_in is not None else 1,
            "grad": "d" + p.name,
        }
        for p in net.params
    ]
    src = source or net.source
    return {
        "version": __version__,
        # User-controlled strings land in the docstring: escaped (a Windows path, \"\"\").
        "name": py_docstring(net.name),
        "source": py_docstring(src),
        "sha256": _sha256(src, net),
        "params": params,
        "param_names_code": _param_names_code([p.name for p in net.params]),
        "input_size": str(tuple(net.input_shape)) if net.input_shape else net.size(net.input_width),
        "input_is_shape": bool(net.input_shape),
        "output_size": net.size(net.output_width),
        "output": net.output.name if net.stages else "X",
        "forward": forward,
        # a forward statement reads the batch size (a stage that couples the samples)
        "forward_n": any("n" in st.uses for st in forward),
        "loss_statements": loss_statements,
        "loss_value": loss_value,
        "backward": backward,
        "helpers": sorted(pr.p.helpers),
        "optimizer": optimizer,
        "loss_name": py_docstring(net.loss.name),
        "marker_line": marker_line("python"),
        # Targets must be distributions (cross-entropy): the module's checks refuse others.
        "y_simplex": bool(
            net.loss.requires_softmax or any(k == "sum_y_is_1" for k, _ in net.loss.identities)
        ),
    }


def _param_names_code(names: list[str]) -> str:
    """The PARAM_NAMES line, wrapped one name a line (as ruff formats it) when too long."""
    quoted = [f'"{n}"' for n in names]
    head = "PARAM_NAMES: tuple[str, ...] = ("
    one = head + ", ".join(quoted) + ("," if len(quoted) == 1 else "") + ")"
    if len(one) <= LINE:
        return one
    return head + "\n" + "".join(f"    {q},\n" for q in quoted) + ")"


def _sha256(src: str, net: Network) -> str:
    path = Path(src.split(":")[0]) if src else None
    if path is not None and path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    text = repr([(s.name, sp.srepr(s.body)) for s in net.stages]) + sp.srepr(net.loss.body)
    return hashlib.sha256(text.encode()).hexdigest()


def load_module(code: str, name: str = "symgrad_generated"):
    """Import generated source text as a module object (for tests and ``verify``)."""
    import types

    mod = types.ModuleType(name)
    exec(compile(code, f"<{name}>", "exec"), mod.__dict__)  # noqa: S102 - our own generated code
    return mod
