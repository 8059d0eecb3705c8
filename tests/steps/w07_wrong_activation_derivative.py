# net: seed
# expect: wrong 7 wrong activation derivative
delta2 = (a2 - Y) * a2 * (1 - a2) / N
dW2 = delta2.T @ a1
db2 = delta2.sum(axis=0)
da1 = delta2 @ W2
delta1 = da1 * (1 - a1**2)
dW1 = delta1.T @ X
