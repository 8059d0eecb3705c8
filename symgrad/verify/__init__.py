"""Stage 8, verification: generated or hand-written code against numerics, formulas against
the derivation (``check``)."""
