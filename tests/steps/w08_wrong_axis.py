# net: seed
# expect: wrong 5 wrong axis
delta2 = (a2 - Y) * a2 * (1 - a2) / N
dW2 = delta2.T @ a1
db2 = delta2.sum(axis=1)
