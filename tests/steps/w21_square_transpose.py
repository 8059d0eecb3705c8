# net: square
# expect: wrong 6 a transpose
delta2 = 2 * (A2 - Y) * A2 * (1 - A2) / (N * 3)
dW2 = delta2.T @ A1
# square layers: W2.T has the right shape, so only the numbers tell
da1 = delta2 @ W2.T
