"""Differential testing: random networks, generated code against PyTorch autograd.

Hypothesis draws architectures (depth 1-8, widths 1-9, every named activation, softmax
on the last layer, custom activations from a small grammar, map layers, every loss and
custom losses, bias on and off); each is built, derived, generated, loaded, and its
``loss_and_grads`` is compared in float64 with an independent PyTorch implementation of
the same network (``symgrad.verify.torch_reference``: torch ops and autograd, no
symgrad derivative). The number of examples is ``SYMGRAD_HYPOTHESIS_EXAMPLES``
(default 500).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from symgrad import Dense, Map, a, build, i, j, k, n, x, y_s, yhat_s
from symgrad.backends.codegen import load_module
from symgrad.ir.ops import sigmoid
from symgrad.pipeline import generate
from symgrad.verify.verify import random_targets, rel_error, torch_reference

pytest.importorskip("torch")

EXAMPLES = int(os.environ.get("SYMGRAD_HYPOTHESIS_EXAMPLES", "500"))
TOL = 1e-7

NAMED = ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus", "elu", "silu")

# Custom activations: compositions that stay bounded (or grow at most linearly) so that
# eight stacked layers keep finite, unsaturated values.
BOUNDED = {
    "tanh": sp.tanh,
    "sigmoid": sigmoid,
    "gauss": lambda u: sp.exp(-(u**2)),
    "softsign": lambda u: u / (1 + sp.Abs(u)),
    "sin": sp.sin,
    "clip": lambda u: sp.Min(1, sp.Max(-1, u)),
}
GROWING = {
    "cubic": lambda u: u**3 / 5 + u,
    "swish": lambda u: u * sigmoid(u),
    "id": lambda u: u,
}

G = sp.IndexedBase("g", real=True)
A = sp.IndexedBase("A", real=True)
MAPS = {
    "l2norm": (a[i] / sp.sqrt(sp.Sum(a[j] ** 2, (j, 0, n - 1)) + sp.Float(1e-6)), {}),
    "softmax_map": (sp.exp(a[i]) / sp.Sum(sp.exp(a[j]), (j, 0, n - 1)), {}),
    "self_gate": (a[i] * sigmoid(a[i]), {}),
    "gain": (G[i] * sp.tanh(a[i]), {G: (n,)}),
    "bilinear": (
        a[i] * sp.tanh(sp.Sum(sp.Sum(a[j] * A[j, k] * a[k], (k, 0, n - 1)), (j, 0, n - 1))),
        {A: (n, n)},
    ),
}


@st.composite
def custom_activation(draw):
    shape = draw(st.sampled_from(("b", "bb", "gb", "bg")))
    b1 = BOUNDED[draw(st.sampled_from(sorted(BOUNDED)))]
    b2 = BOUNDED[draw(st.sampled_from(sorted(BOUNDED)))]
    g = GROWING[draw(st.sampled_from(sorted(GROWING)))]
    expr = {"b": b1(x), "bb": b1(b2(x)), "gb": g(b1(x)), "bg": b1(g(x))}[shape]
    return expr


def activation(last: bool):
    named = st.sampled_from(NAMED + (("softmax",) if last else ()))
    return st.one_of(named, named, custom_activation())


LOSSES = {
    "mse": lambda: "mse",
    "bce": lambda: "bce",
    "cross_entropy": lambda: "cross_entropy",
    "scaled_sq": lambda: ("scaled_sq", (yhat_s - y_s) ** 2 * sp.Rational(3, 2)),
    "logcosh": lambda: ("logcosh", sp.log(sp.cosh(yhat_s - y_s))),
    "pseudo_huber": lambda: ("pseudo_huber", sp.sqrt(1 + (yhat_s - y_s) ** 2) - 1),
}


@st.composite
def network(draw):
    depth = draw(st.integers(1, 8))
    n_in = draw(st.integers(1, 9))
    loss = draw(st.sampled_from(sorted(LOSSES)))
    layers = []
    for l in range(1, depth + 1):
        last = l == depth
        if not last and draw(st.integers(0, 5)) == 0:
            name = draw(st.sampled_from(sorted(MAPS)))
            expr, params = MAPS[name]
            layers.append(Map(expr, name=name, params=params))
            continue
        units = draw(st.integers(1, 9))
        bias = draw(st.booleans())
        if last and loss == "cross_entropy":
            act = "softmax"
        elif last and loss == "bce":  # softmax of one unit is 1: log(1 - 1) is undefined
            act = draw(st.sampled_from(("sigmoid", "softmax") if units > 1 else ("sigmoid",)))
        else:
            act = draw(activation(last))
        layers.append(Dense(units, act, bias=bias))
    net = build("random_net", n_in, layers, LOSSES[loss]())
    event(f"depth {depth}")
    event(f"loss {loss}")
    seed = draw(st.integers(0, 2**16))
    batch = draw(st.integers(1, 5))
    return net, seed, batch


def _describe(net) -> str:
    parts = [f"input {net.size(net.input_width)}"]
    for s in net.stages:
        body = "" if s.kind == "affine" else f" {sp.sstr(s.body)}"
        parts.append(f"{s.name}: {s.label}{body} (width {net.size(s.width)})")
    parts.append(f"loss {net.loss.name}: {sp.sstr(net.loss.body)}")
    return "; ".join(parts)


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(network())
def test_generated_code_matches_torch(case):
    net, seed, batch = case
    mod = load_module(generate(net))
    rng = np.random.default_rng(seed)
    params = mod.init_params(seed)
    X = rng.normal(0.0, 1.0, (batch, net.size(net.input_width)))
    Y = random_targets(net, batch, rng)
    value, grads = mod.loss_and_grads(params, X, Y)
    ref_yhat, ref_loss, ref_grads = torch_reference(net, params, X, Y)
    where = _describe(net)
    _, r = rel_error(mod.forward(params, X), ref_yhat)
    assert r <= TOL, f"yhat: rel err {r:.2e}; {where}"
    _, r = rel_error(value, ref_loss)
    assert r <= TOL, f"loss: rel err {r:.2e}; {where}"
    assert set(grads) == set(mod.PARAM_NAMES)
    for name in mod.PARAM_NAMES:
        _, r = rel_error(grads[name], ref_grads[name])
        assert r <= TOL, f"{name}: rel err {r:.2e}; {where}"
