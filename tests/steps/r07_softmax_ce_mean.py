# net: softmax_ce
# expect: right
# Per-sample deltas, means over the batch, tanh' written with np.tanh.
delta2 = yhat - Y
dW2 = delta2.T @ a1 / N
db2 = delta2.mean(axis=0)
da1 = delta2 @ W2
delta1 = da1 * (1 - np.tanh(z1) ** 2)
dW1 = (delta1.T @ X) / len(X)
db1 = delta1.mean(axis=0)
