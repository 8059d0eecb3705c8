# net: bce
# expect: wrong 4 transpose
delta2 = (yhat - Y) / (N * n_2)
dW2 = delta2 @ a1.T
