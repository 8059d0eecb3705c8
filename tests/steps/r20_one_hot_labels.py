# net: softmax_ce
# expect: right
# Labels from the one-hot targets (Y.argmax(1)) and fancy-index assignment, the way
# softmax + cross-entropy is written in class.

labels = Y.argmax(1)
n = X.shape[0]
dz2 = a2.copy()
dz2[range(n), labels] -= 1
dz2 /= n
dW2 = dz2.T @ a1
db2 = dz2.sum(axis=0)
da1 = dz2 @ W2
dz1 = da1 * (1 - a1**2)
dW1 = dz1.T @ X
db1 = dz1.sum(axis=0)
