# net: seed
# expect: wrong 3 sign
delta2 = (Y - a2) * a2 * (1 - a2) / N
dW2 = delta2.T @ a1
