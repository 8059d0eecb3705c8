"""Ctrl-C before the command line is ready: one line and exit code 130, never a traceback.

Importing symgrad takes a moment (SymPy, NumPy). When the process is the ``symgrad``
command (the console script or ``python -m symgrad``), :func:`quiet_until_ready` runs as
the package imports this module (its first import), so that an interrupt during the
other imports ends the process with ``symgrad: interrupted`` and exit code 130;
:func:`ready` (called by :func:`symgrad.cli.main` once its own handler is in place)
restores Python's KeyboardInterrupt. A library user's process is never touched.

:func:`quietly` puts the quiet handler back, in the command only, while a framework
(PyTorch, JAX) loads and computes a reference. A KeyboardInterrupt raised while a
framework's C++ code is calling back into Python can abort the process (``terminate called
after throwing an instance of 'pybind11::error_already_set'``, killed by SIGABRT) or end
it by the signal after the one line; both were seen when interrupting ``verify`` while
PyTorch computed its reference.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

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


@contextlib.contextmanager
def quietly() -> Iterator[None]:
    """In the command: Ctrl-C inside this block ends the process at once, quietly.

    For blocks that write nothing (a framework's import and computation): the line is
    ``symgrad: interrupted`` and the exit code 130. Elsewhere (a library user's process,
    another thread, a handler of the user's own) the block changes nothing.
    """
    usable = is_command() and threading.current_thread() is threading.main_thread()
    if not usable or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    signal.signal(signal.SIGINT, _interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


quiet_until_ready()  # on import: the package imports this module before anything heavy


__all__ = [
    "EXIT_INTERRUPTED",
    "is_command",
    "quiet_until_ready",
    "quietly",
    "ready",
]
