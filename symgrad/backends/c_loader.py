"""Loading a generated C file from Python: compile with the system ``cc``, call through ctypes.

``load_c("net.c")`` compiles ``net.c`` (its ``net.h`` beside it) into a shared library in a
cache folder and returns an object with the NumPy module's interface: ``PARAM_NAMES``,
``PARAM_SHAPES``, ``INPUT_SIZE``, ``OUTPUT_SIZE``, ``init_params``, ``forward``, ``loss``
and ``loss_and_grads`` (dicts of arrays in, floats and dicts of arrays out), so that the
verification and the tests run against the C code unchanged. Everything the loader needs
to know (names, offsets, shapes, the precision, the workspace length) it reads from the
library itself.

ctypes, not cffi: it is in the standard library, needs no declarations parsed or a
second compilation step, and the functions take only pointers and sizes; a call costs a
few microseconds, which the benchmark reports separately from the C timings.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from symgrad.backends.c_names import prefix_of
from symgrad.errors import SpecError

#: Flags the loader compiles with (``cflags`` adds to them).
CFLAGS = ("-std=c99", "-O2", "-fPIC", "-shared")


class NoCompiler(SpecError):
    """No C compiler was found (``$CC``, else ``cc``)."""


def compiler() -> str | None:
    """The C compiler the loader uses: ``$CC``, else ``cc``; None when there is none."""
    return shutil.which(os.environ.get("CC", "cc"))


def compile_c(path: Path, cflags: tuple[str, ...] = (), libs: tuple[str, ...] = ()) -> Path:
    """The shared library of the C file ``path`` (cached by content and flags)."""
    cc = compiler()
    if cc is None:
        raise NoCompiler("no C compiler found (set CC or install cc) to load a C module")
    header = path.with_suffix(".h")
    key = hashlib.sha256()
    for part in (path.read_bytes(), header.read_bytes() if header.is_file() else b""):
        key.update(part)
    key.update(" ".join((cc, *CFLAGS, *cflags, *libs)).encode())
    cache = Path(tempfile.gettempdir()) / f"symgrad-c-{os.getuid() if hasattr(os, 'getuid') else 0}"
    cache.mkdir(mode=0o700, exist_ok=True)
    lib = cache / f"{path.stem}-{key.hexdigest()[:20]}.so"
    if lib.is_file():
        return lib
    tmp = lib.with_suffix(f".{os.getpid()}.tmp")
    cmd = [cc, *CFLAGS, *cflags, f"-I{path.parent}", str(path), "-o", str(tmp), *libs, "-lm"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
    if res.returncode != 0:
        first = (res.stderr.strip().splitlines() or ["(no message)"])[0]
        raise SpecError(f"cc could not compile it: {first}", file=str(path))
    tmp.replace(lib)
    return lib


_P = ctypes.c_void_p
_N = ctypes.c_size_t


class CModule:
    """A compiled generated C file with the NumPy module's interface."""

    def __init__(self, lib_path: Path, prefix: str) -> None:
        self.lib = lib = ctypes.CDLL(str(lib_path))
        self.prefix = prefix

        def sym(name: str) -> Any:
            return getattr(lib, f"{prefix}_{name}")

        size = ctypes.c_size_t.in_dll(lib, f"{prefix}_real_size").value
        self.dtype = np.dtype(np.float32 if size == 4 else np.float64)
        real = ctypes.c_float if size == 4 else ctypes.c_double
        self.INPUT_SIZE = ctypes.c_size_t.in_dll(lib, f"{prefix}_input_size").value
        self.OUTPUT_SIZE = ctypes.c_size_t.in_dll(lib, f"{prefix}_output_size").value
        in_ndim = ctypes.c_size_t.in_dll(lib, f"{prefix}_input_ndim").value
        dims = (ctypes.c_size_t * 4).in_dll(lib, f"{prefix}_input_shape")
        self.INPUT_SHAPE = tuple(int(dims[d]) for d in range(in_ndim))
        ws = sym("workspace_len")
        ws.argtypes, ws.restype = [_N], _N
        self._ws_len = ws
        count = ctypes.c_size_t.in_dll(lib, f"{prefix}_n_params").value
        names = (ctypes.c_char_p * max(count, 1)).in_dll(lib, f"{prefix}_param_names")
        offs = (ctypes.c_size_t * max(count, 1)).in_dll(lib, f"{prefix}_param_offsets")
        ndim = (ctypes.c_size_t * max(count, 1)).in_dll(lib, f"{prefix}_param_ndim")
        shp = ((ctypes.c_size_t * 4) * max(count, 1)).in_dll(lib, f"{prefix}_param_shapes")
        self.PARAM_NAMES: tuple[str, ...] = tuple(
            (names[k] or b"").decode("utf-8") for k in range(count)
        )
        self.PARAM_SHAPES: dict[str, tuple[int, ...]] = {
            nm: tuple(int(shp[k][d]) for d in range(ndim[k]))
            for k, nm in enumerate(self.PARAM_NAMES)
        }
        self._offsets = [int(offs[k]) for k in range(count)]
        self.param_count = sum(int(np.prod(s)) for s in self.PARAM_SHAPES.values())
        self._init = sym("init_params")
        self._init.argtypes, self._init.restype = [_P, ctypes.c_uint64], None
        self._forward = sym("forward")
        self._forward.argtypes, self._forward.restype = [_P, _P, _N, _P, _P], None
        self._lag = sym("loss_and_grads")
        self._lag.argtypes, self._lag.restype = [_P, _P, _P, _N, _P, _P], real
        # (name, first, last, shape) of each parameter in the flat arrays
        self._slots = [
            (nm, off, off + int(np.prod(self.PARAM_SHAPES[nm])), self.PARAM_SHAPES[nm])
            for nm, off in zip(self.PARAM_NAMES, self._offsets, strict=True)
        ]
        self._names = frozenset(self.PARAM_NAMES)
        self._flat = np.zeros(self.param_count, self.dtype)
        self._flat_at = self._flat.ctypes.data
        self._work = np.zeros(0, self.dtype)
        self._work_at = self._work.ctypes.data
        self._work_n = 0

    # -- packing ---------------------------------------------------------------------
    def _pack(self, params: dict[str, np.ndarray]) -> np.ndarray:
        if not isinstance(params, dict):
            raise TypeError(f"params must be a dict of arrays {self.PARAM_NAMES}")
        if params.keys() != self._names:
            raise ValueError(f"params has keys {sorted(params)}, expected {list(self.PARAM_NAMES)}")
        flat = self._flat
        for name, first, last, shape in self._slots:
            arr = params[name]
            if np.shape(arr) != shape:
                raise ValueError(f"params[{name!r}] has shape {np.shape(arr)}, expected {shape}")
            flat[first:last] = np.ravel(arr)
        if not np.isfinite(flat).all():
            raise ValueError("params contain inf or nan; every value must be finite")
        return flat

    def _unpack(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        return {name: flat[first:last].reshape(shape) for name, first, last, shape in self._slots}

    def _array(
        self, what: str, value: Any, dims: tuple[int, ...], n: int | None = None
    ) -> np.ndarray:
        arr = np.ascontiguousarray(value, dtype=self.dtype)
        if arr.shape[1:] != dims or arr.shape[0] < 1 or (n and arr.shape[0] != n):
            want = f"({n or 'n'}, {', '.join(map(str, dims))})"
            raise ValueError(f"{what} has shape {arr.shape}, expected {want} with n >= 1")
        if not np.isfinite(arr).all():
            raise ValueError(f"{what} contains inf or nan; every value must be finite")
        return arr

    def _workspace(self, n: int) -> int:
        """The address of a workspace for batches of ``n`` (grown when too small)."""
        if n > self._work_n:
            self._work = np.zeros(max(int(self._ws_len(n)), 1), self.dtype)
            self._work_at, self._work_n = self._work.ctypes.data, n
        return self._work_at

    # -- the module interface -----------------------------------------------------------
    def init_params(self, seed: int = 0, dtype: Any = None) -> dict[str, np.ndarray]:
        """Parameters from the C file's deterministic initialisation (seed: 64 bits)."""
        flat = np.zeros(self.param_count, self.dtype)
        self._init(flat.ctypes.data, int(seed) % 2**64)
        out = self._unpack(flat)
        return {k: v.astype(dtype or self.dtype) for k, v in out.items()}

    def forward(self, params: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
        X = self._array("X", X, self.INPUT_SHAPE)
        n = X.shape[0]
        out = np.empty((n, self.OUTPUT_SIZE), self.dtype)
        self._pack(params)
        self._forward(self._flat_at, X.ctypes.data, n, out.ctypes.data, self._workspace(n))
        return out

    def loss_and_grads(
        self, params: dict[str, np.ndarray], X: np.ndarray, Y: np.ndarray, grads: bool = True
    ) -> tuple[float, dict[str, np.ndarray]]:
        self._pack(params)
        X = self._array("X", X, self.INPUT_SHAPE)
        n = X.shape[0]
        Y = self._array("Y", Y, (self.OUTPUT_SIZE,), n)
        g = np.empty(self.param_count, self.dtype) if grads else None
        gp = g.ctypes.data if g is not None else None
        ws = self._workspace(n)
        value = float(self._lag(self._flat_at, X.ctypes.data, Y.ctypes.data, n, gp, ws))
        return value, (self._unpack(g) if g is not None else {})

    def loss(self, params: dict[str, np.ndarray], X: np.ndarray, Y: np.ndarray) -> float:
        return self.loss_and_grads(params, X, Y, grads=False)[0]


def load_c(
    path: str | os.PathLike[str],
    *,
    prefix: str | None = None,
    cflags: tuple[str, ...] = (),
    libs: tuple[str, ...] = (),
) -> CModule:
    """Compile the generated C file ``path`` with the system ``cc`` and load it.

    Args:
        path: the ``.c`` file ``symgrad codegen --target c`` wrote (its ``.h`` beside it).
        prefix: the prefix of its functions (default: the file's stem, as codegen names them).
        cflags: extra compiler flags (``-O3``, ``-march=native``, ``-DNET_USE_CBLAS``).
        libs: extra libraries to link (``-lopenblas``).
    """
    p = Path(path)
    if not p.is_file():
        raise SpecError("no such file", file=str(p))
    return CModule(compile_c(p, tuple(cflags), tuple(libs)), prefix or prefix_of(str(p)))


__all__ = ["CModule", "NoCompiler", "compile_c", "compiler", "load_c"]
