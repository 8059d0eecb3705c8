# net: bce
# expect: wrong 6 a missing mask
delta2 = (yhat - Y) / (N * n_2)
dW2 = delta2.T @ a1
da1 = delta2 @ W2
delta1 = da1
dW1 = delta1.T @ X
