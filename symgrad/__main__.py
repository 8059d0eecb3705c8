"""``python -m symgrad``: the same as the ``symgrad`` command."""

from __future__ import annotations

from symgrad.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
