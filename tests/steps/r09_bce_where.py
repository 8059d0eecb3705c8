# net: bce
# expect: right
# Through dL/dyhat explicitly, and np.where for the ReLU.
dyhat = (yhat - Y) / (yhat * (1 - yhat)) / (N * n_2)
delta2 = dyhat * yhat * (1 - yhat)
dW2 = delta2.T @ a1
da1 = delta2 @ W2
delta1 = np.where(z1 > 0, da1, 0)
dW1 = delta1.T @ X
db1 = delta1.sum(axis=0)
