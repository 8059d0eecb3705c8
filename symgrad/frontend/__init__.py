"""Stage 1, the front end: TOML specs and ``file.py:NAME`` references -> the component-form IR.

``expr_parser`` is the whitelist parser for spec expressions (nothing is ever evaluated);
``spec`` validates a TOML file field by field and builds a :class:`symgrad.ir.Network`.
"""
