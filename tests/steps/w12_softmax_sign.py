# net: softmax_ce
# expect: wrong 3 sign
dz2 = (Y - yhat) / N
dW2 = dz2.T @ a1
