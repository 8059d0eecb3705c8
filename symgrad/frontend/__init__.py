"""Stage 1, the front end: TOML specs and ``file.py:NAME`` references -> the component-form IR.

``tokens`` is the one tokenizer of every expression symgrad reads (a dialect each for spec
expressions, component and matrix formulas and NumPy steps files) and ``parser_core`` the
one precedence-climbing parser they share; ``expr_parser`` is the whitelist parser for spec
expressions built on them (nothing is ever evaluated);
``spec`` validates a TOML file field by field and builds a :class:`symgrad.ir.Network`.
"""
