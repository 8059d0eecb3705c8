"""Named regressions of the generated targets: each network once broke a target (a crash,
a module that did not import, a wrong or non-finite gradient). Every target (NumPy, torch,
JAX, CuPy or NumPy standing in for it, ``--hvp``) is compared with the independent PyTorch
reference (``target_harness.check_targets``: float64 relative 1e-7, float32 consistency).
Failures found by the random-expression test (``test_differential_targets.py``) are
added here under a name that says what they exercise.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from target_harness import check_targets, draw_point, modules

from symgrad import Dense, Map, a, build, i, j, n, pipeline, x, y_s, yhat_s
from symgrad.ir import ops as F
from symgrad.verify.verify import rel_error

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)

T = sp.Symbol("T", real=True)
BETA = sp.Symbol("beta", real=True)
SLOPE = sp.IndexedBase("slope", real=True)
D = yhat_s - y_s


def _huber(d: sp.Expr, delta: float) -> sp.Expr:
    """Huber's loss through min and abs: quadratic inside |d| < delta, linear outside."""
    m = sp.Min(sp.Abs(d), delta)
    return sp.Rational(1, 2) * m**2 + delta * (sp.Abs(d) - m)


def _smooth_l1(d: sp.Expr, beta: float) -> sp.Expr:
    m = sp.Min(sp.Abs(d), beta)
    return sp.Rational(1, 2) * m**2 / beta + (sp.Abs(d) - m)


SOFTABS = sp.log(sp.exp(a[i]) + sp.exp(-a[i]))
TEMPERATURE_SOFTMAX = sp.exp(T * a[i]) / sp.Sum(sp.exp(T * a[j]), (j, 0, n - 1))
NLL = ("nll", -y_s * sp.log(yhat_s))

NETS = {
    # torch.heaviside with a float value: every custom max/min kink crashed the torch module
    "max_map": build("max_map", 3, [Dense(4), Map(sp.Max(a[i], 0), name="m"), Dense(2)], "mse"),
    "prelu_learnable_slope": build(
        "prelu",
        3,
        [
            Dense(4),
            Map(sp.Max(a[i], 0) + SLOPE[i] * sp.Min(a[i], 0), name="prelu", params={SLOPE: (n,)}),
            Dense(2),
        ],
        "mse",
    ),
    "hinge_loss": build(
        "hinge", 3, [Dense(4, "tanh"), Dense(1)], ("hinge", sp.Max(0, 1 - y_s * yhat_s))
    ),
    "huber_loss": build("huber", 3, [Dense(4, "tanh"), Dense(2)], ("huber", _huber(D, 1.0))),
    "smooth_l1_loss": build(
        "smooth_l1", 3, [Dense(4, "tanh"), Dense(2)], ("smooth_l1", _smooth_l1(D, 0.5))
    ),
    # a max or min of three arguments: the torch printer re-flattened its left fold forever,
    # and the reference evaluator called torch.maximum with three arguments
    "max_of_three_map": build(
        "max3",
        3,
        [
            Dense(4),
            Map(sp.Max(a[i], 0, 0.5 * a[i] - 1), name="m3"),
            Map(sp.Min(a[i], 1, 2 - a[i]), name="n3"),
            Dense(2),
        ],
        "mse",
    ),
    # an activation whose derivative SymPy folds to 0 (min(-3/2, a quadratic whose minimum
    # is -1/8)): dL/dz1 = 0 printed as the number 0, and delta1.T @ X failed in the
    # Hessian-vector program and in torch's NetworkFunction backward (never widened)
    "constant_derivative_layer": build(
        "flat",
        2,
        [
            Dense(
                2, sp.Min(sp.Rational(-3, 2), (x / 2 - sp.Rational(1, 4)) * (x + sp.Rational(1, 2)))
            ),
            Dense(3),
        ],
        ("pseudo_huber", sp.sqrt(1 + D**2) - 1),
    ),
    # layers SymPy folds to a number: R{delta2} read the constant as the layer's name (every
    # 2 became a1), the Hessian-vector product named an unloaded W1, and torch's backward
    # recomputed the constant without broadcasting it
    "constant_activation": build("const_act", 3, [Dense(3, 2 + 0 * x), Dense(2)], "mse"),
    "constant_map": build(
        "const_map",
        3,
        [Dense(3), Map(sp.Max(sp.Rational(1, 2), 2) + 0 * a[i], name="c"), Dense(2)],
        "mse",
    ),
    # a step of a negated argument: torch printed (-z1 > 0).to(-z1.dtype), a dtype negated
    "step_of_negated_argument": build(
        "negstep",
        3,
        [Dense(3, (-F.step(-x) * x - x / 2) ** 2), Dense(1)],
        ("logistic", sp.log(1 + sp.exp(-y_s * yhat_s))),
    ),
    # the stability pass re-derived the network and lost dL/dx: an empty block (torch) and
    # an undefined dx (JAX); the loss's incoming gradient g was lost with it
    "softabs_map": build("softabs", 3, [Dense(4), Map(SOFTABS, name="softabs"), Dense(2)], "mse"),
    "temperature_softmax_nll": build(
        "tsoftmax",
        3,
        [Dense(4), Map(TEMPERATURE_SOFTMAX, name="tsoftmax", params={T: ()})],
        NLL,
    ),
    "temperature_log_softmax": build(
        "tlogsoftmax",
        3,
        [
            Dense(4),
            Map(T * a[i] - sp.log(sp.Sum(sp.exp(T * a[j]), (j, 0, n - 1))), "lsm", params={T: ()}),
        ],
        ("nll", -y_s * yhat_s),
    ),
    # log-sum-exp map with a learnable temperature (units 1): the division guard clamped
    # 1/T at 1e-12, wrong for a negative T; an unshifted log(sum(exp)) in dT at 1e3
    "lse_map_temperature": build(
        "lse",
        3,
        [
            Dense(4),
            Map(sp.log(sp.Sum(sp.exp(T * a[j]), (j, 0, n - 1))) / T, "lse", 1, {T: ()}),
            Dense(2),
        ],
        "mse",
    ),
    "swish_softabs": build(
        "swish_softabs",
        3,
        [
            Dense(4),
            Map(a[i] * F.sigmoid(BETA * a[i]), name="swish", params={BETA: ()}),
            Map(SOFTABS, name="softabs"),
            Dense(2),
        ],
        "mse",
    ),
}
TARGET_DOMAIN = {
    "temperature_softmax_nll": "probabilities",
    "temperature_log_softmax": "probabilities",
}


@pytest.mark.parametrize("name", sorted(NETS))
def test_every_target_matches_the_reference(name):
    net = NETS[name]
    params, X, Y, V = draw_point(net, seed=7, targets=TARGET_DOMAIN.get(name))
    assert check_targets(net, params, X, Y, V) == []


def test_negative_learnable_temperature_is_not_clamped():
    """A parameter in a denominator (1/T) is not a probability: never clamped at 1e-12."""
    net = NETS["lse_map_temperature"]
    params, X, Y, V = draw_point(net, seed=2)
    params["T2"] = np.asarray(-0.5)
    assert check_targets(net, params, X, Y, V, float32=False) == []


# -- at saturation: the IR reference itself overflows there (it evaluates exp(T a) and
# exp(a) + exp(-a) as written), so the reference is the same network in torch's own stable
# library calls (log_softmax, logaddexp), differentiated by autograd.


def _tsoftmax_torch(p, X, Y):
    z = X @ p["W1"].T + p["b1"]
    return -(Y * torch.log_softmax(p["T2"] * z, 1)).mean()


def _tlogsoftmax_torch(p, X, Y):
    z = X @ p["W1"].T + p["b1"]
    return -(Y * torch.log_softmax(p["T2"] * z, 1)).mean()


def _swish_softabs_torch(p, X, Y):
    z = X @ p["W1"].T + p["b1"]
    s = z * torch.sigmoid(p["beta2"] * z)
    return ((torch.logaddexp(s, -s) @ p["W4"].T + p["b4"] - Y) ** 2).mean()


def _torch_grads(fn, params, X, Y, dtype):
    leaves = {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in params.items()}
    value = fn(leaves, torch.tensor(X, dtype=dtype), torch.tensor(Y, dtype=dtype))
    grads = torch.autograd.grad(value, list(leaves.values()))
    return float(value), {k: g.double().numpy() for k, g in zip(leaves, grads, strict=True)}


def _target_grads(target, mod, params, X, Y, dtype):
    p = {k: v.astype(dtype) for k, v in params.items()}
    if target == "torch":
        p = {k: torch.tensor(v) for k, v in p.items()}
    value, grads = mod.loss_and_grads(p, X.astype(dtype), Y.astype(dtype))
    return float(value), {k: np.asarray(np.asarray(g), np.float64) for k, g in grads.items()}


SATURATED = {
    "temperature_softmax_nll": (_tsoftmax_torch, "probabilities"),
    "temperature_log_softmax": (_tlogsoftmax_torch, "probabilities"),
    "swish_softabs": (_swish_softabs_torch, None),
}


@pytest.mark.parametrize("name", sorted(SATURATED))
def test_at_inputs_times_1e3_every_target_is_finite_and_matches_torch(name):
    """Inputs scaled by 1e3 (logits of ~1e3): float64 gradients equal torch's to 1e-7
    relative on every target, every one finite; float32 gradients as close to the float64
    values as torch's float32 autograd on the same inputs (within a factor 4, or 1e-5)."""
    fn, domain = SATURATED[name]
    net = NETS[name]
    params, X, Y, _ = draw_point(net, seed=3, scale=1e3, targets=domain)
    want_loss, want = _torch_grads(fn, params, X, Y, torch.float64)
    _, torch32 = _torch_grads(fn, params, X, Y, torch.float32)
    for target, mod in modules(net, hvp=False).items():
        value, got = _target_grads(target, mod, params, X, Y, np.float64)
        assert rel_error(value, want_loss)[1] <= 1e-7, target
        _, got32 = _target_grads(target, mod, params, X, Y, np.float32)
        for k, w in want.items():
            assert np.all(np.isfinite(got[k])), (target, k)
            assert rel_error(got[k], w)[1] <= 1e-7, (target, k)
            scale = float(np.max(np.abs(w)))
            err32 = float(np.max(np.abs(got32[k] - w)))
            torch_err32 = float(np.max(np.abs(torch32[k] - w)))
            assert err32 <= 4 * torch_err32 + 1e-5 * scale, (target, k, err32, torch_err32)


def test_temperature_softmax_backward_has_no_division_by_the_output():
    """The user's -y log(yhat) after a softmax map: the loss gradient -y/yhat is fused into
    the steps that read it (no 1/a2 left), as the built-in softmax + cross-entropy's."""
    prog = pipeline.lower(NETS["temperature_softmax_nll"])
    back = [it for it in prog.items if it.section == "backward"]
    assert [it.target for it in back] == ["dT2", "delta1", "dW1", "db1"]
    for it in back:
        assert not any(p.exp.is_negative and "a2" in str(p.base) for p in it.expr.atoms(sp.Pow))
