"""A network built with the Python API, loaded as ``tests/specs/pynet.py:net``."""

import sympy as sp

import symgrad
from symgrad import Dense, Map, a, i, j, n

net = symgrad.build(
    "pynet",
    3,
    [
        Dense(4, "tanh"),
        Map(a[i] / sp.sqrt(sp.Sum(a[j] ** 2, (j, 0, n - 1)) + 1e-6), name="l2norm"),
        Dense(2, "sigmoid", bias=False),
    ],
    "mse",
)
seed = symgrad.build("seed_net", 3, [Dense(4, "sigmoid"), Dense(2, "sigmoid")], "mse")
not_a_network = 42
