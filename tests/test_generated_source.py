"""Generated source is always valid Python: every module of every target (NumPy, torch,
JAX, CuPy, each with ``--hvp``) for every catalogue network and every named regression
network compiles (``compile()``: no empty block, no undefined indentation) and passes
``ruff check --select E9,F`` (pyflakes' rules: no undefined or unused names). The
regression networks run by default, the whole catalogue in the slow suite (the default run
ruff-checks five catalogue networks in ``test_targets.py``)."""

from __future__ import annotations

import pytest
from catalogue import catalogue
from target_harness import TARGETS, lint
from test_target_regressions import NETS as REGRESSIONS

from symgrad.backends.codegen import Statement
from symgrad.backends.targets import _input_grad
from symgrad.errors import DerivationError
from symgrad.pipeline import generate_code


def _lint_all(networks: dict, target: str) -> str:
    return lint(
        {
            f"{name}_{target}": generate_code(net, target=target, hvp=True)
            for name, net in networks.items()
        }
    )


@pytest.mark.parametrize("target", TARGETS)
def test_regression_networks_compile_and_lint_clean(target):
    assert _lint_all(REGRESSIONS, target) == ""


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_every_catalogue_module_compiles_and_lints_clean(target):
    assert _lint_all(catalogue(), target) == ""


def test_lint_reports_an_empty_block_and_an_undefined_name():
    """The checker itself fails on the two defects generated code once had."""
    empty = "def f(x):\n    if x:\n    return x\n"
    undefined = "def f(x):\n    return dx\n"
    assert "expected an indented block" in lint({"empty": empty})
    assert "dx" in lint({"undefined": undefined})


def test_a_program_without_an_input_gradient_is_refused_not_printed():
    """The autograd templates put dL/dX in a block of its own: a program without it is an
    error (never an empty ``if`` body)."""
    stmts = [Statement("dW1", "delta1.T @ X", ()), Statement("db1", "delta1.sum(0)", ())]
    with pytest.raises(DerivationError, match="input gradient"):
        _input_grad(stmts, ["W1", "b1"])
    back, dx = _input_grad([*stmts, Statement("dx", "delta1 @ W1", ())], ["W1", "b1"])
    assert [s.target for s in dx] == ["dx"] and len(back) == 2
