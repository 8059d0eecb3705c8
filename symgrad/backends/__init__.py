"""Stage 6, code generation: the derivation printed as a standalone module.

``codegen`` computes the target-free program (stable forms, CSE, statements); each
backend is a printer (``numpy_printer``) plus templates under ``templates/``.
"""
