# net: ninja
# expect: wrong 50 a missing sum over the samples
# db2 without the sum over the batch: b2 is broadcast over the rows.
import numpy as np

# the network's parameters under the notebook's names (its W1, W2 are (in, out))
W1 = W1.T
bngain = gamma2
bnbias = beta2
W2 = W4.T
b2 = b4
embcat = X
n = X.shape[0]
Yb = Y.argmax(1)

# forward pass, "chunkated" into smaller steps that are possible to backward one at a time
hprebn = embcat @ W1 + b1  # hidden layer pre-activation
bnmeani = 1 / n * hprebn.sum(0, keepdims=True)
bndiff = hprebn - bnmeani
bndiff2 = bndiff**2
bnvar = 1 / n * (bndiff2).sum(0, keepdims=True)  # biased variance
bnvar_inv = (bnvar + 1e-5) ** -0.5
bnraw = bndiff * bnvar_inv
hpreact = bngain * bnraw + bnbias
h = np.tanh(hpreact)  # hidden layer
logits = h @ W2 + b2  # output layer
logit_maxes = logits.max(1, keepdims=True)
norm_logits = logits - logit_maxes  # subtract max for numerical stability
counts = np.exp(norm_logits)
counts_sum = counts.sum(1, keepdims=True)
counts_sum_inv = counts_sum**-1
probs = counts * counts_sum_inv
logprobs = np.log(probs)
loss = -logprobs[range(n), Yb].mean()

# exercise 1: backprop through the whole thing manually
dlogprobs = np.zeros_like(logprobs)
dlogprobs[range(n), Yb] = -1.0 / n
dprobs = (1.0 / probs) * dlogprobs
dcounts_sum_inv = (counts * dprobs).sum(1, keepdims=True)
dcounts = counts_sum_inv * dprobs
dcounts_sum = (-(counts_sum**-2)) * dcounts_sum_inv
dcounts += np.ones_like(counts) * dcounts_sum
dnorm_logits = counts * dcounts
dlogits = dnorm_logits.copy()
dlogit_maxes = (-dnorm_logits).sum(1, keepdims=True)
dlogits += np.eye(logits.shape[1])[np.argmax(logits, axis=1)] * dlogit_maxes
dh = dlogits @ W2.T
dW2 = h.T @ dlogits
db2 = dlogits
dhpreact = (1.0 - h**2) * dh
dbngain = (bnraw * dhpreact).sum(0, keepdims=True)
dbnraw = bngain * dhpreact
dbnbias = dhpreact.sum(0, keepdims=True)
dbndiff = bnvar_inv * dbnraw
dbnvar_inv = (bndiff * dbnraw).sum(0, keepdims=True)
dbnvar = (-0.5 * (bnvar + 1e-5) ** -1.5) * dbnvar_inv
dbndiff2 = (1.0 / n) * np.ones_like(bndiff2) * dbnvar
dbndiff += (2 * bndiff) * dbndiff2
dhprebn = dbndiff.copy()
dbnmeani = (-dbndiff).sum(0)
dhprebn += 1.0 / n * (np.ones_like(hprebn) * dbnmeani)
dembcat = dhprebn @ W1.T
dW1 = embcat.T @ dhprebn
db1 = dhprebn.sum(0)
