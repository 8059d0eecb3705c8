"""Ctrl-C before the command line is ready: one line and exit code 130, never a traceback.

Importing symgrad takes a moment (SymPy, NumPy). When the process is the ``symgrad``
command (the console script or ``python -m symgrad``), :func:`quiet_until_ready` runs as
the package imports this module (its first import), so that an interrupt during the
other imports ends the process with ``symgrad: interrupted`` and exit code 130;
:func:`ready` (called by :func:`symgrad.cli.main` once its own handler is in place)
restores Python's KeyboardInterrupt. A library user's process is never touched.
"""

from __future__ import annotations

import os
import signal
import sys

#: The exit code of an interrupted command (128 + SIGINT).
EXIT_INTERRUPTED = 130


def is_command() -> bool:
    """Whether this process is the ``symgrad`` command rather than a program importing it."""
    argv = list(getattr(sys, "orig_argv", []))
    if len(argv) >= 3 and argv[1] == "-m" and argv[2] == "symgrad":
        return True
    script = os.path.basename(argv[1]) if len(argv) >= 2 else ""
    return script in ("symgrad", "symgrad.exe", "symgrad-script.py")


def _interrupted(signum: int, frame: object) -> None:
    try:
        os.write(2, b"symgrad: interrupted\n")
    finally:
        os._exit(EXIT_INTERRUPTED)


def quiet_until_ready() -> None:
    """In the ``symgrad`` command: Ctrl-C ends the process quietly until :func:`ready`."""
    if is_command() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted)


def ready() -> None:
    """Ctrl-C raises KeyboardInterrupt again (the command line catches it)."""
    if signal.getsignal(signal.SIGINT) is _interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)


quiet_until_ready()  # on import: the package imports this module before anything heavy


__all__ = ["EXIT_INTERRUPTED", "is_command", "quiet_until_ready", "ready"]
