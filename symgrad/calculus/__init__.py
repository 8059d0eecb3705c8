"""Stages 3-5, the calculus: the chain rule in index notation and the passes over its result.

``reverse`` (adjoint equations), ``contraction`` (Kronecker deltas), ``forward_values``
(derivatives rewritten in forward values), ``matrix_form`` (component -> vector algebra)
and ``layout`` (the batched, row-major form).
"""
