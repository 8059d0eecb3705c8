# net: seed
# expect: wrong 23 a2 where z2 belongs
# Nielsen's backprop with sigmoid_prime(a2): the derivative is taken at z2.
import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def sigmoid_prime(z):
    """Derivative of the sigmoid function."""
    return sigmoid(z) * (1 - sigmoid(z))


# feedforward
activation = x
z1 = np.dot(W1, activation) + b1
a1 = sigmoid(z1)
z2 = np.dot(W2, a1) + b2
a2 = sigmoid(z2)
# backward pass
delta2 = (a2 - y) * sigmoid_prime(a2)
nabla_b2 = delta2
nabla_w2 = np.dot(delta2, a1.transpose())
sp = sigmoid_prime(z1)
delta1 = np.dot(W2.transpose(), delta2) * sp
nabla_b1 = delta1
nabla_w1 = np.dot(delta1, x.transpose())
