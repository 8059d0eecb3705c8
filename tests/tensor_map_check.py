"""Helpers for the tests of users' maps: a spec's generated module against hand-written
PyTorch (float64 within 1e-7 relative; float32 in, float32 out, within 1e-4)."""

from __future__ import annotations

import numpy as np
import pytest

from symgrad.backends.codegen import load_module
from symgrad.frontend.spec import loads_spec
from symgrad.pipeline import generate

torch = pytest.importorskip("torch")


def torch_loss_and_grads(fn, params, X, Y):
    leaves = {
        k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()
    }
    loss = fn(leaves, torch.tensor(X), torch.tensor(Y))
    loss.backward()
    return float(loss.detach()), {k: t.grad.numpy() for k, t in leaves.items()}


def check_spec(text: str, fn, *, batches=(1, 5), seed=0, target="numpy", tol32=1e-4):
    """Build the spec ``text``, run its generated module and compare with ``fn(params, X,
    Y)`` (a torch loss, the mean over the batch) by autograd."""
    net = loads_spec(text)
    mod = load_module(generate(net, target=target))
    rng = np.random.default_rng(seed)
    params = {k: np.asarray(v, dtype=np.float64) for k, v in mod.init_params(seed).items()}
    params = {k: v + rng.normal(scale=0.3, size=v.shape) for k, v in params.items()}
    shape = tuple(net.input_shape) or (net.size(net.input_width),)
    C = net.size(net.output_width)
    for n in batches:
        X = rng.normal(size=(n, *shape))
        if net.loss.name == "cross_entropy":
            Y = np.eye(C)[rng.integers(0, C, n)]
        else:
            Y = rng.normal(size=(n, C))
        want_loss, want = torch_loss_and_grads(fn, params, X, Y)
        got_loss, got = _call(mod, target, params, X, Y)
        assert got_loss == pytest.approx(want_loss, rel=1e-9)
        assert set(got) == set(want)
        for k in want:
            scale = max(np.abs(want[k]).max(), 1e-12)
            err = np.abs(got[k] - want[k]).max() / scale
            assert err <= 1e-7, (k, n, err)
        p32 = {k: v.astype(np.float32) for k, v in params.items()}
        l32, g32 = _call(mod, target, p32, X.astype(np.float32), Y.astype(np.float32))
        assert l32 == pytest.approx(want_loss, rel=1e-4)
        for k in want:
            assert g32[k].dtype == np.float32, k
            scale = max(np.abs(want[k]).max(), 1e-12)
            err32 = np.abs(g32[k] - want[k]).max() / scale
            assert err32 <= tol32, (k, err32)
    return net, mod


def _call(mod, target, params, X, Y):
    if target == "numpy":
        loss, grads = mod.loss_and_grads(params, X, Y)
        return float(loss), {k: np.asarray(v) for k, v in grads.items()}
    if target == "torch":
        P = {k: torch.as_tensor(v) for k, v in params.items()}
        loss, grads = mod.loss_and_grads(P, torch.as_tensor(X), torch.as_tensor(Y))
        return float(loss), {k: v.numpy() for k, v in grads.items()}
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    P = {k: jnp.asarray(v) for k, v in params.items()}
    loss, grads = mod.loss_and_grads(P, jnp.asarray(X), jnp.asarray(Y))
    return float(loss), {k: np.asarray(v) for k, v in grads.items()}
