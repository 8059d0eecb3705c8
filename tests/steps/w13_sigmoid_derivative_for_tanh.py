# net: softmax_ce
# expect: wrong 7 wrong activation derivative
dz2 = (yhat - Y) / N
dW2 = dz2.T @ a1
db2 = dz2.sum(axis=0)
dh = dz2 @ W2
dz1 = dh * a1 * (1 - a1)
dW1 = dz1.T @ X
