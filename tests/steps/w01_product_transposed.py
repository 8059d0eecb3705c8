# net: seed
# expect: wrong 5 transpose
delta2 = (a2 - Y) * a2 * (1 - a2) / N
# dW2 has the shape of W2 (2 x 4); this is 4 x 2
dW2 = a1.T @ delta2
db2 = delta2.sum(axis=0)
