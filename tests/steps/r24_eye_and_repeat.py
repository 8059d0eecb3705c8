# net: seed
# expect: right
# Sums over the batch as products with ones, and the mean's weights spread with .repeat.
import numpy as np

w = (np.ones((1, 1)) / N).repeat(N, axis=0)
delta2 = (a2 - Y) * a2 * (1 - a2) * w
dW2 = delta2.T @ np.eye(N) @ a1
db2 = np.ones((1, N)) @ delta2
da1 = delta2 @ W2
delta1 = da1 * a1 * (1 - a1)
dW1 = delta1.T @ X
db1 = np.ones(N) @ delta1
