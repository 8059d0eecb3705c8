"""Which parametrized cases run in the default loop, and which only with the slow ones.

The default ``python -m pytest`` deselects tests marked ``slow`` and must finish in about
two minutes on a 2-core machine; CI runs everything (``-m "slow or not slow"``). Most of
the suite's time goes into tests parametrized over the network catalogue (each case
derives a network and generates, imports and runs its NumPy, torch and JAX modules) and
into tests that start a child process per case. In the default loop those tests run on a
few representative cases (a sigmoid MLP, softmax + cross-entropy, a skip connection; the
digits conv net, a strided and padded 1-d conv); the
other cases carry the ``slow`` marker, added here at collection so that the test files
stay as they are. Files with many similar cases (learners' files, tensor-map networks,
safety cases) run their first few in collection order (:data:`FIRST_ONLY`); single long
tests (autograd's ``gradcheck`` of a conv net, ``pmap``, a training run) are listed in
:data:`SLOW_TESTS`.

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
    "test_derivation.py": ("name", frozenset({"seed", "softmax_ce"})),
    "test_documents_catalogue.py": ("name", CATALOGUE_KEEP),
    "test_target_regressions.py": ("name", frozenset({"max_map", "softabs_map", "constant_map"})),
    # the README's blocks (the tour); the other pages' blocks run with the slow cases
    "test_docs.py": ("page", frozenset({"README.md"})),
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
        "test_verify_frameworks.py::test_a_generated_framework_module_verifies[float64-jax]",
        "test_verify_frameworks.py::test_a_generated_framework_module_verifies[float32-jax]",
        "test_verify_frameworks.py::test_a_generated_framework_module_verifies[float32-torch]",
        "test_verify_frameworks.py::test_a_wrong_gradient_in_a_torch_module_is_found",
        "test_verify_frameworks.py::test_the_command_line_verifies_a_torch_module",
        "test_lets.py::test_the_backward_pass_through_the_names_equals_the_derivation[layernorm]",
        "test_lets.py::test_the_backward_pass_through_the_names_equals_the_derivation[rmsnorm]",
        "test_batchnorm.py::test_latex_compiles",
        "test_batchnorm.py::test_derivation_time_does_not_blow_up",
        "test_exercise.py::test_same_seed_same_files",
        "test_steps.py::test_the_reader_never_runs_anything_and_fails_cleanly",
        "test_safety_files.py::test_generated_files_can_be_regenerated",
        "test_targets_conv.py::test_torch_conv_gradcheck[digits_cnn]",
        "test_targets_conv.py::test_jax_conv_check_grads[digits_cnn]",
        "test_targets_conv.py::test_jax_conv_matches_numpy_and_reference[digits_cnn]",
        "test_targets.py::test_jax_pmap_over_two_host_devices",
        "test_targets.py::test_jax_vmap_and_float32",
        "test_targets.py::test_jax_vmap_of_forward_vjp_and_hvp",
        "test_targets.py::test_jax_matches_reference[softmax_ce]",
        "test_targets.py::test_jax_matches_reference[residual]",
        "test_targets.py::test_jax_check_grads[softmax_ce]",
        "test_tensor_maps.py::test_other_targets_match_torch[depthwise_conv_by_hand-jax]",
        "test_conv_example.py::test_digits_cnn_training_shortened",
        "test_safety_budgets.py::test_generated_code_honours_the_time_limit",
        "test_safety_verify.py::test_verify_as_a_subprocess_never_tracebacks",
        "test_generated_source.py::test_regression_networks_compile_and_lint_clean[torch]",
        "test_exercise.py::test_different_seeds_differ",
        "test_tensor_maps_blas.py::test_networks_match_torch[jax-case6]",
        "test_tensor_maps_blas.py::test_networks_match_torch[jax-case7]",
        "test_tensor_maps_blas.py::test_networks_match_torch[jax-case8]",
        "test_tensor_maps.py::test_other_targets_match_torch[attention_pooling-jax]",
        "test_renamed_print.py::test_documents_are_those_printed_without_the_memo"
        "[examples/attention/attention.toml]",
        "test_renamed_print.py::test_documents_are_those_printed_without_the_memo[bn]",
        "test_safety_verify.py::test_a_hanging_module_is_a_failure_within_the_time_limit[call]",
        "test_safety_verify.py::test_a_hanging_module_is_a_failure_within_the_time_limit[import]",
        "test_pool.py::test_independent_references_agree_with_generated_code[jax_reference]",
        "test_lets.py::test_the_backward_pass_through_the_names_equals_the_derivation[xhat]",
        "test_examples.py::test_digits_training_shortened",
        "test_generated_source.py::test_regression_networks_compile_and_lint_clean[jax]",
        "test_lets.py::test_the_backward_pass_through_the_names_equals_the_derivation[mu_var]",
        "test_lets.py::test_a_python_map_whose_inner_sum_reuses_the_outer_index",
    }
)

#: file -> how many of its tests (in collection order) run in the default loop
FIRST_ONLY: dict[str, int] = {
    "test_steps.py": 20,
    "test_batchnorm.py": 8,
    "test_attention.py": 3,
    "test_map_lowering_forms.py": 8,
    "test_tensor_maps.py": 5,
    "test_index_arithmetic_maps.py": 4,
    "test_multi_range_sums.py": 4,
    "test_shared_params.py": 3,
    "test_safety_module.py": 20,
    "test_exercise.py": 6,
    "test_dtype.py": 10,
    "test_safety_budgets.py": 6,
    "test_conv.py": 10,
    "test_safety_verify.py": 10,
    "test_generated_source.py": 2,
    "test_safety_calls.py": 5,
    "test_verify.py": 15,
    "test_check_conv.py": 10,
    "test_cli.py": 25,
    "test_spec.py": 50,
    "test_stability.py": 12,
    "test_safety_files.py": 12,
    "test_c_target.py": 8,
    "test_conv_dilation.py": 8,
    "test_html.py": 3,
    "test_audit.py": 5,
    "test_scalar.py": 15,
    "test_check.py": 25,
    "test_render_doc.py": 15,
    "test_safety_escape.py": 80,
    "test_matrix_formula.py": 12,
    "test_expr_parser.py": 60,
}


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
    seen: dict[str, int] = {}
    for item in items:
        if is_slow(item):
            item.add_marker(pytest.mark.slow)
            continue
        file = item.path.name
        if file in FIRST_ONLY and "slow" not in item.keywords:
            seen[file] = seen.get(file, 0) + 1
            if seen[file] > FIRST_ONLY[file]:
                item.add_marker(pytest.mark.slow)
