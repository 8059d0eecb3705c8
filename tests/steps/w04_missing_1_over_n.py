# net: seed
# expect: wrong 9 missing 1/N
# per-sample deltas, and the last weight gradient forgets to divide by N
delta2 = (a2 - Y) * a2 * (1 - a2)
dW2 = delta2.T @ a1 / N
db2 = delta2.sum(axis=0) / N
da1 = delta2 @ W2
delta1 = da1 * a1 * (1 - a1)
dW1 = delta1.T @ X
db1 = delta1.sum(axis=0) / N
