# net: square
# expect: wrong 5 the wrong layer's value: X where A1 belongs
delta2 = 2 * (A2 - Y) * A2 * (1 - A2) / (N * 3)
# the weights of layer 2 see layer 1's output, not the input
dW2 = delta2.T @ X
