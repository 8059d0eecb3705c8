# The digits CNN's backward pass written by hand in NumPy (no loops), for
#   symgrad check examples/digits_cnn/digits_cnn.toml --steps examples/digits_cnn/backward_steps.py
# Shapes: X (N, 1, 8, 8), z1/a1 (N, 16, 6, 6), a2 (N, 16, 3, 3), a3 (N, 144), yhat (N, 10).
delta4 = (yhat - Y) / N                                  # softmax + cross-entropy
dW4 = delta4.T @ a3
db4 = delta4.sum(axis=0)
da3 = delta4 @ W4
da2 = da3.reshape(N, 16, 3, 3)                           # undo the flatten
# max pooling sends each window's error to its maximum; relu' then masks it. (Written as one
# step: where relu made a window all zeros, the tie at 0 is masked by relu' anyway.)
up = np.repeat(np.repeat(da2, 2, axis=2), 2, axis=3)
top = np.repeat(np.repeat(a2, 2, axis=2), 2, axis=3)
delta1 = up * (a1 == top) * (z1 > 0)
cols = np.lib.stride_tricks.sliding_window_view(X, (3, 3), axis=(2, 3))  # (N, 1, 6, 6, 3, 3)
dW1 = np.einsum("nohw,nchwij->ocij", delta1, cols)      # the correlation delta1 * x
db1 = delta1.sum(axis=(0, 2, 3))
# dL/dx: the transposed correlation, as a full correlation with the flipped kernel
padded = np.pad(delta1, ((0, 0), (0, 0), (2, 2), (2, 2)))
win = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
dX = np.einsum("nohwij,ocij->nchw", win, W1[:, :, ::-1, ::-1])
