# net: seed
# expect: wrong 7 where a1 = f(z1) belongs
delta2 = (a2 - Y) * a2 * (1 - a2) / N
dW2 = delta2.T @ a1
db2 = delta2.sum(axis=0)
da1 = delta2 @ W2
delta1 = da1 * z1 * (1 - z1)
dW1 = delta1.T @ X
