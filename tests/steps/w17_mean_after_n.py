# net: seed
# expect: wrong 5 1/N twice
delta2 = (a2 - Y) * a2 * (1 - a2) / N
dW2 = delta2.T @ a1
db2 = delta2.mean(axis=0)
