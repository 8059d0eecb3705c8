# net: ninja
# expect: right
# Batch norm's backward pass with the samples as columns, on the network's own forward
# values (z1, a2, a3, a4 as (units, m)): the normalised values are recomputed from z1.
import numpy as np

m = X.shape[1]
mu = z1.mean(axis=1, keepdims=True)
var = ((z1 - mu) ** 2).mean(axis=1, keepdims=True)
xhat = (z1 - mu) / np.sqrt(var + 1e-5)
delta4 = (a4 - Y) / m
dW4 = delta4 @ a3.T
db4 = delta4.sum(axis=1, keepdims=True)
da3 = W4.T @ delta4
da2 = da3 * (1 - a3**2)
dgamma2 = (da2 * xhat).sum(axis=1, keepdims=True)
dbeta2 = da2.sum(axis=1, keepdims=True)
delta1 = gamma2 / np.sqrt(var + 1e-5) / m * (
    m * da2 - da2.sum(axis=1, keepdims=True) - xhat * (da2 * xhat).sum(axis=1, keepdims=True)
)
dW1 = delta1 @ X.T
db1 = delta1.sum(axis=1, keepdims=True)
