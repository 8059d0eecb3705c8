# net: seed
# expect: right
# Intermediates of my own, np.dot, keepdims, and sigmoid written out.
err = yhat - Y
dsig2 = a2 * (1 - a2)
delta2 = 2 * err * dsig2 / (N * n_2)
dW2 = np.dot(delta2.T, a1)
db2 = np.sum(delta2, axis=0, keepdims=True)
da1 = delta2 @ W2
s1 = sigmoid(z1)
delta1 = da1 * s1 * (1 - s1)
dW1 = np.dot(delta1.T, X)
db1 = np.sum(delta1, axis=0)
