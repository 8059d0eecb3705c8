"""Hand-written NumPy backprop for dense networks: the baseline of ``bench/run.py``.

This is the best plain NumPy we could write by hand for the benchmarked networks,
with the same interface as a symgrad-generated module (``loss_and_grads(params, X, Y)``
returning the loss and a dict of gradients, parameters ``W1, b1, ...`` in the
torch.nn.Linear layout, samples as rows, PyTorch's mean reductions):

- forward: ``Z = A @ W.T`` then ``Z += b`` in place; the activation overwrites ``Z``
  (``tanh``; sigmoid through ``0.5 + 0.5 tanh(x/2)``, stable, four in-place passes);
- the loss and the output delta fused with the last activation: softmax + cross-entropy
  gives ``(A - Y) / n`` and log-sum-exp for the value, sigmoid + BCE gives
  ``(A - Y) / (n C)`` and ``softplus(z) - y z`` for the value (softplus as
  ``max(z, 0) + log1p(exp(-|z|))``), all computed in place;
- backward: ``dW = delta.T @ A_prev`` (``np.dot`` at n = 1: numpy's matmul takes a
  slow non-BLAS loop for an outer product), ``db = delta.sum(0)``, ``dA = delta @ W``, and
  the activation derivative from the saved activation (``1 - a^2``, ``a (1 - a)``)
  multiplied in place; no ``dA`` for the input.

Only what the benchmark needs is supported: hidden activations ``tanh``/``sigmoid``,
and ``cross_entropy`` (softmax output), ``bce`` (sigmoid output) or ``mse``
(sigmoid or identity output).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

HIDDEN = ("tanh", "sigmoid")
OUTPUT = {"cross_entropy": ("softmax",), "bce": ("sigmoid",), "mse": ("sigmoid", "identity")}


def _sigmoid_(z: np.ndarray) -> np.ndarray:
    """sigmoid(z), overwriting z: 0.5 + 0.5 tanh(z / 2), finite for every finite z."""
    z *= 0.5
    np.tanh(z, out=z)
    z *= 0.5
    z += 0.5
    return z


def make_loss_and_grads(activations: Sequence[str], loss: str) -> Callable:
    """``loss_and_grads(params, X, Y)`` for dense layers with these activations and loss."""
    *hidden, last = activations
    if any(f not in HIDDEN for f in hidden):
        raise ValueError(f"hidden activations must be among {HIDDEN}, got {hidden}")
    if loss not in OUTPUT or last not in OUTPUT[loss]:
        raise ValueError(f"unsupported output {last!r} with loss {loss!r}")
    L = len(activations)
    names = [(f"W{l}", f"b{l}") for l in range(1, L + 1)]

    def loss_and_grads(
        params: dict[str, np.ndarray], X: np.ndarray, Y: np.ndarray
    ) -> tuple[float, dict[str, np.ndarray]]:
        Ws = [params[w] for w, _ in names]
        bs = [params[b] for _, b in names]
        dtype = Ws[0].dtype
        X = np.asarray(X, dtype=dtype)
        Y = np.asarray(Y, dtype=dtype)
        n = X.shape[0]
        # Forward: keep every layer's activation (the input of the next one).
        acts = [X]
        a = X
        for W, b, f in zip(Ws[:-1], bs[:-1], hidden, strict=True):
            z = a @ W.T
            z += b
            a = np.tanh(z, out=z) if f == "tanh" else _sigmoid_(z)
            acts.append(a)
        z = a @ Ws[-1].T
        z += bs[-1]
        C = z.shape[1]
        # Output layer: loss value and delta = dL/dz, fused.
        if loss == "cross_entropy":
            z -= z.max(axis=1, keepdims=True)
            e = np.exp(z)
            s = e.sum(axis=1)
            # -sum_k y_k (z_k - log s) = log(s) . rowsum(Y) - <Y, z>
            value = float(np.log(s) @ Y.sum(axis=1) - np.vdot(Y, z)) / n
            e /= s[:, None]
            delta = e
            delta -= Y
            delta *= 1.0 / n
        elif loss == "bce":
            # -(y log s(z) + (1 - y) log(1 - s(z))) = softplus(z) - y z, with
            # softplus(z) = max(z, 0) + log1p(exp(-|z|)): 3x faster than np.logaddexp(0, z)
            sp = np.abs(z)
            np.negative(sp, out=sp)
            np.exp(sp, out=sp)
            np.log1p(sp, out=sp)
            value = float(sp.sum() + np.maximum(z, 0.0).sum() - np.vdot(Y, z)) / (n * C)
            delta = _sigmoid_(z)
            delta -= Y
            delta *= 1.0 / (n * C)
        else:  # mse
            A = _sigmoid_(z) if last == "sigmoid" else z
            r = A - Y
            value = float(np.vdot(r, r)) / (n * C)
            delta = r
            delta *= 2.0 / (n * C)
            if last == "sigmoid":
                t = 1.0 - A
                t *= A
                delta *= t
        # Backward.
        grads: dict[str, np.ndarray] = {}
        for l in range(L - 1, -1, -1):
            a_prev = acts[l]
            # np.dot: matmul of (units, 1) @ (1, inputs) takes numpy's slow non-BLAS loop
            grads[names[l][0]] = np.dot(delta.T, a_prev) if n == 1 else delta.T @ a_prev
            grads[names[l][1]] = delta.sum(axis=0)
            if l == 0:
                break
            da = delta @ Ws[l]
            if hidden[l - 1] == "tanh":  # 1 - a^2
                t = a_prev * a_prev
                np.subtract(1.0, t, out=t)
            else:  # a (1 - a)
                t = 1.0 - a_prev
                t *= a_prev
            da *= t
            delta = da
        return value, {w: grads[w] for pair in names for w in pair}

    return loss_and_grads
