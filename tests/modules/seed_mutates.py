"""A hand-written backprop for the seed network (3 -> 4 sigmoid -> 2 sigmoid, mse).

Written by hand, not by symgrad: a fixture for ``symgrad verify --module``.
It standardises X in place, modifying its caller's array.
"""

import numpy as np

PARAM_NAMES = ("W1", "b1", "W2", "b2")
PARAM_SHAPES = {"W1": (4, 3), "b1": (4,), "W2": (2, 4), "b2": (2,)}


def init_params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0.0, 0.5, s).astype(dtype) for k, s in PARAM_SHAPES.items()}


def _sigmoid(z):
    return 0.5 + 0.5 * np.tanh(0.5 * z)


def _forward(params, X):
    z1 = X @ params["W1"].T + params["b1"]
    a1 = _sigmoid(z1)
    z2 = a1 @ params["W2"].T + params["b2"]
    return a1, _sigmoid(z2)


def forward(params, X):
    return _forward(params, X)[1]


def loss(params, X, Y):
    return float(np.mean((forward(params, X) - Y) ** 2))


def loss_and_grads(params, X, Y):
    X -= X.mean(axis=0)
    a1, a2 = _forward(params, X)
    value = float(np.mean((a2 - Y) ** 2))
    delta2 = 2 * (a2 - Y) / Y.size * a2 * (1 - a2)
    delta1 = (delta2 @ params["W2"]) * a1 * (1 - a1)
    grads = {
        "W1": delta1.T @ X,
        "b1": delta1.sum(axis=0),
        "W2": delta2.T @ a1,
        "b2": delta2.sum(axis=0),
    }
    return value, grads
