"""Running the module under test: in a child process of its own, with a time limit.

A module given to ``verify`` is the user's code: it may exit, hang, fork, start programs,
print, or return objects that are not data. :class:`ModuleProcess` imports it in a child
process (in a new session and process group, made the reaper of every orphan it leaves)
and calls it over a pipe; everything the child or the module started is killed when the
verification ends, passed or failed. Every misbehaviour is a :class:`ModuleError` with a
one-line message.

This file imports nothing from symgrad: the child loads it by its path, so that starting
it costs a Python and a NumPy import, not symgrad's.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

#: The names a module must define (the module contract).
API = ("PARAM_NAMES", "PARAM_SHAPES", "init_params", "forward", "loss", "loss_and_grads")
#: Default wall-clock limit (seconds) for everything a module does under verify.
DEFAULT_TIMEOUT = 60.0
#: Environment variable marking every process started for one verification.
TOKEN_VARIABLE = "SYMGRAD_VERIFY_RUN"
_OPAQUE = "__symgrad_opaque__"


class ModuleError(Exception):
    """The module under test raised, or its process ended or timed out."""


class ModuleResourceError(ModuleError):
    """The module ran out of memory or time: a resource failure, not a wrong gradient."""


class ModuleTimeout(ModuleResourceError):
    """The module did not finish within the time limit."""


@dataclass(frozen=True)
class Opaque:
    """A value the module returned that is not plain data (shown by its type name)."""

    type_name: str

    def __repr__(self) -> str:
        return f"<{self.type_name} object>"


def load_module_file(path: str | Path) -> ModuleType:
    """Import the Python file at ``path`` as a fresh module (never cached in sys.modules)."""
    p = Path(path)
    name = f"symgrad_verify_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path} as a Python module")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses & co. look themselves up here while executing
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop(name, None)
    return mod


def describe_exc(exc: BaseException) -> str:
    """``Type: message`` on one line (``SystemExit(code)`` for an exit)."""
    text = " ".join(str(exc).split())
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def plain(value: object, depth: int = 0) -> object:
    """``value`` reduced to plain data (numbers, str, arrays of numbers, dicts, lists,
    tuples) before it leaves the child: the parent never unpickles the module's objects."""
    if depth > 8:
        return (_OPAQUE, type(value).__name__)
    if value is None or isinstance(value, bool | int | float | complex | str):
        return value
    if isinstance(value, np.generic):
        return value.item() if value.dtype.kind in "biufc" else (_OPAQUE, type(value).__name__)
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biufc":
            return np.array(value)
        return (_OPAQUE, f"ndarray of {value.dtype}")
    if isinstance(value, dict):
        return {plain(k, depth + 1): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(plain(v, depth + 1) for v in value)
    return (_OPAQUE, type(value).__name__)


def restore(value: object) -> object:
    """The parent's side of :func:`plain`: opaque markers become :class:`Opaque` values."""
    if isinstance(value, tuple):
        if len(value) == 2 and isinstance(value[0], str) and value[0] == _OPAQUE:
            return Opaque(value[1])
        return tuple(restore(v) for v in value)
    if isinstance(value, list):
        return [restore(v) for v in value]
    if isinstance(value, dict):
        return {restore(k): restore(v) for k, v in value.items()}
    return value


def copies(args: tuple) -> tuple:
    """Copies of the array arguments (dicts of arrays too); other arguments as they are."""
    return tuple(
        {k: np.array(v, copy=True) for k, v in a.items()}
        if isinstance(a, dict)
        else np.array(a, copy=True)
        if isinstance(a, np.ndarray)
        else a
        for a in args
    )


def changed(args: tuple, before: tuple) -> list[str]:
    """The names of the arguments (or parameters) that differ from their copies."""
    out: list[str] = []
    for nm, a, c in zip(("params", "X", "Y"), args, before, strict=False):
        if isinstance(a, dict):
            out += [k for k in a if not np.array_equal(a[k], c.get(k))]
        elif isinstance(a, np.ndarray) and not np.array_equal(a, c):
            out.append(nm)
    return out


def _become_reaper() -> None:
    """Make this process the parent of every orphan among its descendants (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG: die with verify


class Arrays:
    """The array library a module works in: NumPy, or torch, JAX or CuPy for a module
    whose ``init_params`` returns that library's arrays (a generated torch, JAX or CuPy
    module). Arguments go to the module in its library (same dtype, on the CPU for torch
    and JAX) and results come back as NumPy arrays; verify itself sees NumPy only."""

    def __init__(self, lib: str = "numpy") -> None:
        self.lib = lib

    @staticmethod
    def of_module(mod: ModuleType) -> str | None:
        """The library the module imports at its top level (torch, jax, cupy), if one."""
        names = {
            getattr(v, "__name__", "") for v in vars(mod).values() if isinstance(v, ModuleType)
        }
        return next((lib for lib in ("torch", "jax", "cupy") if lib in names), None)

    def float64(self) -> object:
        if self.lib == "torch":
            import torch

            return torch.float64
        if self.lib == "jax":
            import jax

            jax.config.update("jax_enable_x64", True)  # float64 checks need 64-bit JAX
            import jax.numpy as jnp

            return jnp.float64
        return np.float64

    def to_lib_args(self, args: tuple) -> tuple:
        """A call's arguments in the module's library."""
        return tuple(self.to_lib(a) for a in args)

    def to_lib(self, value: object) -> object:
        if self.lib == "numpy":
            return value
        if isinstance(value, dict):
            return {k: self.to_lib(v) for k, v in value.items()}
        if isinstance(value, tuple):
            return tuple(self.to_lib(v) for v in value)
        if not isinstance(value, np.ndarray):
            return value
        if self.lib == "torch":
            import torch

            return torch.from_numpy(np.array(value, copy=True))
        if self.lib == "jax":
            import jax.numpy as jnp

            return jnp.asarray(value)
        import cupy

        return cupy.asarray(value)

    def to_numpy(self, value: object, depth: int = 0) -> object:
        if self.lib == "numpy" or depth > 8:
            return value
        if isinstance(value, dict):
            return {k: self.to_numpy(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.to_numpy(v, depth + 1) for v in value)
        kind = type(value).__module__.split(".")[0]
        if kind == "torch" and hasattr(value, "detach"):
            return value.detach().cpu().numpy()
        if kind in ("jax", "jaxlib"):
            return np.asarray(value)
        if kind == "cupy" and hasattr(value, "get"):
            return value.get()
        return value

    def is_lib_array(self, value: object) -> bool:
        """Whether ``value`` (a dict's values) holds this library's arrays."""
        if isinstance(value, dict):
            return any(self.is_lib_array(v) for v in value.values())
        kind = type(value).__module__.split(".")[0]
        return kind in {"torch": ("torch",), "jax": ("jax", "jaxlib"), "cupy": ("cupy",)}.get(
            self.lib, ()
        )


#: The child's array library (chosen by the module's first ``init_params``).
_ARRAYS = {"arrays": Arrays()}


def _init_params(mod: ModuleType, args: tuple) -> object:
    """``init_params(seed, float64)``: a torch, JAX or CuPy module is asked with its own
    library's float64 where NumPy's is refused, and answers in that library."""
    lib = Arrays.of_module(mod)
    if lib == "jax":
        Arrays(lib).float64()  # 64-bit JAX before the module makes any array
    try:
        result = mod.init_params(*args)
    except Exception:
        if lib is None:
            raise
        theirs = Arrays(lib)
        result = mod.init_params(args[0], theirs.float64(), *args[2:])
    if lib is not None and Arrays(lib).is_lib_array(result):
        _ARRAYS["arrays"] = Arrays(lib)
    return _ARRAYS["arrays"].to_numpy(result)


def _answer(conn, mod: ModuleType, request: tuple) -> tuple:
    kind, name, args = request
    arrays = _ARRAYS["arrays"]
    if kind == "losses":  # finite differences: many loss values in one request
        params, X, Y, moves = args
        values = []
        for pname, flat, delta in moves:
            trial = dict(params)
            arr = params[pname].copy()
            arr.reshape(-1)[flat] += delta
            trial[pname] = arr
            call = arrays.to_lib_args((trial, X.copy(), Y.copy()))
            values.append(plain(arrays.to_numpy(mod.loss(*call))))
        return ("ok", values, [])
    if name == "init_params":
        return ("ok", plain(_init_params(mod, args)), [])
    before = copies(args)
    call = arrays.to_lib_args(args)
    result = getattr(mod, name)(*call)
    after = tuple(arrays.to_numpy(a) for a in call)
    return ("ok", plain(arrays.to_numpy(result)), changed(after, before))


def serve(path: str, fd: int) -> None:
    """The child: import the module, then answer calls over the connection ``fd``.

    Replies are ``("ok", plain value, modified inputs)`` or ``("raise", description)``;
    every exception of the module, SystemExit and KeyboardInterrupt included, is a reply.
    A copy of this process made by a ``fork`` in the module never answers: it exits.
    """
    from multiprocessing.connection import Connection

    me = os.getpid()
    _become_reaper()
    conn = Connection(fd)
    try:
        mod = load_module_file(path)
    except BaseException as exc:  # noqa: BLE001 - SystemExit at import is a result too
        if os.getpid() != me:
            os._exit(0)
        conn.send(("raise", describe_exc(exc)))
        return
    if os.getpid() != me:
        os._exit(0)
    attrs = {k: plain(getattr(mod, k)) for k in API if hasattr(mod, k) and k[0].isupper()}
    funcs = [k for k in API if hasattr(mod, k) and callable(getattr(mod, k))]
    conn.send(("ok", (attrs, funcs), []))
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        try:
            reply = _answer(conn, mod, request)
        except BaseException as exc:  # noqa: BLE001 - sys.exit() in the module is a failure
            reply = ("raise", describe_exc(exc))
        if os.getpid() != me:
            os._exit(0)
        conn.send(reply)


_CHILD = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('symgrad_module_server', sys.argv[1])\n"
    "m = importlib.util.module_from_spec(spec)\n"
    "sys.modules[spec.name] = m\n"
    "spec.loader.exec_module(m)\n"
    "m.serve(sys.argv[2], int(sys.argv[3]))\n"
)


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, session id) of every process (Linux /proc; empty elsewhere)."""
    table: dict[int, tuple[int, int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    stat = fh.read().decode("ascii", "replace")
                fields = stat[stat.rindex(")") + 2 :].split()
                table[int(entry)] = (int(fields[1]), int(fields[3]))
    return table


def _marked(pid: int, token: str) -> bool:
    """Whether process ``pid`` carries this verification's token in its environment."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return f"{TOKEN_VARIABLE}={token}".encode() in fh.read().split(b"\0")
    except OSError:
        return False


def descendants(root: int, token: str | None = None) -> set[int]:
    """Every process below ``root``, in its session, or marked with ``token``."""
    table = _process_table()
    found: set[int] = set()
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        for child, (ppid, _) in table.items():
            if ppid == pid and child not in found:
                found.add(child)
                frontier.append(child)
    found |= {pid for pid, (_, sid) in table.items() if sid == root}
    if token is not None:
        me = os.getpid()
        found |= {pid for pid in table if pid not in (me, root) and _marked(pid, token)}
    found.discard(os.getpid())
    return found


def kill_tree(root: int, token: str | None = None, rounds: int = 20) -> None:
    """Stop, then kill ``root``'s descendants (orphans included: ``root`` reaps them),
    its session and process group, every process carrying ``token``, then ``root``."""
    for _ in range(rounds):
        pids = descendants(root, token)
        if not pids:
            break
        for pid in pids:  # stopped first: a process forking in a loop cannot outrun us
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGSTOP)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    with contextlib.suppress(OSError):
        os.killpg(root, signal.SIGKILL)


class ModuleProcess:
    """A user's module imported in a child process, called over a pipe, with a time limit.

    The module can end its process (``sys.exit``, ``os._exit``), hang or return garbage:
    each is a :class:`ModuleError` with a one-line message, never a false pass. The
    attributes (``PARAM_NAMES`` ...) are copies of plain data; the functions are proxies.
    The child runs in a new session (its own process group); :meth:`close` kills it and
    every process it or the module started.
    """

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT):
        from multiprocessing.connection import Connection

        self.path = path
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.dead: str | None = None
        self.calls = 0
        self.last_changed: list[str] = []
        self.token = uuid.uuid4().hex
        parent, child = socket.socketpair()
        env = {**os.environ, TOKEN_VARIABLE: self.token}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, __file__, path, str(child.fileno())],
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
            # A module may print or warn: none of it may reach the report.
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        child.close()
        self.conn = Connection(parent.detach())
        self.attrs: dict[str, object] = {}
        self.funcs: list[str] = []
        loaded = self._receive("import")
        self.attrs, self.funcs = loaded  # type: ignore[misc]

    def _remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _receive(self, what: str) -> object:
        if self.dead:
            raise ModuleError(self.dead)
        left = self._remaining()
        try:
            ready = left > 0 and self.conn.poll(left)
            reply = self.conn.recv() if ready else None
        except (EOFError, OSError):
            reply = None
            ready = True
        if reply is None:
            self.close()
            if not ready:
                self.dead = f"{what} did not finish within the time limit ({self.timeout:g} s)"
                raise ModuleTimeout(self.dead)
            code = self.proc.returncode
            how = f"exit code {code}" if code is not None and code >= 0 else f"signal {-code}"
            self.dead = f"{what} ended the module's process ({how})"
            raise ModuleError(self.dead)
        if reply[0] == "raise":
            kind = ModuleResourceError if str(reply[1]).startswith("MemoryError") else ModuleError
            raise kind(f"{what} raised {reply[1]}")
        self.last_changed = reply[2]
        return restore(reply[1])

    def call(self, name: str, *args: object) -> object:
        """``module.name(*args)`` in the child; inputs it modified are in ``last_changed``."""
        if self.dead:
            raise ModuleError(self.dead)
        self.calls += 1
        with contextlib.suppress(OSError):  # a dead child: _receive says how it ended
            self.conn.send(("call", name, args))
        return self._receive(name)

    def losses(self, params, X, Y, moves) -> list[object]:
        """``module.loss`` at ``params`` with each ``(name, flat index, delta)`` applied."""
        if self.dead:
            raise ModuleError(self.dead)
        with contextlib.suppress(OSError):  # a dead child: _receive says how it ended
            self.conn.send(("losses", "loss", (params, X, Y, moves)))
        return self._receive("loss")  # type: ignore[return-value]

    def close(self) -> None:
        """Kill the child (it may be hanging) and everything it started; release the pipe."""
        kill_tree(self.proc.pid, self.token)
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        kill_tree(self.proc.pid, self.token, rounds=3)  # whatever the reaper left behind
        with contextlib.suppress(OSError):
            self.conn.close()

    def __enter__(self) -> ModuleProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Expired(BaseException):
    """The time limit of a :class:`LocalModule` call (not an Exception: never caught)."""


class LocalModule:
    """symgrad's own generated module, called in-process (same interface as ModuleProcess).

    Trusted code (it starts no process), so it runs here, without a child's start-up cost;
    ``timeout`` still bounds every call (a real-time timer; main thread only).
    """

    def __init__(self, mod: ModuleType, timeout: float | None = None):
        self.mod = mod
        self.attrs = {k: getattr(mod, k) for k in API if hasattr(mod, k) and k[0].isupper()}
        self.funcs = [k for k in API if callable(getattr(mod, k, None))]
        self.last_changed: list[str] = []
        self.dead: str | None = None
        self.calls = 0
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def _limited(self, name: str, args: tuple) -> object:
        import threading

        fn = getattr(self.mod, name)
        if self.deadline is None or threading.current_thread() is not threading.main_thread():
            return fn(*args)
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Expired

        def expired(signum: int, frame: object) -> None:
            raise _Expired

        old = signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, left)
        try:
            return fn(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)

    def call(self, name: str, *args: object) -> object:
        if self.dead:
            raise ModuleError(self.dead)
        self.calls += 1
        mine = copies(args)
        try:
            out = self._limited(name, mine)
        except _Expired:
            self.dead = f"{name} did not finish within the time limit ({self.timeout:g} s)"
            raise ModuleTimeout(self.dead) from None
        except MemoryError as exc:
            raise ModuleResourceError(f"{name} raised {describe_exc(exc)}") from None
        except Exception as exc:
            raise ModuleError(f"{name} raised {describe_exc(exc)}") from None
        self.last_changed = changed(mine, args)
        return out

    def losses(self, params, X, Y, moves) -> list[object]:
        out: list[object] = []
        for pname, flat, delta in moves:
            trial = dict(params)
            arr = params[pname].copy()
            arr.reshape(-1)[flat] += delta
            trial[pname] = arr
            out.append(self.call("loss", trial, X, Y))
        return out

    def close(self) -> None:
        pass


__all__ = [
    "API",
    "DEFAULT_TIMEOUT",
    "LocalModule",
    "ModuleError",
    "ModuleProcess",
    "ModuleResourceError",
    "ModuleTimeout",
    "Opaque",
    "describe_exc",
    "kill_tree",
    "load_module_file",
    "serve",
]
