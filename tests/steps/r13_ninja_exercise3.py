# net: ninja
# expect: right
# The "backprop ninja" exercises 2 and 3 (makemore part 4) in NumPy: the cross-entropy
# backward in three lines and batch norm's backward in one, with the biased variance (so the
# notebook's n/(n-1) factor is 1). The embeddings C[Xb] are the input matrix X (embcat).
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

# exercise 2: the cross-entropy backward, all at once
dlogits = probs.copy()
dlogits[range(n), Yb] -= 1
dlogits /= n
dh = dlogits @ W2.T
dW2 = h.T @ dlogits
db2 = dlogits.sum(0)
dhpreact = (1.0 - h**2) * dh
dbngain = (bnraw * dhpreact).sum(0, keepdim=True)
dbnbias = dhpreact.sum(0, keepdim=True)
# exercise 3: batch norm's backward in one line
dhprebn = bngain * bnvar_inv / n * (n * dhpreact - dhpreact.sum(0) - bnraw * (dhpreact * bnraw).sum(0))
dW1 = embcat.T @ dhprebn
db1 = dhprebn.sum(0)
