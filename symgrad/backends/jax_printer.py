"""Stage 6 (print), JAX and CuPy targets: batched matrix expressions -> ``jnp``/``cp`` text.

``jax.numpy`` and ``cupy`` mirror NumPy's names, so both printers are the NumPy printer
re-prefixed (``torch_printer.ReprefixPrinter``). JAX arrays are immutable and traced
under ``jit``: the JAX printer uses ``jax.nn``'s stable sigmoid, softmax and
log-sum-exp instead of the NumPy module's buffer-writing helpers, and never branches on
the batch size. CuPy runs the NumPy module's code, helpers included.
"""

from __future__ import annotations

from symgrad.backends.torch_printer import ReprefixPrinter


class JaxPrinter(ReprefixPrinter):
    """Prints batched expressions as ``jax.numpy`` code."""

    prefix = "jnp."
    spelling = "jax"

    def _print_Softmax(self, expr):
        return f"jax.nn.softmax({self._print(expr.args[0])}, axis=1)"

    def _print_AxisSoftmax(self, expr):
        return f"jax.nn.softmax({self._print(expr.args[0])}, axis={int(expr.args[1])})"

    def _print_LogSumExp(self, expr):
        return f"jax.nn.logsumexp({self._print(expr.args[0])}, axis=1, keepdims=True)"

    def _print_SafeLog(self, expr):
        return f"jnp.maximum(jnp.log({self._print(expr.args[0])}), -100.0)"


class CupyPrinter(ReprefixPrinter):
    """Prints batched expressions as ``cupy`` code (the NumPy module's, on the GPU)."""

    prefix = "cp."
