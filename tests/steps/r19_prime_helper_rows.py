# net: seed
# expect: right
# A sigmoid_prime helper defined from the activation, used in the batched form.


def sigmoid_prime(z):
    return sigmoid(z) * (1 - sigmoid(z))


delta2 = (A2 - Y) * sigmoid_prime(Z2) / len(X)
dW2 = delta2.T @ A1
db2 = delta2.sum(axis=0)
delta1 = (delta2 @ W2) * sigmoid_prime(Z1)
dW1 = delta1.T @ X
db1 = delta1.sum(axis=0)
