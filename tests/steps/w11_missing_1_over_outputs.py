# net: seed
# expect: wrong 4 missing 1/n_2
# mse is the mean over all N * n_2 entries: dL/dyhat = 2 (yhat - y) / (N n_2)
delta2 = 2 * (a2 - Y) * a2 * (1 - a2) / N
dW2 = delta2.T @ a1
