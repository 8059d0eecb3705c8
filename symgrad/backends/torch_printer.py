"""Stage 6 (print), PyTorch target: batched matrix expressions -> ``torch`` source text.

The NumPy printer's subclass (SymForce's shape: one printer per backend). Most NumPy
functions have a ``torch`` namesake, so the NumPy text is re-prefixed; the rest get their
own ``_print_<Class>``: torch's ``maximum``/``minimum`` take tensors only, its reductions
are ``sum(dim, keepdim=True)`` / ``amax``, and its stable softmax and log-sum-exp are
library calls. Functions print from the op registry's torch spelling (``ir/ops.py``).
Nothing here writes into a buffer (no ``out=``): tensors may be saved for autograd or
traced by ``torch.compile``.
"""

from __future__ import annotations

import math
import re

import sympy as sp

from symgrad.backends.numpy_printer import SymgradNumPyPrinter
from symgrad.calculus.einsum import Einsum, Place
from symgrad.calculus.layout import BMatMul
from symgrad.calculus.matrix_form import Vec
from symgrad.ir.ops import Op, fill

_NP = re.compile(r"\bnp\.")


class ReprefixPrinter(SymgradNumPyPrinter):
    """The NumPy printer with ``np.`` replaced by another array module's prefix.

    For array libraries that mirror NumPy's function names (``jax.numpy``, ``cupy``,
    mostly ``torch``). Subclasses set ``prefix`` and override what differs.
    """

    prefix = "np."
    #: Which spelling of the op registry's entries (``ir/ops.py``) to print.
    spelling = "numpy"

    def doprint(self, expr, assign_to=None):
        return _NP.sub(self.prefix, super().doprint(expr, assign_to))

    def _print_op(self, op: Op, expr: sp.Expr) -> str:
        if self.spelling == "numpy":
            return super()._print_op(op, expr)
        template = getattr(op, self.spelling)
        args = list(expr.args)
        if "{1}" in template and len(args) > 2:  # n-ary max/min: fold left (unevaluated,
            args = [expr.func(*args[:-1], evaluate=False), args[-1]]  # else it flattens again)
        fields: dict[str, str] = {}
        for n_, a in enumerate(args):
            fields[str(n_)] = self._print(a)
            fields[f"{n_}p"] = self._atom(a)
        return fill(template, fields)

    # The component fallback's arg-max indicator (the NumPy module's helper _share_max),
    # inline: ties share the gradient equally, as torch.amax.
    def _share(self, e: str, k: int, ext: str) -> str:
        hit = f"({e} == np.{ext}({e}, axis={k}, keepdims=True))"
        return f"({hit} / np.sum({hit}, axis={k}, keepdims=True)).astype({e}.dtype)"

    def _print_ShareMax(self, expr):
        return self._share(self._atom(expr.args[0]), int(expr.args[1]), "max")

    def _print_ShareMin(self, expr):
        return self._share(self._atom(expr.args[0]), int(expr.args[1]), "min")

    # The NumPy module's helpers _log1p and _logcosh, inline (re-prefixed by doprint).
    def _print_SafeLog1p(self, expr):
        return f"np.maximum(np.log1p({self._print(expr.args[0])}), -100.0)"

    def _print_LogCosh(self, expr):
        u = f"np.abs({self._print(expr.args[0])})"
        near = f"np.log1p(2.0 * np.sinh(0.5 * np.minimum({u}, 1.0)) ** 2)"
        far = f"{u} + np.log1p(np.exp(-2.0 * {u})) - {math.log(2)!r}"
        return f"np.where({u} < 1.0, {near}, {far})"

    def _print_BOuter(self, expr):
        # The NumPy form picks np.dot for a batch of one (a BLAS quirk of NumPy's matmul).
        return f"({self._atom(expr.args[0])}.T @ {self._atom(expr.args[1])})"


class TorchPrinter(ReprefixPrinter):
    """Prints batched expressions as ``torch`` code (tensors of shape (n, width))."""

    prefix = "torch."
    spelling = "torch"

    def _print_Add(self, expr, order=None):
        # V W^T + b as one fused BLAS call (torch.addmm, what nn.Linear runs).
        mm = [a for a in expr.args if isinstance(a, BMatMul)]
        rest = [a for a in expr.args if not isinstance(a, BMatMul)]
        if len(mm) == 1 and len(rest) == 1 and isinstance(rest[0], Vec):
            v, w, t = mm[0].args
            wt = f"{self._print(w)}{'.T' if t == 1 else ''}"
            return f"torch.addmm({self._print(rest[0])}, {self._print(v)}, {wt})"
        return super()._print_Add(expr, order)

    def _print_Mul(self, expr):
        # y * (g - sum(y * g, axis)) along the last axis (a softmax's vector-Jacobian
        # product, found by structure): one fused library kernel instead of four passes
        vjp = softmax_vjp(expr)
        if vjp is not None:
            y, g, axis = vjp
            self.helpers.add("_softmax_vjp")
            return f"_softmax_vjp({self._print(y)}, {self._print(g)}, {axis})"
        return super()._print_Mul(expr)

    def _print_VDot(self, expr):
        # one BLAS dot product over the flattened tensors (torch.dot takes 1-D tensors only)
        a, b = self._atom(expr.args[0]), self._atom(expr.args[1])
        return f"torch.dot({a}.reshape(-1), {b}.reshape(-1))"

    def _print_ColSum(self, expr):
        return f"{self._atom(expr.args[0])}.sum(0)"

    def _print_RowSum(self, expr):
        return f"{self._atom(expr.args[0])}.sum(1, keepdim=True)"

    def _print_RowMax(self, expr):
        return f"{self._atom(expr.args[0])}.amax(1, keepdim=True)"

    # The component fallback (calculus/einsum.py): torch's spellings where NumPy's differ.
    def _print_AxisMax(self, expr):
        return f"{self._atom(expr.args[0])}.amax({int(expr.args[1])})"

    def _print_AxisMin(self, expr):
        return f"{self._atom(expr.args[0])}.amin({int(expr.args[1])})"

    def _share(self, e: str, k: int, ext: str) -> str:
        hit = f"({e} == {e}.a{ext}({k}, keepdim=True)).to({e}.dtype)"
        return f"({hit} / {hit}.sum({k}, keepdim=True))"

    def _print_Full(self, expr):
        shape = ", ".join(self._print(s) for s in expr.args[1])
        return f"torch.as_tensor({self._print(expr.args[0])}).expand({shape}).clone()"

    def _print_Place(self, expr):
        text = super()._print_Place(expr)
        return text.replace("np.transpose(", "torch.permute(")

    @staticmethod
    def _permuted(name: str, perm: tuple[int, ...]) -> str:
        text = SymgradNumPyPrinter._permuted(name, perm)
        return text.replace("np.transpose(", "torch.permute(")

    def _print_AxisSoftmax(self, expr):
        return f"torch.softmax({self._print(expr.args[0])}, {int(expr.args[1])})"

    def _print_Softmax(self, expr):
        return f"torch.softmax({self._print(expr.args[0])}, 1)"

    def _print_LogSumExp(self, expr):
        return f"torch.logsumexp({self._print(expr.args[0])}, 1, keepdim=True)"

    def _print_LogCosh(self, expr):
        v = self._print(expr.args[0])
        return f"torch.logaddexp({v}, -{self._atom(expr.args[0])}) - {math.log(2)!r}"

    def _print_Heaviside(self, expr):
        # torch.heaviside takes its value at 0 as a tensor: H(0) = 1/2 (SymPy's, and
        # torch.maximum's split gradient at ties) is sign's midpoint, any other value a
        # tensor of the argument's dtype and device.
        h0 = expr.args[1] if len(expr.args) > 1 else sp.S.Half
        if h0 == sp.S.Half:
            return f"(0.5 * torch.sign({self._print(expr.args[0])}) + 0.5)"
        e = self._atom(expr.args[0])
        return f"torch.heaviside({e}, {e}.new_tensor({float(h0)!r}))"

    def _print_ClampMin(self, expr):
        return f"torch.clamp({self._print(expr.args[0])}, min=1e-12)"

    def _print_SafeLog(self, expr):
        return f"torch.clamp(torch.log({self._print(expr.args[0])}), min=-100.0)"

    def _print_SafeLog1p(self, expr):
        return f"torch.clamp(torch.log1p({self._print(expr.args[0])}), min=-100.0)"

    def _minmax(self, expr, fn: str, bound: str) -> str:
        nums = [a for a in expr.args if a.is_Number]
        rest = [self._print(a) for a in expr.args if not a.is_Number]
        out = rest[0]
        for a in rest[1:]:
            out = f"torch.{fn}({out}, {a})"
        for c in nums:
            out = f"torch.clamp({out}, {bound}={self._print(c)})"
        return out

    def _print_op(self, op: Op, expr: sp.Expr) -> str:
        # torch.maximum/minimum take tensors only: a number bound is a clamp.
        if op.func is sp.Max:
            return self._minmax(expr, "maximum", "min")
        if op.func is sp.Min:
            return self._minmax(expr, "minimum", "max")
        return super()._print_op(op, expr)


def _whole(e: sp.Expr) -> sp.Symbol | None:
    """The array ``e`` places on every axis in its own order (no broadcast, no
    transpose), or None."""
    if not isinstance(e, Place):
        return None
    sym, pos, ndim, mine = e.args
    axes = ([0] if int(mine) else []) + [int(q) for q in pos]
    return sym if axes == list(range(int(ndim))) else None


def softmax_vjp(expr: sp.Expr) -> tuple[sp.Symbol, sp.Symbol, int] | None:
    """``(y, g, axis)`` when ``expr`` is ``y * (g - einsum(y * g summed over the last
    axis)[..., None])`` (both arrays whole), else None: the product is read from the
    expression's structure and the einsum's subscripts, never from the arrays' names."""
    if not expr.is_Mul or len(expr.args) != 2:
        return None
    for outer, diff in (expr.args, expr.args[::-1]):
        y = _whole(outer)
        if y is None or not diff.is_Add or len(diff.args) != 2:
            continue
        for plain, summed in (diff.args, diff.args[::-1]):
            g = _whole(plain)
            coeff, ein = summed.as_coeff_Mul()
            if g is None or g == y or coeff != -1 or not isinstance(ein, Einsum):
                continue
            spec, slots, *ops = ein.args
            ndim = int(outer.args[2])
            ins, out = spec.name.split("->")
            subs = ins.split(",")
            restore = "[" + ", ".join([":"] * (ndim - 1) + ["None"]) + "]"
            if (
                len(subs) == 2
                and subs[0] == subs[1]
                and len(subs[0]) == ndim
                and out == subs[0][:-1]
                and slots.name == restore
                and set(ops) == {y, g}
            ):
                return y, g, ndim - 1
    return None
