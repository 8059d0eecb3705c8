# net: seed
# expect: right
# NumPy's function spellings: np.matmul, np.multiply, np.subtract, np.divide, np.add.
import numpy as np

err = np.subtract(yhat, Y)
delta2 = np.divide(np.multiply(np.multiply(err, a2), np.subtract(1, a2)), N)
dW2 = np.matmul(delta2.T, a1)
db2 = np.sum(delta2, axis=0)
da1 = np.matmul(delta2, W2)
delta1 = np.multiply(da1, np.multiply(a1, np.add(1, -a1)))
dW1 = np.matmul(np.transpose(delta1), X)
db1 = delta1.sum(0)
