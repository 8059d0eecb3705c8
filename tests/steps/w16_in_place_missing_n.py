# net: seed
# expect: wrong 7 missing 1/N
delta2 = a2 - Y
delta2 *= a2
delta2 *= 1 - a2
# per-sample delta2: the sum over the batch still needs 1/N
dW2 = delta2.T @ a1
