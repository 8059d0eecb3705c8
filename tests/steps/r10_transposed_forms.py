# net: seed
# expect: right
# The same numbers through transposes: (A^T B)^T = B^T A.
delta2 = (a2 - Y) * a2 * (1 - a2) / N
dW2 = (a1.T @ delta2).T
db2 = delta2.T.sum(axis=1)
da1 = (W2.T @ delta2.T).T
delta1 = da1 * (a1 - a1**2)
dW1 = (X.T @ delta1).T
db1 = delta1.sum(axis=0)
