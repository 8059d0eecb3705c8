# net: cnn
# expect: wrong 13 a flipped kernel
# The weight gradient turned by 180 degrees, as if the layer convolved (it correlates).
delta4 = (yhat - Y) / N
dW4 = delta4.T @ a3
db4 = delta4.sum(axis=0)
da3 = delta4 @ W4
da2 = da3.reshape(N, 3, 2, 2)
up = np.repeat(np.repeat(da2, 2, axis=2), 2, axis=3)
top = np.repeat(np.repeat(a2, 2, axis=2), 2, axis=3)
delta1 = up * (a1 == top) * (1 - a1**2)
cols = np.lib.stride_tricks.sliding_window_view(X, (3, 3), axis=(2, 3))
dW1 = np.einsum("nohw,nchwij->ocij", delta1, cols)[:, :, ::-1, ::-1]
db1 = delta1.sum(axis=(0, 2, 3))
padded = np.pad(delta1, ((0, 0), (0, 0), (2, 2), (2, 2)))
win = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
dX = np.einsum("nohwij,ocij->nchw", win, np.flip(W1, axis=(2, 3)))
