# net: ninja
# expect: right
# The backprop-ninja network with the samples as columns (Andrew Ng's layout): X is
# (inputs, m), a weight matrix (out, in) multiplies from the left, a bias is a column and
# every sum over the batch runs along axis 1. Batch norm couples the samples of a batch,
# so the column layout is the whole batch transposed.
import numpy as np

m = X.shape[1]
# forward pass
hprebn = W1 @ X + b1
bnmean = hprebn.mean(axis=1, keepdims=True)
bndiff = hprebn - bnmean
bnvar = (bndiff**2).mean(axis=1, keepdims=True)  # biased variance
bnvar_inv = (bnvar + 1e-5) ** -0.5
bnraw = bndiff * bnvar_inv
hpreact = gamma2 * bnraw + beta2
h = np.tanh(hpreact)
logits = W4 @ h + b4
shifted = logits - logits.max(axis=0, keepdims=True)
probs = np.exp(shifted) / np.exp(shifted).sum(axis=0, keepdims=True)
loss = -np.sum(Y * np.log(probs)) / m
# backward pass
dlogits = (probs - Y) / m
dW4 = dlogits @ h.T
db4 = np.sum(dlogits, axis=1, keepdims=True)
dh = W4.T @ dlogits
dhpreact = dh * (1 - h**2)
dgamma2 = np.sum(dhpreact * bnraw, axis=1, keepdims=True)
dbeta2 = np.sum(dhpreact, axis=1, keepdims=True)
dhprebn = gamma2 * bnvar_inv / m * (
    m * dhpreact
    - dhpreact.sum(axis=1, keepdims=True)
    - bnraw * (dhpreact * bnraw).sum(axis=1, keepdims=True)
)
dW1 = dhprebn @ X.T
db1 = np.sum(dhprebn, axis=1, keepdims=True)
