# net: seed
# expect: right
# Deltas without the 1/N of the batch mean; the parameter gradients divide by N.
m = X.shape[0]
delta2 = (a2 - Y) * a2 * (1 - a2)  # 2/n_2 = 1 for two outputs
dW2 = delta2.T @ a1 / m
db2 = delta2.sum(axis=0) / m
da1 = delta2 @ W2
delta1 = da1 * a1 * (1 - a1)
dW1 = delta1.T @ X / m
db1 = delta1.sum(axis=0) / m
