# net: seed
# expect: right
# One sample, column vectors, written with @ and .T, and reshape(a.shape).

delta2 = (a2 - y) * a2 * (1 - a2)
nabla_w2 = delta2 @ a1.T
nabla_b2 = delta2.reshape(b2.shape)
delta1 = (W2.T @ delta2) * a1 * (1 - a1)
nabla_w1 = delta1 @ x.T
nabla_b1 = delta1.reshape(b1.shape)
