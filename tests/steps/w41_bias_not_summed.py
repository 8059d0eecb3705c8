# net: seed
# expect: wrong 6 a missing sum over the samples
# db2 without the sum over the samples (b2 is broadcast over the rows).
delta2 = (a2 - Y) * a2 * (1 - a2) / N
dW2 = delta2.T @ a1
db2 = delta2
