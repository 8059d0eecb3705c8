"""The catalogue of networks every check runs over (derivation, codegen, rendering, verify)."""

from __future__ import annotations

import sympy as sp

from symgrad import Dense, Map, a, build, i, j, k, n, x, y_s, yhat_s

SOFTSIGN = x / (1 + sp.Abs(x))
L2NORM = a[i] / sp.sqrt(sp.Sum(a[j] ** 2, (j, 0, n - 1)) + sp.Float(1e-6))
SOFTMAX_MAP = sp.exp(a[i]) / sp.Sum(sp.exp(a[j]), (j, 0, n - 1))
LOGCOSH = ("logcosh", sp.log(sp.cosh(yhat_s - y_s)))
GAIN = sp.IndexedBase("g", real=True)
BILINEAR_A = sp.IndexedBase("A", real=True)
#: a[i] tanh(a^T A a): a layer with a matrix parameter of its own in a bilinear form
BILINEAR = a[i] * sp.tanh(
    sp.Sum(sp.Sum(a[j] * BILINEAR_A[j, k] * a[k], (k, 0, n - 1)), (j, 0, n - 1))
)


def catalogue() -> dict[str, object]:
    """Name -> Network. Covers every activation and loss, bias off, custom activation and
    loss, both map examples, depth >= 12, width 1 and the seed network."""
    return {
        "seed": build("seed_net", 3, [Dense(4, "sigmoid"), Dense(2, "sigmoid")], "mse"),
        "softmax_ce": build(
            "softmax_ce", 4, [Dense(5, "tanh"), Dense(3, "softmax")], "cross_entropy"
        ),
        "bce": build("bce_net", 3, [Dense(4, "relu"), Dense(2, "sigmoid", bias=False)], "bce"),
        "acts": build(
            "acts",
            3,
            [
                Dense(4, "leaky_relu"),
                Dense(4, "softplus"),
                Dense(4, "elu"),
                Dense(4, "silu"),
                Dense(3, "identity"),
                Dense(2, "tanh"),
            ],
            "mse",
        ),
        "custom": build(
            "custom",
            3,
            [Dense(4, SOFTSIGN), Map(L2NORM, name="l2norm"), Dense(2, "tanh", bias=False)],
            LOGCOSH,
        ),
        "softmax_map": build(
            "softmax_map",
            3,
            [Dense(4, "tanh"), Map(SOFTMAX_MAP, name="softmax_map"), Dense(2)],
            "mse",
        ),
        "deep": build(
            "deep", 2, [Dense(3, "tanh") for _ in range(12)] + [Dense(1, "sigmoid")], "bce"
        ),
        "width1": build("width1", 1, [Dense(1, "sigmoid"), Dense(1, "identity")], "mse"),
        "softmax_mse": build("softmax_mse", 3, [Dense(3, "softmax")], "mse"),
        "gain": build(
            "gain",
            3,
            [
                Dense(4, "identity"),
                Map(
                    sp.IndexedBase("g", real=True)[i] * sp.tanh(a[i]),
                    name="gain",
                    params={sp.IndexedBase("g", real=True): (n,)},
                ),
                Dense(2, "sigmoid"),
            ],
            "bce",
        ),
        "bilinear": build(
            "bilinear",
            3,
            [
                Dense(3, "tanh"),
                Map(BILINEAR, name="bilinear", params={BILINEAR_A: (n, n)}),
                Dense(2, "sigmoid"),
            ],
            "mse",
        ),
    }
