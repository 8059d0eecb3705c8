"""The generated optimisers (``generate(net, optimizer=...)``) against torch.optim.

The seed network (3 -> 4 sigmoid -> 2 sigmoid, mse) is generated with each optimiser,
run for a few steps from one initialisation on one fixed batch, and compared parameter
by parameter with torch.optim on the equivalent ``torch.nn`` model, in float64.
"""

from __future__ import annotations

import numpy as np
import pytest

from symgrad import Dense, build
from symgrad.backends.codegen import load_module
from symgrad.pipeline import generate

STEPS = 5
RTOL = 1e-10

# optimizer -> (keyword arguments of the generated ``step``, torch.optim factory)
CASES = {
    "sgd": ({"lr": 0.5}, lambda torch, ps: torch.optim.SGD(ps, lr=0.5)),
    "momentum": (
        {"lr": 0.2, "momentum": 0.9},
        lambda torch, ps: torch.optim.SGD(ps, lr=0.2, momentum=0.9),
    ),
    "adam": (
        {"lr": 0.05, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
        lambda torch, ps: torch.optim.Adam(ps, lr=0.05, betas=(0.9, 0.999), eps=1e-8),
    ),
}


def _seed_net():
    return build("seed_net", 3, [Dense(4, "sigmoid"), Dense(2, "sigmoid")], "mse")


@pytest.fixture(scope="module", params=sorted(CASES))
def generated(request):
    """(optimizer name, the generated module with that optimiser)."""
    return request.param, load_module(generate(_seed_net(), optimizer=request.param))


def _batch(dtype=np.float64):
    rng = np.random.default_rng(42)
    X = rng.normal(size=(8, 3)).astype(dtype)
    Y = rng.uniform(size=(8, 2)).astype(dtype)
    return X, Y


def _run_generated(mod, kwargs, params, X, Y, steps=STEPS, weight_decay=0.0):
    state = mod.init_state(params)
    losses = []
    for _ in range(steps):
        value, grads = mod.loss_and_grads(params, X, Y)
        losses.append(value)
        mod.step(params, grads, state, weight_decay=weight_decay, **kwargs)
    return losses


def _run_torch(torch, factory, params, X, Y, steps=STEPS, weight_decay=0.0):
    """The same training loop with torch.nn.Linear layers and torch.optim."""
    lin1, lin2 = torch.nn.Linear(3, 4).double(), torch.nn.Linear(4, 2).double()
    with torch.no_grad():
        for lin, l in ((lin1, 1), (lin2, 2)):
            lin.weight.copy_(torch.from_numpy(params[f"W{l}"]))
            lin.bias.copy_(torch.from_numpy(params[f"b{l}"]))
    ps = [lin1.weight, lin1.bias, lin2.weight, lin2.bias]
    opt = factory(torch, ps)
    if weight_decay:
        for group in opt.param_groups:
            group["weight_decay"] = weight_decay
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        out = torch.sigmoid(lin2(torch.sigmoid(lin1(Xt))))
        value = torch.nn.functional.mse_loss(out, Yt)
        value.backward()
        losses.append(value.item())
        opt.step()
    names = ("W1", "b1", "W2", "b2")
    return losses, {k: p.detach().numpy().copy() for k, p in zip(names, ps, strict=True)}


def test_step_updates_params_in_place(generated):
    name, mod = generated
    kwargs, _ = CASES[name]
    params = mod.init_params(seed=0)
    before = {k: v.copy() for k, v in params.items()}
    arrays = dict(params)  # the array objects, before any step
    X, Y = _batch()
    _run_generated(mod, kwargs, params, X, Y)
    assert set(params) == set(mod.PARAM_NAMES)
    for k in mod.PARAM_NAMES:
        assert params[k] is arrays[k], f"{name}: {k} was replaced, not updated in place"
        assert not np.array_equal(params[k], before[k]), f"{name}: {k} did not change"


def test_step_keeps_float32(generated):
    name, mod = generated
    kwargs, _ = CASES[name]
    params = mod.init_params(seed=0, dtype=np.float32)
    X, Y = _batch(np.float32)
    _run_generated(mod, kwargs, params, X, Y)
    for k in mod.PARAM_NAMES:
        assert params[k].dtype == np.float32
        assert np.all(np.isfinite(params[k]))


def test_training_reduces_loss(generated):
    name, mod = generated
    kwargs, _ = CASES[name]
    params = mod.init_params(seed=1)
    X, Y = _batch()
    losses = _run_generated(mod, kwargs, params, X, Y, steps=30)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_matches_torch_optim(generated, weight_decay):
    torch = pytest.importorskip("torch")
    name, mod = generated
    kwargs, factory = CASES[name]
    params = mod.init_params(seed=3)
    X, Y = _batch()
    init = {k: v.copy() for k, v in params.items()}
    losses = _run_generated(mod, kwargs, params, X, Y, weight_decay=weight_decay)
    t_losses, t_params = _run_torch(torch, factory, init, X, Y, weight_decay=weight_decay)
    np.testing.assert_allclose(losses, t_losses, rtol=RTOL, atol=0)
    for k in mod.PARAM_NAMES:
        assert not np.array_equal(params[k], init[k])
        np.testing.assert_allclose(
            params[k], t_params[k], rtol=RTOL, atol=1e-14, err_msg=f"{name}: {k}"
        )
