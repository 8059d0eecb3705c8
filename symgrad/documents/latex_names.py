# ruff: noqa: UP031 - %-formatting keeps LaTeX braces readable (no {{ }} doubling)
"""Render stage (7), LaTeX: how a quantity is named and styled (``z^{[2]}_{i}``,
``\\boldsymbol{\\delta}^{[2]}``, ``\\mathbf{W}``), by notation.

The names come from ``ir/naming.py``'s scheme (``z2``, ``a1``, ``W2``, ``delta2``, ``da1``,
``dW2``); the printer (``latex_printer.py``) calls :func:`quantity` for each symbol.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

import sympy as sp
from sympy.printing.latex import translate

from symgrad.calculus.layout import BATCHED_OPS
from symgrad.calculus.local_matrix import Diag as Diag
from symgrad.calculus.matrix_form import Mat, MatVec, Outer, SumAll, TMatVec, Vec
from symgrad.escape import is_identifier, latex_name


def _math_safe(name: str) -> bool:
    """An identifier, or one with primes (the documents' ``c'``): safe in math as it is."""
    return is_identifier(str(name).rstrip("'"))


NOTATIONS = ("component", "vector", "batched")

#: The loss of one sample: every per-sample adjoint (component and matrix form) is a
#: derivative of it.
LOSS = r"\ell"
#: The mean loss over the batch: the batched adjoints (they carry its 1/N) and parameter
#: gradients are derivatives of it.
BATCH_LOSS = r"\mathcal{L}"
#: The two losses in the text format: ``dl/da2[i]`` per sample, ``dL/da2`` batched.
LOSS_TEXT = "l"
BATCH_LOSS_TEXT = "L"
BATCH_SIZE = "N"


_NAME = re.compile(r"^([A-Za-z]+?)(\d*)$")


def split_name(name: str) -> tuple[bool, str, str]:
    """Split a quantity name into (is_adjoint, base, layer).

    ``"a2"`` -> ``(False, "a", "2")``, ``"da1"`` -> ``(True, "a1"...)`` (the adjoint of
    ``a1``: base ``"a"``, layer ``"1"``), ``"delta2"`` -> ``(False, "delta", "2")``,
    ``"dx"`` -> ``(True, "x", "")``. Names that do not follow the pattern are returned
    whole as the base.
    """
    adjoint = False
    if name.startswith("d") and not name.startswith("delta") and name[1:2].isalpha():
        adjoint, name = True, name[1:]
    m = _NAME.match(name)
    if not m:
        return adjoint, name, ""
    return adjoint, m.group(1), m.group(2)


def _base_symbol(base: str) -> str:
    """``delta`` -> ``\\delta``, ``W`` -> ``W``, ``gain`` -> ``\\mathrm{gain}``."""
    t = translate(base)
    if t == base and len(base) > 1:
        return r"\mathrm{%s}" % base
    return t


def paren(tex: str) -> str:
    """``(tex)``, with ``\\left(``/``\\right)`` only around tall content (fractions, sums)."""
    if any(t in tex for t in (r"\frac", r"\sum", r"\sqrt", r"\left", r"\begin", r"\prod")):
        return r"\left(%s\right)" % tex
    return "(%s)" % tex


def _is_greek(base: str) -> bool:
    return translate(base).startswith("\\") and not translate(base).startswith(r"\mathrm")


def _styled(base: str, style: str) -> str:
    """The kernel symbol of a quantity in a given style.

    ``style`` is ``"scalar"`` (component form), ``"vector"`` (bold lower case),
    ``"matrix"`` (as is) or ``"batched"`` (capital: samples as rows).
    """
    if style == "vector":
        if _is_greek(base):
            return r"\boldsymbol{%s}" % translate(base)
        return r"\mathbf{%s}" % base
    if style == "batched":
        if _is_greek(base):
            cap = translate(base[0].upper() + base[1:])
            return cap if cap.startswith("\\") else r"\mathrm{%s}" % cap
        if len(base) == 1:
            return base.upper()
        return r"\mathrm{%s}" % (base[0].upper() + base[1:])
    return _base_symbol(base)


def _join_indices(indices: Iterable[str]) -> str:
    idx = list(indices)
    if all(len(s) == 1 for s in idx):
        return "".join(idx)
    return ",".join(idx)


def quantity(
    name: str,
    notation: str = "component",
    indices: Iterable[str] = (),
    *,
    transpose: bool = False,
    yhat: str | None = None,
    matrix: bool = False,
    batch_loss: bool = False,
) -> str:
    """The LaTeX of a named quantity: :func:`_quantity`, memoised (a document names the
    same quantities many times)."""
    return _quantity(name, notation, tuple(indices), transpose, yhat, matrix, batch_loss)


@lru_cache(maxsize=1 << 16)
def _quantity(
    name: str,
    notation: str = "component",
    indices: tuple[str, ...] = (),
    transpose: bool = False,
    yhat: str | None = None,
    matrix: bool = False,
    batch_loss: bool = False,
) -> str:
    """The LaTeX of a named quantity (``z2``, ``a1``, ``W2``, ``delta2``, ``da1``, ``dW2``, ``x``).

    Args:
        name: the quantity's name in the IR (an IndexedBase label, a Vec or Mat name).
        notation: ``"component"``, ``"vector"`` or ``"batched"``.
        indices: already printed subscripts (component form), e.g. ``("k", "i")``.
        transpose: append ``\\top`` to the superscript (``W^{[2]\\top}``).
        yhat: the name of the network output, printed as ``\\hat{y}``.
        matrix: the quantity is a matrix (a parameter like ``W2``): never bold or capitalised.
        batch_loss: an adjoint of the batch's mean loss though not in batched notation (a
            parameter's gradient summed over the batch).

    Returns:
        e.g. ``W^{[2]}_{ki}``, ``\\boldsymbol{\\delta}^{[2]}``,
        ``\\frac{\\partial \\mathcal{L}}{\\partial A^{[1]}}``.
    """
    if not _math_safe(name):  # a name that escaped validation: inert text, never markup
        sub = ",".join(indices)
        return latex_name(name) + ("_{%s}" % sub if sub else "")
    adjoint, base, layer = split_name(name)
    inner_name = base + layer
    idx = list(indices)
    if notation == "component":
        style = "scalar"
    elif matrix:
        style = "matrix"
    else:
        style = "vector" if notation == "vector" else "batched"
    if yhat is not None and inner_name == yhat:
        kernel = {
            "scalar": r"\hat{y}",
            "vector": r"\hat{\mathbf{y}}",
            "batched": r"\hat{Y}",
            "matrix": r"\hat{Y}",
        }[style]
        sup = ""
    else:
        kernel = _styled(base, style)
        sup = "[%s]" % layer if layer else ""
    sub = "_{%s}" % _join_indices(idx) if idx else ""
    if adjoint:
        inner = kernel + ("^{%s}" % sup if sup else "") + sub
        loss = BATCH_LOSS if notation == "batched" or batch_loss else LOSS
        tex = r"\frac{\partial %s}{\partial %s}" % (loss, inner)
        return paren(tex) + r"^{\top}" if transpose else tex
    if transpose:
        sup = sup + r"\top"
    return kernel + ("^{%s}" % sup if sup else "") + sub


def is_vector_valued(e: sp.Basic, notation: str = "vector") -> bool:
    """Whether ``e`` is a vector (per sample) or a matrix (batched) rather than a scalar."""
    if notation == "component":
        return False
    if isinstance(e, Vec):
        return True
    if isinstance(e, Mat):
        return True
    if isinstance(e, SumAll):
        return False
    if isinstance(e, (MatVec, TMatVec, Outer, *BATCHED_OPS)):
        return True
    return any(is_vector_valued(a, notation) for a in e.args)


def _is_constant(f: sp.Basic) -> bool:
    """Numbers, widths ``n_l`` and the batch size: ordinary scalar coefficients."""
    if f.is_Number:
        return True
    if isinstance(f, sp.Symbol) and not isinstance(f, Vec | Mat):
        return bool(f.is_integer and f.is_positive)
    if isinstance(f, sp.Pow):
        return _is_constant(f.base) and f.exp.is_Number
    return False


def _is_adjoint_name(name: str) -> bool:
    adjoint, base, _ = split_name(name)
    return adjoint or base == "delta"


def _has_adjoint(e: sp.Basic) -> bool:
    names = {str(b.base.label) for b in e.atoms(sp.Indexed)}
    names |= {s.name for s in e.atoms(Vec)}
    return any(_is_adjoint_name(nm) for nm in names)


#: Functions whose LaTeX SymPy's own printer already writes well (exp as e^x, ...).
