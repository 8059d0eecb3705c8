"""Stage 6 (print): the lowered program -> a module's template context.

The driver lowers the derivation first (``pipeline.lower``, ``calculus/lower.py``: the
batched, stabilised, target-free program). Here a target's printer prints it: one CSE
over the whole program, over-long lines split, in-place updates of fresh arrays and
dead buffers reused where the target allows; the template only loops over the printed
statements and formats them (``templates/``). Every backend prints the same
:class:`~symgrad.calculus.lower.LoweredProgram`.
"""

from __future__ import annotations

import hashlib
import re
import textwrap
from dataclasses import replace
from pathlib import Path

import sympy as sp

from symgrad._version import __version__
from symgrad.backends.loss_dot import dot_loss_terms
from symgrad.backends.pyformat import respace
from symgrad.backends.statement import Statement, dead_code, reads
from symgrad.backends.target import NUMPY, Target
from symgrad.backends.widening import widen
from symgrad.calculus.conv_form import VIEWS
from symgrad.calculus.layout import N
from symgrad.calculus.lower import LoweredProgram, Shapes
from symgrad.calculus.reverse import Derivation
from symgrad.derivations import lower
from symgrad.escape import py_docstring
from symgrad.files import marker_line
from symgrad.ir.network import Network

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
        self.tmp = 0
        self.shapes = Shapes(net.param_names)
        self.full_temps: dict[sp.Symbol, bool] = {}

    def code(self, expr: sp.Expr) -> str:
        return _strip_parens(respace(self.p.doprint(expr)))

    def program(
        self, prog: LoweredProgram, code: list[sp.Expr] | None = None
    ) -> list[list[Statement]]:
        """Print ``target = expr`` for every item with one common-subexpression elimination
        over the whole program (its ``code``, or ``code`` given: the same expressions with
        a printing choice made): a temporary is defined right before its first use, so a
        value the forward pass computes is reused by the backward pass. Over-long lines
        are split into temporaries too."""
        items = [(it.target, it.expr, it.comment) for it in prog.items]
        exprs = list(prog.code) if code is None else list(code)
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
        return self.shapes.full(e, self.full_temps)

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


def build_context(
    d: Derivation,
    *,
    optimizer: str | None = None,
    source: str | None = None,
    target: Target = NUMPY,
    inplace: bool | None = None,
    autodiff: bool = False,
) -> dict:
    """Everything the module template needs: the lowered program (``pipeline.lower``)
    printed with ``target``'s printer (``inplace``: whether statements may update their
    own fresh arrays; by default NumPy and CuPy; ``autodiff``: the program marked for
    the autograd targets, with ``dx`` and the loss's incoming gradient)."""
    prog = lower(d, autodiff=autodiff)
    net = prog.derivation.network
    pr = _Printer(net, target, inplace)
    n_forward = sum(it.section == "forward" for it in prog.items)
    n_loss = n_forward + sum(it.section == "loss" for it in prog.items)
    # a loss statement that is a product of two full arrays is summed as a dot product
    code = [(it.target, e, it.comment) for it, e in zip(prog.items, prog.code, strict=True)]
    code, total = dot_loss_terms(code, range(n_forward, n_loss), prog.total_code, pr._is_full)
    blocks = pr.program(prog, [e for _, e, _ in code])
    widen(blocks, [it.widen for it in prog.items], target)
    loss_value = pr.code(total)
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
    # (and a forward value nothing reads: the input of a layer that folds to a constant)
    forward = dead_code(forward, {net.output.name} | reads(loss_statements + backward))
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
        # the parameters each function reads (a constant layer's are not unpacked)
        "forward_reads": sorted(reads(forward)),
        "program_reads": sorted(reads(forward + loss_statements + backward)),
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
