# net: softmax_ce
# expect: wrong 8 transposes in the product
dz2 = (yhat - Y) / N
dW2 = dz2.T @ a1
db2 = dz2.sum(axis=0)
dh = dz2 @ W2
dz1 = dh * (1 - a1**2)
dW1 = X.T @ dz1
