# net: softmax_ce
# expect: right
# Softmax + cross-entropy: dlogits = (probs - Y) / N.
dz2 = (yhat - Y) / N
dW2 = dz2.T @ a1
db2 = dz2.sum(axis=0)
dh = dz2 @ W2
da1 = dh
dz1 = da1 * (1 - a1**2)
dW1 = dz1.T @ X
db1 = dz1.sum(axis=0)
