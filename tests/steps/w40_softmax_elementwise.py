# net: softmax_mse
# expect: wrong 5 taken elementwise
# softmax's derivative taken elementwise, as if it were sigmoid's.
da1 = 2 * (a1 - Y) / (N * n_1)
delta1 = da1 * a1 * (1 - a1)
dW1 = delta1.T @ X
db1 = delta1.sum(axis=0)
