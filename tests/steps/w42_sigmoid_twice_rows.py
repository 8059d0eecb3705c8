# net: seed
# expect: wrong 4 sigmoid applied twice
# sigmoid applied to the output a second time: a2 is already sigmoid(z2).
delta2 = (sigmoid(a2) - Y) * a2 * (1 - a2) / N
dW2 = delta2.T @ a1
db2 = delta2.sum(axis=0)
