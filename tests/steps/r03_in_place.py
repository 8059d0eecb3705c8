# net: seed
# expect: right
# In-place updates, as the generated code writes them: a run of them is one step.
delta2 = 1 - a2
delta2 *= a2 - Y
delta2 *= a2
delta2 /= N
dW2 = delta2.T @ a1
db2 = delta2.sum(axis=0)
da1 = delta2 @ W2
delta1 = 1 - a1
delta1 *= a1
delta1 *= da1
dW1 = delta1.T @ X
db1 = delta1.sum(axis=0)
