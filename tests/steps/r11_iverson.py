# net: bce
# expect: right
# relu' as symgrad prints it: an Iverson bracket
delta2 = (yhat - Y) / (N * n_2)
dW2 = delta2.T @ a1
da1 = delta2 @ W2
delta1 = da1 * [z1 > 0]
dW1 = delta1.T @ X
db1 = colsum(delta1)
