# net: bce
# expect: wrong 8 a missing mask
# One sample, column vectors, a relu layer: the relu mask (z1 > 0) forgotten.
import numpy as np

delta2 = (a2 - y) / 2
nabla_w2 = np.dot(delta2, a1.T)
delta1 = np.dot(W2.T, delta2)
nabla_w1 = np.dot(delta1, x.T)
nabla_b1 = delta1
