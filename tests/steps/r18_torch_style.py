# net: seed
# expect: right
# Torch-style spellings: keepdim=, .clone(), .transpose(1, 0), and an update done in place
# after an unrelated line.

delta2 = (a2 - Y).clone()
dsig = a2 * (1 - a2)
delta2 *= dsig
delta2 /= N
dW2 = delta2.transpose(1, 0) @ a1
db2 = delta2.sum(0, keepdim=True)
da1 = delta2 @ W2
delta1 = da1 * a1 * (1 - a1)
dW1 = delta1.transpose(1, 0) @ X
db1 = delta1.sum(0, keepdim=True)
