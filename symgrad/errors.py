"""Errors: every problem a user can cause is a SymgradError with one readable line."""

from __future__ import annotations


class SymgradError(Exception):
    """Base class of symgrad's own errors (bad input, unsupported structure)."""


class SpecError(SymgradError):
    """A spec, expression or argument is invalid.

    Rendered as one line: ``FILE: FIELD: MESSAGE`` (file and field when known).
    """

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None):
        self.message = message
        self.file = file
        self.field = field
        super().__init__(self.line())

    def line(self) -> str:
        parts = [p for p in (self.file, self.field) if p]
        return ": ".join([*parts, self.message])

    def at(self, *, file: str | None = None, field: str | None = None) -> SpecError:
        """Return a copy located at ``file``/``field`` (keeps existing values)."""
        return SpecError(self.message, file=self.file or file, field=self.field or field)


class DerivationError(SymgradError):
    """The engine met a structure it cannot handle (names the node)."""
