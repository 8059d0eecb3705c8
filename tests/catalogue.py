"""The catalogue of networks every check runs over (derivation, codegen, rendering, verify)."""

from __future__ import annotations

import sympy as sp

from symgrad import Dense, LayerNorm, Map, RMSNorm, a, build, i, j, k, m, n, x, y_s, yhat_s
from symgrad.ir.reductions import ReduceMax

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

A1 = sp.IndexedBase("a1", real=True)
TEMP = sp.Symbol("T", real=True)
PROJ = sp.IndexedBase("V", real=True)
#: a residual block: a3 = g * a2 + a1 (a1 feeds layers 2 and 3: its gradients add up)
RESIDUAL = GAIN[i] * a[i] + A1[i]
#: a pairwise term (no neat matrix form: the component fallback)
PAIRWISE = a[i] * sp.Sum((a[j] - a[i]) ** 2, (j, 0, n - 1)) / n
#: a max reduction (log-softmax's shift), gradient to the arg-max
MAXSHIFT = a[i] - ReduceMax(a[j], j, n - 1)
#: a map that changes width, with a learnable temperature (a 0-dim parameter)
PROJECT = sp.Sum(PROJ[i, j] * a[j], (j, 0, n - 1)) / TEMP
W1 = sp.IndexedBase("W1", real=True)
H = sp.Symbol("h", integer=True, positive=True)
P_, Q_ = sp.Symbol("p", integer=True), sp.Symbol("q", integer=True)


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
        "residual": build(
            "residual",
            3,
            [
                Dense(H, "tanh"),
                Dense(H, "relu"),
                Map(RESIDUAL, name="residual", params={GAIN: (n,)}),
                Dense(2),
            ],
            "mse",
            sizes={H: 4},  # one named width: the residual add needs a1, a2 of one width
            penalty=sp.Float(1e-3) * W1[P_, Q_] ** 2,
        ),
        "layernorm": build(
            "layernorm", 3, [Dense(5, "tanh"), LayerNorm(), Dense(3, "softmax")], "cross_entropy"
        ),
        "rmsnorm_pairwise": build(
            "rmsnorm_pairwise",
            3,
            [Dense(4), RMSNorm(), Map(PAIRWISE, name="pairwise"), Dense(1, "sigmoid")],
            "bce",
        ),
        "maxshift": build(
            "maxshift",
            3,
            [
                Dense(5, "tanh"),
                Map(MAXSHIFT, name="maxshift"),
                Map(PROJECT, name="project", units=3, params={PROJ: (m, n), TEMP: ()}),
                Dense(2, "sigmoid"),
            ],
            "mse",
        ),
    }
