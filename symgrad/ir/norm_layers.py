"""Stage 2 (IR), layer sugar: the normalisation layers.

``LayerNorm``, ``RMSNorm`` and ``BatchNorm`` (training mode) as maps written with sums:
nothing here knows a derivative; the mean and variance are component expressions.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from symgrad.ir import lets as let_names
from symgrad.ir import naming
from symgrad.ir.indices import BATCH, SAMPLE, idx
from symgrad.ir.network import Param, Stage

#: The free and summed indices of the component forms written here.
i, j, k = idx("i"), idx("j"), idx("k")

#: PyTorch's default epsilon of its norm layers.
NORM_EPS = 1e-5


@dataclass(frozen=True)
class LayerNorm:
    """``torch.nn.LayerNorm(n)`` over one sample's features: ``gamma * (a - mu) /
    sqrt(var + eps) + beta``, mean and (biased) variance written as sums. Sugar over a map:
    the engine sees only the component form."""

    eps: float = NORM_EPS


@dataclass(frozen=True)
class RMSNorm:
    """``torch.nn.RMSNorm(n)``: ``gamma * a / sqrt(mean(a**2) + eps)`` (no shift)."""

    eps: float = NORM_EPS


@dataclass(frozen=True)
class BatchNorm:
    """``torch.nn.BatchNorm1d(n)`` in training mode: ``gamma * (a - mu) / sqrt(var + eps) +
    beta`` with the mean and (biased) variance of each feature over the samples of the
    batch. The one layer that couples the samples: its component form carries the sample
    index, ``a[s, i]``, and sums over the batch ``sum_t a[t, i] / N``."""

    eps: float = NORM_EPS


NORMS = (LayerNorm, RMSNorm, BatchNorm)


def layernorm_body(
    inp: sp.IndexedBase, gamma: sp.IndexedBase, beta: sp.IndexedBase, w: sp.Expr, eps: float
) -> sp.Expr:
    """The textbook LayerNorm component form (nested sums: the mean inside the variance)."""
    mu = sp.Sum(inp[j], (j, 0, w - 1)) / w
    var = sp.Sum((inp[k] - mu) ** 2, (k, 0, w - 1)) / w
    return gamma[i] * (inp[i] - mu) / sp.sqrt(var + sp.Float(eps)) + beta[i]


def rmsnorm_body(inp: sp.IndexedBase, gamma: sp.IndexedBase, w: sp.Expr, eps: float) -> sp.Expr:
    """The RMSNorm component form."""
    return gamma[i] * inp[i] / sp.sqrt(sp.Sum(inp[j] ** 2, (j, 0, w - 1)) / w + sp.Float(eps))


def batchnorm_body(
    inp: sp.IndexedBase, gamma: sp.IndexedBase, beta: sp.IndexedBase, eps: float
) -> sp.Expr:
    """The training-mode BatchNorm component form ``out[s, i]``: per feature ``i``, the mean
    and biased variance over the samples ``t, u`` of the batch (``BATCH`` of them)."""
    t, u = idx("t"), idx("u")
    mu = sp.Sum(inp[t, i], (t, 0, BATCH - 1)) / BATCH
    var = sp.Sum((inp[u, i] - mu) ** 2, (u, 0, BATCH - 1)) / BATCH
    return gamma[i] * (inp[SAMPLE, i] - mu) / sp.sqrt(var + sp.Float(eps)) + beta[i]


def _norm(layer: LayerNorm | RMSNorm | BatchNorm, l: int, inp, w_in) -> list[Stage]:
    gamma = sp.IndexedBase(naming.param("gamma", l).name, real=True)
    params = [Param(gamma.name, gamma, (w_in,), "ones", w_in)]
    out = sp.IndexedBase(naming.act(l).name, real=True)
    if isinstance(layer, BatchNorm):
        beta = sp.IndexedBase(naming.param("beta", l).name, real=True)
        params.append(Param(beta.name, beta, (w_in,), "zeros", w_in))
        body = batchnorm_body(inp, gamma, beta, layer.eps)
        return [
            Stage(
                out,
                inp,
                w_in,
                w_in,
                body,
                l,
                "map",
                "batchnorm",
                tuple(params),
                attrs=(("norm", "batchnorm"), ("eps", layer.eps), ("training", True)),
                sample=SAMPLE,
            )
        ]
    if isinstance(layer, LayerNorm):
        beta = sp.IndexedBase(naming.param("beta", l).name, real=True)
        params.append(Param(beta.name, beta, (w_in,), "zeros", w_in))
        body = layernorm_body(inp, gamma, beta, w_in, layer.eps)
        label = "layernorm"
    else:
        body = rmsnorm_body(inp, gamma, w_in, layer.eps)
        label = "rmsnorm"
    lets = let_names.norm_statistics(body, inp, w_in)
    return [Stage(out, inp, w_in, w_in, body, l, "map", label, tuple(params), lets=lets)]
