"""The derivation as one program of equations, and that program differentiated again.

``calculus/program.py`` turns a derivation into equations over named, typed quantities;
``Program.tangent`` applies the R-operator to every one of them. The tangents of the
parameter adjoints must be the Hessian-vector product: checked per sample against
central differences of the program's own gradients along V (float64), for the whole
catalogue (DAGs, maps, norms, max reductions, scalar parameters).
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from catalogue import catalogue

from symgrad import derive
from symgrad.calculus.program import LOSS, Equation, Program, program
from symgrad.errors import DerivationError
from symgrad.ir.naming import Quantity, tangent_name
from symgrad.verify.evaluation import run_program

NETS = catalogue()


def _sample(net, seed):
    rng = np.random.default_rng(seed)
    params = {p.name: rng.normal(scale=0.7, size=net.shape(p)) for p in net.params}
    direction = {tangent_name(k): rng.normal(size=np.shape(v)) for k, v in params.items()}
    x = rng.normal(size=net.size(net.input_width))
    y = rng.uniform(0.05, 0.95, size=net.size(net.output_width))
    y = y / y.sum()  # valid for every catalogue loss (cross-entropy wants a distribution)
    return params, direction, x, y


def _env(net, params, x, y):
    return {**params, str(net.input): x, str(net.loss.target): y}


@pytest.mark.parametrize("name", sorted(NETS))
def test_program_is_a_well_ordered_dag(name):
    net = NETS[name]
    prog = program(derive(net))
    seen = set(prog.params) | set(prog.inputs)
    for eq in prog:
        # every name an equation reads is a parameter, x, y, a size or an earlier target
        unknown = {
            r
            for r in eq.reads
            if r not in seen and not any(s.name == r and s.is_integer for s in eq.body.free_symbols)
        }
        assert not unknown, (eq.target, unknown)
        seen.add(eq.target)
    phases = [eq.phase for eq in prog]
    assert phases == sorted(phases, key=("forward", "loss", "backward").index)
    assert set(prog.gradients()) == set(net.param_names)


def test_equations_are_typed_quantities():
    prog = program(derive(NETS["seed"]))
    delta2 = prog["delta2"]
    assert delta2.phase == "backward" and delta2.of == "z2"
    assert delta2.quantity == Quantity("pre", "z", 2)
    assert prog["dW2"].quantity == Quantity("param", "W", 2)
    assert prog["a1"].quantity == Quantity("act", "a", 1)
    assert prog[LOSS].indices == () and prog[LOSS].phase == "loss"
    # the weight gradient reads the error it is built from and the forward value
    assert {"delta2", "a1"} <= prog["dW2"].reads


def test_a_residual_adjoint_reads_every_consumer():
    """A DAG: the adjoint of a quantity two layers read sums both contributions."""
    prog = program(derive(NETS["residual"]))
    fan_in = [eq for eq in prog if eq.step is not None and eq.step.contributions]
    assert fan_in
    for eq in fan_in:
        assert {u for _, u in eq.step.contributions} <= eq.reads


def test_an_equation_reading_a_later_quantity_is_refused():
    i = sp.Symbol("i", integer=True)
    a = sp.IndexedBase("a1", real=True)
    n = sp.Symbol("n", integer=True)
    eq = Equation(
        target="z1",
        quantity=Quantity("pre", "z", 1),
        phase="forward",
        indices=(i,),
        shape=(n,),
        body=2 * a[i],
    )
    with pytest.raises(DerivationError, match="z1 reads a1 before it is computed"):
        Program((eq,), (), ("x", "y")).check()


@pytest.mark.parametrize("name", sorted(NETS))
def test_tangent_program_is_the_hessian_vector_product(name):
    """R{dtheta} from the differentiated program vs (g(theta + hV) - g(theta - hV)) / 2h,
    with g the program's own gradient: relative error below 1e-6 (float64, h = 1e-5)."""
    net = NETS[name]
    prog = program(derive(net))
    tprog = prog.tangent()
    params, direction, x, y = _sample(net, 3)
    env = run_program(tprog, {**_env(net, params, x, y), **direction}, net.sizes)

    h = 1e-5

    def grads(sign):
        shifted = {k: v + sign * h * direction[tangent_name(k)] for k, v in params.items()}
        return run_program(prog, _env(net, shifted, x, y), net.sizes)

    up, down = grads(1), grads(-1)
    for p, eq in prog.gradients().items():
        ref = (up[eq.target] - down[eq.target]) / (2 * h)
        got = env.get(tangent_name(eq.target), np.zeros_like(ref))
        scale = max(np.max(np.abs(ref)), 1e-8)
        err = np.max(np.abs(got - ref)) / scale
        assert err < 1e-6, (p, err)


def test_tangent_equations_are_written_in_forward_values():
    tprog = program(derive(NETS["seed"])).tangent()
    ra1 = tprog["Ra1"]
    assert ra1.phase == "tangent" and ra1.of == "a1"
    text = str(ra1.body)
    assert "a1[i]" in text and "sigmoid" not in text  # sigma'(z) = a(1 - a), as derived


@pytest.mark.parametrize("name", ["seed", "maxshift", "layernorm", "residual", "bilinear"])
def test_one_grid_evaluator_for_numpy_and_torch(name):
    """The derivation's evaluator and the torch reference's are the same code
    (``verify/grid.py``) on two array libraries: every equation agrees to 1e-12."""
    torch = pytest.importorskip("torch")
    from symgrad.verify.grid import NUMPY, ArrayOps, evaluate
    from symgrad.verify.reference import backend

    ops = backend("torch")
    assert isinstance(ops, ArrayOps)
    net = NETS[name]
    prog = program(derive(net))
    params, _, x, y = _sample(net, 5)
    env = run_program(prog, _env(net, params, x, y), net.sizes)
    for eq in prog:
        rng = {i: net.size(w) for i, w in zip(eq.indices, eq.shape, strict=True)}
        want = evaluate(NUMPY, eq.body, env, net.sizes, eq.indices, rng)
        tenv = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in env.items()}
        got = evaluate(ops, eq.body, tenv, net.sizes, eq.indices, rng).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=eq.target)


CONV_SPECS = {
    "conv2d_maxpool": """
name = "conv2d_maxpool"
input = [1, 6, 6]
loss = "cross_entropy"
[[layer]]
type = "conv2d"
channels = 2
kernel = 3
padding = 1
activation = "tanh"
[[layer]]
type = "maxpool2d"
kernel = 2
[[layer]]
type = "flatten"
[[layer]]
type = "dense"
units = 3
activation = "softmax"
""",
    "conv1d_dilated_avgpool": """
name = "conv1d_dilated_avgpool"
input = [2, 9]
loss = "mse"
[[layer]]
type = "conv1d"
channels = 3
kernel = 2
dilation = 2
stride = 1
activation = "sigmoid"
[[layer]]
type = "avgpool1d"
kernel = 7
[[layer]]
type = "flatten"
""",
}


@pytest.mark.parametrize("name", sorted(CONV_SPECS))
def test_tangent_program_of_conv_nets(name):
    """Convolution, dilation, max and average pooling: the differentiated program's H V
    vs differences of its own gradients (float64, relative 1e-6)."""
    from symgrad.frontend.spec import loads_spec

    net = loads_spec(CONV_SPECS[name], file=f"{name}.toml")
    prog = program(derive(net))
    tprog = prog.tangent()
    rng = np.random.default_rng(0)
    params = {p.name: rng.normal(scale=0.5, size=net.shape(p)) for p in net.params}
    direction = {tangent_name(k): rng.normal(size=v.shape) for k, v in params.items()}
    x = rng.normal(size=net.input_shape)
    y = np.full(net.size(net.output_width), 1.0 / net.size(net.output_width))
    env = run_program(tprog, {**_env(net, params, x, y), **direction}, net.sizes)
    h = 1e-5
    shifted = [
        run_program(
            prog,
            _env(net, {k: v + s * h * direction[tangent_name(k)] for k, v in params.items()}, x, y),
            net.sizes,
        )
        for s in (1, -1)
    ]
    for p, eq in prog.gradients().items():
        ref = (shifted[0][eq.target] - shifted[1][eq.target]) / (2 * h)
        err = np.max(np.abs(env[tangent_name(eq.target)] - ref)) / max(np.max(np.abs(ref)), 1e-8)
        assert err < 1e-6, (p, err)
