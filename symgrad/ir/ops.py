"""Local derivative rules: SymPy functions that the activations are built from.

Each function states its derivative (``fdiff``) once, here; the chain rule, the
printers and the code generator only ever read these rules through SymPy.
Derivatives are written so that substituting the function's own value gives the
forward-value form a person writes (``sigmoid' = sigmoid (1 - sigmoid)``).
Kinks follow PyTorch: ``relu'(0) = 0``, ``leaky_relu'(0) = slope``.
"""

from __future__ import annotations

import sympy as sp

LEAKY_SLOPE = sp.Rational(1, 100)


class step(sp.Function):  # noqa: N801 - SymPy function names are lower case
    """Heaviside step with step(0) = 0 (the derivative of relu, as in PyTorch)."""

    is_real = True

    @classmethod
    def eval(cls, x):
        if x.is_Number:
            return sp.S.One if x > 0 else sp.S.Zero
        return None

    def fdiff(self, argindex=1):
        return sp.S.Zero


class sigmoid(sp.Function):  # noqa: N801
    """Logistic function 1 / (1 + exp(-x))."""

    is_real = True

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return sp.S.Half
        return None

    def fdiff(self, argindex=1):
        return self * (1 - self)

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return 1 / (1 + sp.exp(-x))

    def _latex(self, printer):
        return r"\sigma\left(" + printer._print(self.args[0]) + r"\right)"


class relu(sp.Function):  # noqa: N801
    """max(x, 0); relu'(0) = 0."""

    is_real = True

    def fdiff(self, argindex=1):
        return step(self.args[0])

    def _latex(self, printer):
        return r"\operatorname{relu}\left(" + printer._print(self.args[0]) + r"\right)"


class leaky_relu(sp.Function):  # noqa: N801
    """x for x > 0, slope * x otherwise (slope 0.01, PyTorch's default)."""

    is_real = True

    def fdiff(self, argindex=1):
        x = self.args[0]
        return LEAKY_SLOPE + (1 - LEAKY_SLOPE) * step(x)

    def _latex(self, printer):
        return r"\operatorname{leaky\_relu}\left(" + printer._print(self.args[0]) + r"\right)"


class elu(sp.Function):  # noqa: N801
    """x for x > 0, exp(x) - 1 otherwise (alpha = 1)."""

    is_real = True

    def fdiff(self, argindex=1):
        x = self.args[0]
        # 1 on the right, exp(x) = elu(x) + 1 on the left: written in the forward value.
        return step(x) + (1 - step(x)) * (self + 1)

    def _latex(self, printer):
        return r"\operatorname{elu}\left(" + printer._print(self.args[0]) + r"\right)"


class softplus(sp.Function):  # noqa: N801
    """log(1 + exp(x)), printed stably."""

    is_real = True

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return sp.log(1 + sp.exp(x))

    def _latex(self, printer):
        return r"\operatorname{softplus}\left(" + printer._print(self.args[0]) + r"\right)"


def _step_latex(self, printer):
    return r"\left[" + printer._print(self.args[0]) + r" > 0\right]"


step._latex = _step_latex

#: Functions a spec expression may call, by name (the parser's whitelist).
SPEC_FUNCTIONS: dict[str, object] = {
    "exp": sp.exp,
    "log": sp.log,
    "sqrt": sp.sqrt,
    "abs": sp.Abs,
    "tanh": sp.tanh,
    "cosh": sp.cosh,
    "sinh": sp.sinh,
    "sin": sp.sin,
    "cos": sp.cos,
    "sigmoid": sigmoid,
    "max": sp.Max,
    "min": sp.Min,
}

#: Symgrad's own function classes (the NumPy printer gives each a stable form).
CUSTOM_FUNCTIONS = (step, sigmoid, relu, leaky_relu, elu, softplus)
