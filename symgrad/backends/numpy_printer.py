"""Printing stage: batched matrix expressions -> NumPy source text.

A ``sympy.printing.numpy.NumPyPrinter`` subclass with one ``_print_<Class>`` per
layout operator (``layout.py``) and per symgrad function (``functions.py``). Functions
print in numerically stable forms (sigmoid through tanh, softplus through logaddexp,
softmax and log-sum-exp with the max shifted out); the stable forms are identities,
not derivative rules, so every derivative still comes from the derivation.
"""

from __future__ import annotations

import sympy as sp
from sympy.printing.numpy import NumPyPrinter
from sympy.printing.precedence import PRECEDENCE

from symgrad.calculus.einsum import Place, einsum_spec
from symgrad.calculus.forward_values import tanh_from_ratio
from symgrad.calculus.layout import BMatMul, BOuter, ColSum, RowSum
from symgrad.ir.ops import Op, fill, op_of


class Softmax(sp.Function):
    """``exp(v) / RowSum(exp(v))`` recognised for a stable printing."""

    nargs = 1


class LogSumExp(sp.Function):
    """``log(RowSum(exp(v)))`` recognised for a stable printing."""

    nargs = 1


class Total(sp.Function):
    """The sum of every entry of an array (a loss value)."""

    nargs = 1


class RowMax(sp.Function):
    """The per-sample maximum, an (n, 1) column (for shifted exponentials)."""

    nargs = 1


def share_softmax_logsumexp(exprs: list[sp.Expr]) -> list[sp.Expr]:
    """Where softmax(u) and logsumexp(u) are both needed (cross-entropy), write both through
    m = max(u), e = exp(u - m), s = sum(e): the program-wide CSE then computes the shifted
    exponential once. Both forms stay stable."""
    both = set().union(*(e.atoms(Softmax) for e in exprs)) if exprs else set()
    lse = set().union(*(e.atoms(LogSumExp) for e in exprs)) if exprs else set()
    shared = {f.args[0] for f in both} & {f.args[0] for f in lse}
    if not shared:
        return exprs
    repl: dict[sp.Basic, sp.Expr] = {}
    for u in shared:
        m = RowMax(u)
        e = sp.exp(u - m)
        s = RowSum(e)
        repl[Softmax(u)] = e / s
        repl[LogSumExp(u)] = m + sp.log(s)
    return [e.xreplace(repl) for e in exprs]


class LogCosh(sp.Function):
    """``log(cosh(v))``, printed as ``logaddexp(v, -v) - log 2`` (no overflow)."""

    nargs = 1


class ClampMin(sp.Function):
    """``max(v, 1e-12)``: the guarded denominator of a BCE gradient (as PyTorch's)."""

    nargs = 1


class SafeLog(sp.Function):
    """A log in a loss value, clamped at -100 like PyTorch's BCE."""

    nargs = 1


def recognise(expr: sp.Expr) -> sp.Expr:
    """Replace softmax and log-sum-exp patterns by nodes that print stably."""

    def is_softmax(e: sp.Expr) -> bool:
        if not e.is_Mul:
            return False
        fs = sp.Mul.make_args(e)
        exps = [f for f in fs if isinstance(f, sp.exp)]
        dens = [f for f in fs if f.is_Pow and f.exp == -1 and isinstance(f.base, RowSum)]
        return (
            len(fs) == 2 and len(exps) == 1 and len(dens) == 1 and dens[0].base.args[0] == exps[0]
        )

    expr = tanh_from_ratio(expr)
    expr = expr.replace(
        lambda e: isinstance(e, sp.log | SafeLog) and isinstance(e.args[0], sp.cosh),
        lambda e: LogCosh(e.args[0].args[0]),
    )
    expr = expr.replace(
        is_softmax, lambda e: Softmax([f for f in e.args if isinstance(f, sp.exp)][0].args[0])
    )
    return expr.replace(
        lambda e: (
            isinstance(e, sp.log | SafeLog)
            and isinstance(e.args[0], RowSum)
            and isinstance(e.args[0].args[0], sp.exp)
        ),
        lambda e: LogSumExp(e.args[0].args[0].args[0]),
    )


class SymgradNumPyPrinter(NumPyPrinter):
    """Prints batched expressions; ``names`` maps Vec/Mat names to variable names."""

    def __init__(self, names: dict[str, str] | None = None, settings=None):
        super().__init__(settings or {})
        self.names = names or {}
        self.helpers: set[str] = set()

    def _print(self, expr, **kwargs):
        # Functions print from the op registry (one entry per op, ir/ops.py).
        op = op_of(expr)
        if op is not None and op.func is not sp.sqrt:
            return self._print_op(op, expr)
        return super()._print(expr, **kwargs)

    def _print_op(self, op: Op, expr: sp.Expr) -> str:
        if op.helper:
            self.helpers.add(op.helper)
        args = list(expr.args)
        if "{1}" in op.numpy and len(args) > 2:  # n-ary max/min: fold left
            return self._print_op(op, expr.func(expr.func(*args[:-1], evaluate=False), args[-1]))
        fields: dict[str, str] = {}
        for n_, a in enumerate(args):
            fields[str(n_)] = self._print(a)
            fields[f"{n_}p"] = self._atom(a)
        return fill(op.numpy, fields)

    def _module_format(self, fqn, register=True):
        return super()._module_format(fqn, register).replace("numpy.", "np.")

    def _print_Symbol(self, expr):
        return self.names.get(expr.name, expr.name)

    _print_Vec = _print_Symbol
    _print_Mat = _print_Symbol
    _print_Dummy = _print_Symbol

    def _atom(self, e: sp.Expr) -> str:
        """``e`` printed as an operand of a method call or ``@`` (parenthesised unless atomic)."""
        text = self._print(e)
        if e.is_Symbol or isinstance(e, sp.Function) and not isinstance(e, BMatMul):
            return text
        return f"({text})"

    def _print_BMatMul(self, expr):
        # Parenthesised: in Python * and @ share a precedence level, so a * (b @ W) must not
        # print as a * b @ W. The code generator drops parentheses around a whole statement.
        v, w, t = expr.args
        return f"({self._atom(v)} @ {self._print(w)}{'.T' if t == 1 else ''})"

    def _print_BOuter(self, expr):
        # numpy's matmul takes a slow non-BLAS path for a batch of one; np.dot does not,
        # but np.dot is a little slower than matmul for large batches: pick by batch size.
        u, v = self._atom(expr.args[0]), self._atom(expr.args[1])
        return f"({u}.T @ {v} if n > 1 else np.dot({u}.T, {v}))"

    def _print_ColSum(self, expr):
        return f"{self._atom(expr.args[0])}.sum(axis=0)"

    def _print_RowSum(self, expr):
        return f"{self._atom(expr.args[0])}.sum(axis=1, keepdims=True)"

    def _print_Softmax(self, expr):
        self.helpers.add("_softmax")
        return f"_softmax({self._print(expr.args[0])})"

    def _print_LogSumExp(self, expr):
        self.helpers.add("_logsumexp")
        return f"_logsumexp({self._print(expr.args[0])})"

    def _print_Total(self, expr):
        return f"np.sum({self._print(expr.args[0])})"

    def _print_RowMax(self, expr):
        return f"{self._atom(expr.args[0])}.max(axis=1, keepdims=True)"

    def _print_Pow(self, expr, rational=False):
        b, e = expr.base, expr.exp
        v = float(e) if e.is_Number else None  # rationals may have become Floats already
        if v == -1:
            return f"1 / {self.parenthesize(b, PRECEDENCE['Pow'])}"
        if v == 0.5:
            return f"np.sqrt({self._print(b)})"
        if v == -0.5:
            return f"1 / np.sqrt({self._print(b)})"
        if e.is_Integer and e < 0:
            return f"1 / {self.parenthesize(b**-e, PRECEDENCE['Mul'])}"
        return super()._print_Pow(expr, rational=rational)

    def _print_LogCosh(self, expr):
        v = self._print(expr.args[0])
        return f"np.logaddexp({v}, -{self._atom(expr.args[0])}) - np.log(2)"

    def _print_ClampMin(self, expr):
        return f"np.maximum({self._print(expr.args[0])}, 1e-12)"

    def _print_SafeLog(self, expr):
        self.helpers.add("_log")
        return f"_log({self._print(expr.args[0])})"

    # -- the component fallback (calculus/einsum.py): broadcasting, reductions, einsum ----
    def _print_Place(self, expr):
        sym, pos, ndim, mine = expr.args
        name = self._print(sym)
        axes = ([0] if int(mine) else []) + [int(q) for q in pos]
        order = sorted(range(len(axes)), key=axes.__getitem__)
        if order != list(range(len(axes))):
            name = f"{name}.T" if len(axes) == 2 else f"np.transpose({name}, {tuple(order)})"
        return name + self._slots(set(axes), int(ndim))

    @staticmethod
    def _slots(present: set[int], ndim: int) -> str:
        """``[:, None, :]``: the axes an array fills in an ``ndim`` broadcast."""
        if present == set(range(ndim)):
            return ""
        return "[" + ", ".join(":" if d in present else "None" for d in range(ndim)) + "]"

    def _reduce(self, fn: str, expr) -> str:
        return f"np.{fn}({self._print(expr.args[0])}, axis={int(expr.args[1])})"

    def _print_AxisSum(self, expr):
        axis = int(expr.args[1])
        plan = einsum_spec(expr.args[0], axis)
        if plan is None:
            return self._reduce("sum", expr)
        spec, ops, keep = plan
        ndim = int(next(iter(expr.args[0].atoms(Place))).args[2])
        args = ", ".join(self._print(name) for name, _ in ops)
        out_axes = [d for d in range(ndim) if d != axis]
        present = {out_axes.index(q) for q in keep}
        return f'np.einsum("{spec}", {args})' + self._slots(present, ndim - 1)

    def _print_Einsum(self, expr):
        spec, slots, *ops = expr.args
        args = ", ".join(self._print(o) for o in ops)
        return f'np.einsum("{spec.name}", {args}){slots.name}'

    def _print_AxisMax(self, expr):
        return self._reduce("max", expr)

    def _print_AxisMin(self, expr):
        return self._reduce("min", expr)

    def _print_ShareMax(self, expr):
        self.helpers.add("_share_max")
        return f"_share_max({self._print(expr.args[0])}, {int(expr.args[1])})"

    def _print_ShareMin(self, expr):
        self.helpers.add("_share_max")
        return f"_share_max(-{self._atom(expr.args[0])}, {int(expr.args[1])})"

    def _print_Full(self, expr):
        shape = ", ".join(self._print(s) for s in expr.args[1]) + (
            "," if len(expr.args[1]) == 1 else ""
        )
        return f"np.broadcast_to({self._print(expr.args[0])}, ({shape})).copy()"

    def _arange(self, size, pos, ndim) -> str:
        shape = ["1"] * int(ndim)
        shape[int(pos)] = self._print(size)
        return f"np.arange({self._print(size)}).reshape({', '.join(shape)})"

    def _print_Arange(self, expr):
        return self._arange(*expr.args)

    def _print_Delta(self, expr):
        a, pa, b, pb, ndim = expr.args
        return f"({self._arange(a, pa, ndim)} == {self._arange(b, pb, ndim)})"

    # -- (channels, [height,] width) arrays: conv, pooling, flatten (calculus/conv_form.py) --
    def _tuple(self, t) -> str:
        vals = [str(int(v)) for v in t]
        return f"({vals[0]},)" if len(vals) == 1 else f"({', '.join(vals)})"

    def _print_Windows(self, expr):
        self.helpers.add("_conv")
        a, k, s, p, fill = expr.args
        args = f"{self._print(a)}, {self._tuple(k)}, {self._tuple(s)}, {self._tuple(p)}"
        return f"_windows({args}{', -np.inf' if fill == 1 else ''})"

    def _print_Correlate(self, expr):
        return f"_correlate({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _print_CorrWeightGrad(self, expr):
        return f"_correlate_weight_grad({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _print_CorrInputGrad(self, expr):
        self.helpers.add("_conv")
        g, w, s, p, size = expr.args
        return (
            f"_correlate_input_grad({self._print(g)}, {self._print(w)}, "
            f"{self._tuple(s)}, {self._tuple(p)}, {self._tuple(size)})"
        )

    def _print_ChannelBias(self, expr):
        return (
            f"{self._print(expr.args[0])}.reshape({', '.join(['-1'] + ['1'] * int(expr.args[1]))})"
        )

    def _print_ChannelSum(self, expr):
        axes = ", ".join(str(a) for a in range(2, 2 + int(expr.args[1])))
        return f"{self._atom(expr.args[0])}.sum(axis=(0, {axes}))"

    def _print_WindowSum(self, expr):
        w = self._print(expr.args[0])
        return f"_window_sum({w})"

    def _print_WindowMax(self, expr):
        return f"_window_max({self._print(expr.args[0])})"

    def _print_WindowSumGrad(self, expr):
        self.helpers.add("_conv")
        g, k, s, p, size = expr.args
        return (
            f"_window_sum_grad({self._print(g)}, {self._tuple(k)}, {self._tuple(s)}, "
            f"{self._tuple(p)}, {self._tuple(size)})"
        )

    def _print_WindowMaxGrad(self, expr):
        g, w, s, p, size = expr.args
        return (
            f"_window_max_grad({self._print(g)}, {self._print(w)}, {self._tuple(s)}, "
            f"{self._tuple(p)}, {self._tuple(size)})"
        )

    def _print_Flatten(self, expr):
        a = self._atom(expr.args[0])
        return f"{a}.reshape({a}.shape[0], -1)"

    def _print_Unflatten(self, expr):
        shape = ", ".join(str(int(v)) for v in expr.args[1])
        return f"{self._atom(expr.args[0])}.reshape(-1, {shape})"

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Rational(self, expr):
        return repr(float(expr)) if expr.q != 1 else str(expr.p)

    def _print_Half(self, expr):
        return "0.5"


__all__ = [
    "BMatMul",
    "BOuter",
    "ColSum",
    "ClampMin",
    "LogCosh",
    "LogSumExp",
    "RowSum",
    "SafeLog",
    "Softmax",
    "SymgradNumPyPrinter",
    "recognise",
]
