"""Stage 2, the intermediate representation: networks as component-form equations.

``ops`` is the op registry (every function's SymPy form, derivative, printing and
evaluation spellings, in one entry each); ``indices`` and ``naming`` hold the naming
conventions; ``network`` the IR classes; ``layers`` the sugar (dense, map, losses).
"""
