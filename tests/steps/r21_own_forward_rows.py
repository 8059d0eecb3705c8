# net: seed
# expect: right
# A forward pass of one's own (its loss is the network's), then every intermediate graded
# as the gradient of the loss: dloss_terms, derr, dyhat2 ...
import numpy as np

n = X.shape[0]
h = 1 / (1 + np.exp(-(X @ W1.T + b1)))
out = 1 / (1 + np.exp(-(h @ W2.T + b2)))
err = out - Y
loss_terms = err**2
loss = loss_terms.mean()
dloss_terms = np.ones_like(loss_terms) / loss_terms.size
derr = 2 * err * dloss_terms
dout = derr
dW2 = (dout * out * (1 - out)).T @ h
db2 = (dout * out * (1 - out)).sum(0)
dh = (dout * out * (1 - out)) @ W2
dW1 = (dh * h * (1 - h)).T @ X
db1 = (dh * h * (1 - h)).sum(0)
