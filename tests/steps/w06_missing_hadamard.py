# net: seed
# expect: wrong 6 missing Hadamard factor
delta2 = (a2 - Y) * a2 * (1 - a2) / N
dW2 = delta2.T @ a1
db2 = delta2.sum(axis=0)
delta1 = delta2 @ W2
dW1 = delta1.T @ X
