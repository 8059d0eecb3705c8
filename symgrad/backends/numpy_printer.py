"""Stage 6 (print): batched matrix expressions -> NumPy source text.

A ``sympy.printing.numpy.NumPyPrinter`` subclass with one ``_print_<Class>`` per
layout operator (``layout.py``) and per node of the stability pass
(``calculus/stability.py``: softmax and log-sum-exp with the row maximum shifted out,
log-cosh, clamps); functions print from the op registry (``ir/ops.py``) in stable forms
(sigmoid through tanh, softplus through log1p). Constants print as Python floats and
selects keep the arrays' dtype, so float32 stays float32.
"""

from __future__ import annotations

import sympy as sp
from sympy.printing.numpy import NumPyPrinter
from sympy.printing.precedence import PRECEDENCE

from symgrad.calculus.einsum import Arange, Place
from symgrad.calculus.layout import BMatMul, BOuter, ColSum, RowSum
from symgrad.calculus.stability import (
    ClampMin,
    LogCosh,
    LogSumExp,
    RowMax,
    SafeLog,
    SafeLog1p,
    Softmax,
    Total,
)
from symgrad.ir.einsum_blas import matmul_plan, matmul_text, reshape_plan, reshape_text
from symgrad.ir.ops import Op, fill, op_of


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
            # Both built unevaluated: an evaluated Max(Max(a, b), c) flattens back to
            # Max(a, b, c) (and SymPy may recurse without end comparing its arguments).
            inner = expr.func(*args[:-1], evaluate=False)
            return self._print_op(op, expr.func(inner, args[-1], evaluate=False))
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

    def _print_Heaviside(self, expr):
        # np.heaviside keeps float32 (SymPy's default np.select of [0, 0.5, 1] is float64);
        # H(0) = 1/2 as SymPy defines it, which is also torch.maximum's split gradient at ties.
        h0 = expr.args[1] if len(expr.args) > 1 else sp.S.Half
        return f"np.heaviside({self._print(expr.args[0])}, {float(h0)!r})"

    def _print_Total(self, expr):
        # the method: np.sum(a) dispatches through Python first (a few µs at a small batch)
        return f"{self._atom(expr.args[0])}.sum()"

    def _print_VDot(self, expr):
        # sum(a * b) over every element as one BLAS dot product: no (n, C) product array
        return f"np.vdot({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _as_ordered_terms(self, expr, order=None):
        # A sum opens with a positive term where it has one: z - m, not -m + z (which
        # negates m first: one more array operation).
        terms = super()._as_ordered_terms(expr, order=order)
        if expr.is_Add and terms and terms[0].could_extract_minus_sign():
            pos = next((t for t in terms if not t.could_extract_minus_sign()), None)
            if pos is not None:
                terms.remove(pos)
                terms.insert(0, pos)
        return terms

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
        self.helpers.add("_logcosh")
        return f"_logcosh({self._print(expr.args[0])})"

    def _print_ClampMin(self, expr):
        return f"np.maximum({self._print(expr.args[0])}, 1e-12)"

    def _print_SafeLog(self, expr):
        self.helpers.add("_log")
        return f"_log({self._print(expr.args[0])})"

    def _print_SafeLog1p(self, expr):
        self.helpers.add("_log1p")
        return f"_log1p({self._print(expr.args[0])})"

    # Constants print as Python floats: NumPy treats a Python scalar as "weak", so float32
    # arrays stay float32 (np.float64 scalars such as np.sqrt(np.pi) would upcast them).
    def _print_Pi(self, expr):
        return repr(float(expr))

    def _print_Exp1(self, expr):
        return repr(float(expr))

    def _print_NumberSymbol(self, expr):
        return repr(float(expr))

    def _print_Piecewise(self, expr):
        # Nested np.where with Python-scalar branches keeps the arrays' dtype (np.select
        # turns a list of Python numbers into a float64 array and upcasts float32).
        if expr.args[-1].cond != True:  # noqa: E712 - SymPy's true, not Python's
            raise ValueError("a Piecewise without an otherwise branch cannot be printed")
        out = self._print(expr.args[-1].expr)
        for e, c in reversed(expr.args[:-1]):
            out = f"np.where({self._print(c)}, {self._print(e)}, {out})"
        if all(e.is_number for e, _ in expr.args):
            # Only scalars: np.where would make an int64/float64 array. The arrays compared
            # in the conditions carry the working dtype.
            arrays = sorted(
                (s for _, c in expr.args for s in c.free_symbols if not s.is_number), key=str
            )
            if arrays:
                out = f"{out}.astype({self._print(arrays[0])}.dtype)"
        return out

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
        plan = expr.einsum_plan()
        if plan is None:
            stored = _stored_axis(expr.args[0], axis)
            if stored is not None:  # the sum over the array's own axis: no transposed view
                return f"np.sum({self._print(expr.args[0].args[0])}, axis={stored})"
            return self._reduce("sum", expr)
        spec, ops, keep = plan
        ndim = int(next(iter(expr.args[0].atoms(Place))).args[2])
        out_axes = [d for d in range(ndim) if d != axis]
        present = {out_axes.index(q) for q in keep}
        return self._einsum(spec, [name for name, _ in ops], self._slots(present, ndim - 1))

    def _print_Einsum(self, expr):
        spec, slots, *ops = expr.args
        return self._einsum(spec.name, ops, slots.name)

    def _einsum(self, spec: str, ops: list, slots: str) -> str:
        """An einsum, as a (batched) matrix product ``@`` where it is one (BLAS)."""
        names = [self._print(o) for o in ops]
        plan = matmul_plan(spec)
        if plan is not None:
            return f"({matmul_text(plan, names, self._permuted)})" + slots
        general = reshape_plan(spec)
        if general is not None:  # several row, column or summed axes: merged by reshapes
            return reshape_text(general, names, self._permuted) + slots
        return f'np.einsum("{spec}", {", ".join(names)}){slots}'

    @staticmethod
    def _permuted(name: str, perm: tuple[int, ...]) -> str:
        """Array ``name`` with its axes in the order ``perm`` (a view)."""
        n = len(perm)
        if n == 2:
            return f"{name}.T"
        if perm == (*range(n - 2), n - 1, n - 2):
            return f"np.swapaxes({name}, -1, -2)"
        return f"np.transpose({name}, {perm})"

    def _print_AxisMax(self, expr):
        return self._reduce("max", expr)

    def _print_AxisSoftmax(self, expr):
        self.helpers.add("_softmax_axis")
        return f"_softmax_axis({self._print(expr.args[0])}, {int(expr.args[1])})"

    def _print_AxisMin(self, expr):
        return self._reduce("min", expr)

    def _print_ShareMax(self, expr):
        # the arg-max indicator, ties sharing equally (as torch.amax): the module's helper
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

    def _print_Gather(self, expr):
        # index arithmetic: clipped positions, and a mask that reads zero outside the array
        sym, pos, mine, *scope = expr.args
        name = self._print(sym)
        lead = 1 if int(mine) else 0
        idx, ok = [], []
        for k, p in enumerate(pos):
            e = self._print(p)
            if not p.has(Arange):  # a constant position: over every axis of the scope
                e = f"np.asarray({e})"
            last = f"{name}.shape[{k + lead}] - 1"
            idx.append(f"np.clip({e}, 0, {last})")
            ok.append(f"({e} >= 0) & ({e} <= {last})")
        sel = ", ".join([":"] * lead + idx)
        # one fixed entry of each sample, broadcast over the scope's axes
        spread = f"[:{', None' * int(scope[0])}]" if scope and lead else ""
        return f"({name}[{sel}] * ({' & '.join(ok)})){spread}"

    def _print_Masked(self, expr):
        cond, body = expr.args
        text = " & ".join(self._print(c) for c in cond)
        return f"np.where({text}, {self._print(body)}, 0)"

    def _print_IndexIn(self, expr):
        e, lo, hi = (self._print(a) for a in expr.args)
        return f"(({e} >= {lo}) & ({e} <= {hi}))"

    def _print_IndexDivides(self, expr):
        e, d = (self._print(a) for a in expr.args)
        return f"(({e}) % {d} == 0)"

    def _print_Delta(self, expr):
        a, pa, b, pb, ndim = expr.args
        return f"({self._arange(a, pa, ndim)} == {self._arange(b, pb, ndim)})"

    # -- (channels, [height,] width) arrays: conv, pooling, flatten (calculus/conv_form.py) --
    def _tuple(self, t) -> str:
        vals = [str(int(v)) for v in t]
        return f"({vals[0]},)" if len(vals) == 1 else f"({', '.join(vals)})"

    def _print_Windows(self, expr):
        self.helpers.add("_conv")
        a, k, s, p, fill = expr.args[:5]
        args = f"{self._print(a)}, {self._tuple(k)}, {self._tuple(s)}, {self._tuple(p)}"
        return f"_windows({args}{', -np.inf' if fill == 1 else ''}{self._dilation(expr)})"

    def _dilation(self, expr) -> str:
        """``, dilation=(2,)`` for a node carrying a dilation (its optional 6th argument)."""
        return f", dilation={self._tuple(expr.args[5])}" if len(expr.args) > 5 else ""

    def _print_Correlate(self, expr):
        return f"_correlate({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _print_CorrWeightGrad(self, expr):
        return f"_correlate_weight_grad({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _print_CorrInputGrad(self, expr):
        self.helpers.add("_conv")
        g, w, s, p, size = expr.args[:5]
        return (
            f"_correlate_input_grad({self._print(g)}, {self._print(w)}, "
            f"{self._tuple(s)}, {self._tuple(p)}, {self._tuple(size)}{self._dilation(expr)})"
        )

    def _print_ChannelBias(self, expr):
        return (
            f"{self._print(expr.args[0])}.reshape({', '.join(['-1'] + ['1'] * int(expr.args[1]))})"
        )

    def _print_ChannelSum(self, expr):
        axes = ", ".join(str(a) for a in range(2, 2 + int(expr.args[1])))
        return f"{self._atom(expr.args[0])}.sum(axis=(0, {axes}))"

    def _print_WindowSum(self, expr):
        self.helpers.add("_conv")
        a, k, st, p = expr.args
        return f"_sum_pool({self._print(a)}, {self._tuple(k)}, {self._tuple(st)}, {self._tuple(p)})"

    def _print_WindowMax(self, expr):
        self.helpers.add("_conv")
        a, k, st, p = expr.args
        return f"_max_pool({self._print(a)}, {self._tuple(k)}, {self._tuple(st)}, {self._tuple(p)})"

    def _print_WindowSumGrad(self, expr):
        self.helpers.add("_conv")
        g, k, s, p, size = expr.args
        return (
            f"_sum_pool_grad({self._print(g)}, {self._tuple(k)}, {self._tuple(s)}, "
            f"{self._tuple(p)}, {self._tuple(size)})"
        )

    def _print_WindowMaxGrad(self, expr):
        self.helpers.add("_conv")
        g, a, k, s, p, size, top = expr.args
        return (
            f"_max_pool_grad({self._print(g)}, {self._print(a)}, {self._print(top)}, "
            f"{self._tuple(k)}, {self._tuple(s)}, {self._tuple(p)}, {self._tuple(size)})"
        )

    def _print_WindowMaxTangent(self, expr):
        self.helpers |= {"_conv", "_max_pool_pick"}
        r, a, k, s, p, top = expr.args
        return (
            f"_max_pool_pick({self._print(r)}, {self._print(a)}, {self._print(top)}, "
            f"{self._tuple(k)}, {self._tuple(s)}, {self._tuple(p)})"
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
    "ClampMin",
    "ColSum",
    "LogCosh",
    "LogSumExp",
    "RowMax",
    "RowSum",
    "SafeLog",
    "SafeLog1p",
    "Softmax",
    "SymgradNumPyPrinter",
    "Total",
]


def _stored_axis(e: sp.Expr, axis: int) -> int | None:
    """For an array placed on every axis of its scope in another order (``Place``), the
    axis of the array itself that lands on ``axis``, when summing it there leaves the
    other axes in the scope's order; else None."""
    if not isinstance(e, Place):
        return None
    _, pos, ndim, mine = e.args
    axes = ([0] if int(mine) else []) + [int(q) for q in pos]
    if sorted(axes) != list(range(int(ndim))) or axis not in axes:
        return None
    rest = [a for a in axes if a != axis]
    return axes.index(axis) if rest == sorted(rest) else None
