"""Which parametrized cases run in the default loop, and which only with the slow ones.

The default ``python -m pytest`` deselects tests marked ``slow`` and must finish in about
two minutes on a 2-core machine; CI runs everything (``-m "slow or not slow"``). Most of
the suite's time goes into tests parametrized over the network catalogue (each case
derives a network and generates, imports and runs its NumPy, torch and JAX modules) and
into tests that start a child process per case. In the default loop those tests run on a
few representative cases (a sigmoid MLP, softmax + cross-entropy, a skip connection; the
digits conv net, a strided and padded 1-d conv); the
other cases carry the ``slow`` marker, added here at collection so that the test files
stay as they are.

A test marked ``slow`` in its own file stays slow whatever this file says.
"""

from __future__ import annotations

import pytest

#: the catalogue networks (tests/catalogue.py) every catalogue-parametrized test runs on
CATALOGUE_KEEP = frozenset({"seed", "softmax_ce", "residual"})

#: conv and pooling cases (tests/test_targets_conv.py) kept in the default loop
CONV_KEEP = frozenset({"digits_cnn", "conv:conv1d-stride2-pad1"})

#: file -> (the parameter naming the case, the cases kept in the default loop)
BY_CASE: dict[str, tuple[str, frozenset[object]]] = {
    "test_targets.py": ("name", CATALOGUE_KEEP),
    "test_hvp.py": ("name", CATALOGUE_KEEP),
    "test_codegen_numerics.py": ("name", CATALOGUE_KEEP),
    "test_verify.py": ("name", CATALOGUE_KEEP),
    "test_program.py": ("name", CATALOGUE_KEEP),
    "test_check.py": ("name", CATALOGUE_KEEP),
    "test_matrix_formula.py": ("name", CATALOGUE_KEEP),
    "test_stability.py": ("name", CATALOGUE_KEEP),
    "test_render_doc.py": ("name", CATALOGUE_KEEP),
    "test_targets_conv.py": ("case", CONV_KEEP),
    # every layer kind stays, on a batch of 16 (a batch of one runs with the slow cases)
    "test_layers.py": ("batch", frozenset({16})),
    # one child process per misbehaving module: three kinds stay in the default loop
    "test_safety_verify.py": (
        "case",
        frozenset({"loss-complex", "os-exit-in-call", "keyboard-interrupt"}),
    ),
}

#: single tests (file::name, or file::name[id]) that take many seconds each
SLOW_TESTS = frozenset(
    {
        "test_verify.py::test_correct_module_passes[float32]",
        "test_batchnorm.py::test_latex_compiles",
        "test_batchnorm.py::test_derivation_time_does_not_blow_up",
        "test_exercise.py::test_same_seed_same_files",
        "test_steps.py::test_the_reader_never_runs_anything_and_fails_cleanly",
        "test_safety_files.py::test_generated_files_can_be_regenerated",
    }
)


def is_slow(item: pytest.Item) -> bool:
    """Whether ``item`` belongs with the slow cases (see the module docstring)."""
    file = item.path.name
    name = f"{file}::{item.name}"
    if name in SLOW_TESTS or f"{file}::{item.originalname}" in SLOW_TESTS:  # type: ignore[attr-defined]
        return True
    rule = BY_CASE.get(file)
    callspec = getattr(item, "callspec", None)
    if rule is None or callspec is None:
        return False
    param, keep = rule
    if param not in callspec.params:
        return False
    value = callspec.params[param]
    return isinstance(value, str | int) and value not in keep


@pytest.hookimpl(tryfirst=True)  # before the -m selection deselects the slow ones
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if is_slow(item):
            item.add_marker(pytest.mark.slow)
