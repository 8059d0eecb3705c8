# net: softmax_ce
# expect: wrong 8 sum over the samples only
dz2 = (yhat - Y) / N
dW2 = dz2.T @ a1
db2 = dz2.sum(axis=0)
dh = dz2 @ W2
dz1 = dh * (1 - a1**2)
db1 = dz1.sum()
dW1 = X.T @ dz1
