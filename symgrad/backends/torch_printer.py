"""Printing stage, PyTorch target: batched matrix expressions -> ``torch`` source text.

The NumPy printer's subclass (SymForce's shape: one printer per backend). Most NumPy
functions have a ``torch`` namesake, so the NumPy text is re-prefixed; the rest get their
own ``_print_<Class>``: torch's ``maximum``/``minimum`` take tensors only, its reductions
are ``sum(dim, keepdim=True)`` / ``amax``, and its stable sigmoid, softmax and
log-sum-exp are library calls. Nothing here writes into a buffer (no ``out=``): tensors
may be saved for autograd or traced by ``torch.compile``.
"""

from __future__ import annotations

import math
import re

from symgrad.backends.numpy_printer import SymgradNumPyPrinter
from symgrad.ir import ops as F

_NP = re.compile(r"\bnp\.")


class ReprefixPrinter(SymgradNumPyPrinter):
    """The NumPy printer with ``np.`` replaced by another array module's prefix.

    For array libraries that mirror NumPy's function names (``jax.numpy``, ``cupy``,
    mostly ``torch``). Subclasses set ``prefix`` and override what differs.
    """

    prefix = "np."

    def doprint(self, expr, assign_to=None):
        return _NP.sub(self.prefix, super().doprint(expr, assign_to))

    def _print_BOuter(self, expr):
        # The NumPy form picks np.dot for a batch of one (a BLAS quirk of NumPy's matmul).
        return f"({self._atom(expr.args[0])}.T @ {self._atom(expr.args[1])})"


class TorchPrinter(ReprefixPrinter):
    """Prints batched expressions as ``torch`` code (tensors of shape (n, width))."""

    prefix = "torch."

    def _print_ColSum(self, expr):
        return f"{self._atom(expr.args[0])}.sum(0)"

    def _print_RowSum(self, expr):
        return f"{self._atom(expr.args[0])}.sum(1, keepdim=True)"

    def _print_RowMax(self, expr):
        return f"{self._atom(expr.args[0])}.amax(1, keepdim=True)"

    def _print_sigmoid(self, expr):
        return f"torch.sigmoid({self._print(expr.args[0])})"

    def _print_step(self, expr):
        # step(0) = 0 and the tensor's own dtype (a bool mask would not multiply in float64).
        x = self._atom(expr.args[0])
        return f"({x} > 0).to({x}.dtype)"

    def _print_relu(self, expr):
        return f"torch.relu({self._print(expr.args[0])})"

    def _print_leaky_relu(self, expr):
        slope = float(F.LEAKY_SLOPE)
        return f"torch.nn.functional.leaky_relu({self._print(expr.args[0])}, {slope!r})"

    def _print_elu(self, expr):
        return f"torch.nn.functional.elu({self._print(expr.args[0])})"

    def _print_softplus(self, expr):
        # The same stable form as the NumPy module (torch's softplus switches to x at 20).
        x = self._print(expr.args[0])
        return f"(torch.clamp({x}, min=0) + torch.log1p(torch.exp(-torch.abs({x}))))"

    def _print_Softmax(self, expr):
        return f"torch.softmax({self._print(expr.args[0])}, 1)"

    def _print_LogSumExp(self, expr):
        return f"torch.logsumexp({self._print(expr.args[0])}, 1, keepdim=True)"

    def _print_LogCosh(self, expr):
        v = self._print(expr.args[0])
        return f"torch.logaddexp({v}, -{self._atom(expr.args[0])}) - {math.log(2)!r}"

    def _print_ClampMin(self, expr):
        return f"torch.clamp({self._print(expr.args[0])}, min=1e-12)"

    def _print_SafeLog(self, expr):
        return f"torch.clamp(torch.log({self._print(expr.args[0])}), min=-100.0)"

    def _minmax(self, expr, fn: str, bound: str) -> str:
        nums = [a for a in expr.args if a.is_Number]
        rest = [self._print(a) for a in expr.args if not a.is_Number]
        out = rest[0]
        for a in rest[1:]:
            out = f"torch.{fn}({out}, {a})"
        for c in nums:
            out = f"torch.clamp({out}, {bound}={self._print(c)})"
        return out

    def _print_Max(self, expr):
        return self._minmax(expr, "maximum", "min")

    def _print_Min(self, expr):
        return self._minmax(expr, "minimum", "max")
