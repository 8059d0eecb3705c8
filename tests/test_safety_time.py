"""Bounded time: inputs beyond the limits are refused up front with one line.
The timings themselves are a benchmark (``bench/time_bounds.py``), never a unit test."""

from __future__ import annotations

import pytest

from symgrad import Dense, build
from symgrad.errors import SpecError
from symgrad.frontend.spec import MAX_LAYERS, loads_spec
from symgrad.ir.layers import MAX_LAYERS as API_MAX_LAYERS


def test_the_python_api_has_the_same_layer_cap_as_spec_files() -> None:
    assert MAX_LAYERS == API_MAX_LAYERS
    build("ok", 2, [Dense(2, "tanh") for _ in range(MAX_LAYERS)], "mse")
    with pytest.raises(SpecError, match=f"too many layers: 5000 \\(at most {MAX_LAYERS}\\)"):
        build("deep", 2, [Dense(2, "tanh") for _ in range(5000)], "mse")


def test_spec_files_over_the_layer_cap_are_refused() -> None:
    text = 'name = "deep"\ninput = 2\nloss = "mse"\n'
    text += '[[layer]]\nunits = 2\nactivation = "tanh"\n' * (MAX_LAYERS + 1)
    with pytest.raises(SpecError, match="layer: too many layers"):
        loads_spec(text)


def test_nested_activation_derives_without_assumption_queries() -> None:
    """tanh nested 20 deep used to take minutes (assumption queries, expand_mul); the
    structure checks are now syntactic. Not timed: it must simply produce the module."""
    from symgrad.backends.codegen import load_module
    from symgrad.pipeline import generate

    e = "x"
    for _ in range(20):
        e = f"tanh({e})"
    text = 'name = "t"\ninput = 2\nloss = "mse"\n[[layer]]\nunits = 2\n'
    text += f'activation = {{ name = "deep", expr = "{e}" }}\n'
    mod = load_module(generate(loads_spec(text)), "nested20")
    params = mod.init_params(0)
    import numpy as np

    X = np.ones((2, 2))
    value, grads = mod.loss_and_grads(params, X, np.zeros((2, 2)))
    assert np.isfinite(value) and set(grads) == {"W1", "b1"}


def test_max_with_too_many_arguments_is_refused_up_front() -> None:
    from symgrad.frontend.expr_parser import MAX_MINMAX_ARGS

    terms = ", ".join(f"{k + 1}*x" for k in range(MAX_MINMAX_ARGS + 2))
    text = 'name = "m"\ninput = 2\nloss = "mse"\n[[layer]]\nunits = 2\n'
    text += f'activation = {{ name = "mx", expr = "max({terms})" }}\n'
    with pytest.raises(SpecError, match=f"max\\(\\) takes 2 to {MAX_MINMAX_ARGS} arguments"):
        loads_spec(text)
