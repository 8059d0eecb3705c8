"""Naming conventions, in one place (as Tangent's ``naming.py``).

Every quantity of a network has a role, a base letter and (except the input and the
target) the layer it belongs to: ``z2`` is the pre-activation of layer 2, ``a1`` its
activation, ``W3`` a parameter, ``x`` the input. Its adjoint (``dL/dq``) and its tangent
(the directional derivative ``R{q}`` used by Hessian-vector products) are named from it
here and nowhere else; documents and code generators split a name back into base and
layer with :func:`split` instead of their own regular expressions.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Roles a quantity can play.
ROLES = ("input", "pre", "act", "param", "target", "loss")

#: The pre-activation's adjoint is the "error" delta<l> (Nielsen's notation).
_ERROR_BASE = "z"
_ERROR_PREFIX = "delta"
_ADJOINT_PREFIX = "d"
_TANGENT_PREFIX = "R"


@dataclass(frozen=True)
class Quantity:
    """A named quantity of the network: ``Quantity("act", "a", 1).name == "a1"``."""

    role: str
    base: str
    layer: int | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r} (known: {', '.join(ROLES)})")

    @property
    def name(self) -> str:
        return self.base if self.layer is None else f"{self.base}{self.layer}"

    @property
    def adjoint(self) -> str:
        """``dL/d(self)``: ``delta2`` for ``z2``, ``da1`` for ``a1``, ``dW2``, ``dx``."""
        return adjoint_name(self.name)

    @property
    def tangent(self) -> str:
        """The directional derivative ``R{self}`` along a parameter direction V: ``Rz2``."""
        return tangent_name(self.name)

    def __str__(self) -> str:
        return self.name


def pre(layer: int) -> Quantity:
    """``z<l>``: a dense layer's pre-activation."""
    return Quantity("pre", "z", layer)


def act(layer: int) -> Quantity:
    """``a<l>``: layer ``l``'s output (activation, map or pooling output)."""
    return Quantity("act", "a", layer)


def param(base: str, layer: int) -> Quantity:
    """A parameter of layer ``l``: ``W<l>``, ``b<l>``, ``gamma<l>``, ``<name><l>`` for maps."""
    return Quantity("param", base, layer)


INPUT = Quantity("input", "x")
TARGET = Quantity("target", "y")


def split(name: str) -> tuple[str, str]:
    """``"delta12"`` -> ``("delta", "12")``; ``"x"`` -> ``("x", "")`` (base, layer digits)."""
    stem = name.rstrip("0123456789")
    return stem, name[len(stem) :]


def adjoint_name(quantity: str) -> str:
    """The adjoint's name: dL/dz2 is delta2, dL/da1 is da1, dL/dW2 is dW2, dL/dx is dx."""
    base, layer = split(quantity)
    if base == _ERROR_BASE and layer:
        return _ERROR_PREFIX + layer
    return _ADJOINT_PREFIX + quantity


def primal_name(adjoint: str) -> str | None:
    """The quantity an adjoint name belongs to (``delta2`` -> ``z2``), or None."""
    base, layer = split(adjoint)
    if base == _ERROR_PREFIX and layer:
        return _ERROR_BASE + layer
    if adjoint.startswith(_ADJOINT_PREFIX) and len(adjoint) > 1:
        return adjoint[len(_ADJOINT_PREFIX) :]
    return None


def tangent_name(quantity: str) -> str:
    """The tangent's name (forward mode along V): ``Rz2``, ``Rdelta2`` (R-operator notation)."""
    return _TANGENT_PREFIX + quantity


__all__ = [
    "INPUT",
    "ROLES",
    "TARGET",
    "Quantity",
    "act",
    "adjoint_name",
    "param",
    "pre",
    "primal_name",
    "split",
    "tangent_name",
]
