"""A Python spec whose build() call is invalid (SpecError from the API)."""

import symgrad

net = symgrad.build("bad", 3, [symgrad.Dense(4, "sigmod")], "mse")
