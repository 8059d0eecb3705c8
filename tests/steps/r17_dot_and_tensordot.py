# net: seed
# expect: right
# Methods and tensordot: delta2.T.dot(a1), tensordot with list axes, .transpose(1, 0).
import numpy as np

delta2 = (a2 - Y) * a2 * (1 - a2) / X.shape[0]
dW2 = delta2.T.dot(a1)
db2 = delta2.sum(axis=0)
da1 = np.tensordot(delta2, W2, axes=[[1], [0]])
delta1 = da1 * a1 * (1 - a1)
dW1 = np.tensordot(delta1, X, axes=([0], [0]))
db1 = np.ones(X.shape[0]) @ delta1
