# net: square
# expect: wrong 4 a missing factor 2
# The mse's derivative without the 2 of the square (three outputs, so not the 1/2-sum).
delta2 = (a2 - Y) * a2 * (1 - a2) / (N * n_2)
dW2 = delta2.T @ a1
db2 = delta2.sum(axis=0)
