# net: seed
# expect: wrong 4 z for a
delta2 = (a2 - Y) * a2 * (1 - a2) / N
dW2 = delta2.T @ z1
