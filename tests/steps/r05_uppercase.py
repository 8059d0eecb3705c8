# net: seed
# expect: right
# Upper-case batch names (Z1, A1, dZ2, dA1) as in many course notes.
dA2 = 2 * (A2 - Y) / (N * n_2)
dZ2 = dA2 * A2 * (1 - A2)
dW2 = dZ2.T @ A1
db2 = dZ2.sum(0)
dA1 = dZ2 @ W2
dZ1 = dA1 * A1 * (1 - A1)
dW1 = dZ1.T @ X
db1 = dZ1.sum(0)
