"""Check a learner's whole backward pass, line by line (``symgrad check SPEC --steps FILE``).

The learner writes the backward pass as a Python file of assignments in NumPy notation,
in the batched row-major form of the generated code (samples are rows)::

    delta2 = 2 * (a2 - Y) * a2 * (1 - a2) / (N * n_2)
    dW2 = delta2.T @ a1
    db2 = delta2.sum(axis=0)
    da1 = delta2 @ W2
    delta1 = da1 * a1 * (1 - a1)

The file is never executed: a whitelist tokenizer and a recursive-descent parser read it
(assignments ``NAME = EXPR`` and ``NAME += EXPR`` ..., comments, ``import numpy as np``),
and a small evaluator runs the parsed tree on random batches whose forward values
(``X, Y, z1, a1, ...``) and derived gradients come from the derivation. Each line that
assigns a gradient symgrad knows (``delta2``/``dz2``, ``da1``, ``dW2``, ``db2``, ``dyhat``,
``dx``) is compared with the derived one once the learner has finished with it (a run
of in-place updates ``delta2 *= a2`` counts as one step). Other names are the learner's
own intermediates.

Conventions: ``N`` (or ``n``, ``len(X)``, ``X.shape[0]``) is the batch size; the loss is the
batch mean, so parameter gradients carry 1/N. Adjoints (``delta``, ``da``) are accepted
with the 1/N (as the generated code has them) or without it (per-sample scale), provided
the parameter gradients get it in the end.

A wrong line is answered with what it should be, the likely slip (found by trying the
classic slips on the line itself: a transpose, the product's order, z where a belongs, the
sign, a missing or doubled 1/N, a missing or wrong activation-derivative factor, a sum
over the wrong axis, the wrong layer's value) and a numeric counterexample.
"""

from symgrad.learn.steps.grade import check_steps
from symgrad.learn.steps.parse import LearnerLine, StepsInputError, parse_steps
from symgrad.learn.steps.printer import unparse
from symgrad.learn.steps.report import LineVerdict, StepsReport
from symgrad.learn.steps.targets import _should_be

__all__ = [
    "LineVerdict",
    "LearnerLine",
    "StepsInputError",
    "StepsReport",
    "_should_be",
    "check_steps",
    "parse_steps",
    "unparse",
]
