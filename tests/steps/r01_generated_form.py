# net: seed
# expect: right
# The batched formulas as `symgrad derive --form matrix` prints them.
import numpy as np

delta2 = 2 * (a2 - Y) * a2 * (1 - a2) / (N * n_2)
dW2 = delta2.T @ a1
db2 = delta2.sum(axis=0)
da1 = delta2 @ W2
delta1 = da1 * a1 * (1 - a1)
dW1 = delta1.T @ X
db1 = delta1.sum(axis=0)
