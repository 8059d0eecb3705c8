# net: bce
# expect: right
# A relu layer's mask with np.where, the bce gradient through the sigmoid output.
import numpy as np

delta2 = np.divide(a2 - Y, N * n_2)
dW2 = delta2.T @ a1
da1 = delta2 @ W2
delta1 = np.where(z1 > 0, da1, 0)
dW1 = delta1.T @ X
db1 = delta1.sum(axis=0)
