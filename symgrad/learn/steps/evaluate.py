"""Running a parsed steps file on arrays (a small evaluator, never ``eval``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from symgrad.errors import SpecError
from symgrad.learn.steps.ops import (
    BARE,
    CALLS,
    CONV_HELPER_NAMES,
    NP_BINARY,
    NP_UNARY,
    REDUCERS,
    _Shape,
)
from symgrad.learn.steps.parse import LearnerLine
from symgrad.templating import conv_helpers

MAX_ELEMENTS = 10_000_000  # the largest array a file's call may make
MAX_TOTAL = 40_000_000  # all arrays one run of a file may make together (320 MB)
SPENT = " spent"  # the key of the running total in an environment (never a name)


def _eval(e: tuple, env: Mapping[str, Any]) -> Any:
    kind = e[0]
    if kind == "num":
        return e[1]
    if kind == "str":
        return e[1]
    if kind == "bool":
        return e[1]
    if kind == "const":
        return np.inf
    if kind == "tuple":
        return tuple(_intish(_eval(c, env)) for c in e[1])
    if kind == "call":
        fn = conv_helpers()[e[1]] if e[1] in CONV_HELPER_NAMES else CALLS[e[1]]
        args = [_intish(_eval(a, env)) for a in e[2]]
        kwargs = {k: _intish(_eval(v, env)) for k, v in e[3].items()}
        _check_size(e[1], args, env)
        try:
            out = fn(*args, **kwargs)
        except TypeError:
            raise _Shape(f"{e[1]}() does not take these arguments") from None
        if np.size(out) > MAX_ELEMENTS:
            raise _Shape(f"{e[1]}() gives {np.size(out)} elements (at most {MAX_ELEMENTS})")
        return out
    if kind == "index":
        return np.asarray(_eval(e[1], env))[tuple(_subscript(i, env) for i in e[2])]
    if kind == "attr":
        v = _eval(e[2], env)
        return int(np.size(v)) if e[1] == "size" else int(np.ndim(v))
    if kind == "shapeall":
        return tuple(np.shape(_eval(e[1], env)))
    if kind == "helper":
        params, body = env[e[1]][1], env[e[1]][2]
        bound = {p: _eval(a, env) for p, a in zip(params, e[2], strict=True)}
        return _eval(body, {**env, **bound})
    if kind == "name":
        if e[1] not in env:
            raise KeyError(e[1])
        return env[e[1]]
    if kind == "neg":
        return -_eval(e[1], env)
    if kind == "T":
        return np.asarray(_eval(e[1], env)).T
    if kind == "shape":
        shape = np.shape(_eval(e[1], env))
        if e[2] >= len(shape):
            raise _Shape(f"shape[{e[2]}] of an array with {len(shape)} axes")
        return shape[e[2]]
    if kind == "bare":
        v = _eval(e[2], env)
        if e[1] == "len":
            return len(v) if np.ndim(v) else 1
        return BARE[e[1]](np.asarray(v, dtype=float))
    if kind == "reduce":
        v = np.asarray(_eval(e[2], env), dtype=float)
        axis, keep = e[3].get("axis"), e[3].get("keepdims", False)
        if isinstance(axis, int) and not -v.ndim <= axis < v.ndim:
            raise _Shape(f"axis={axis} on an array with {v.ndim} axes")
        if isinstance(axis, tuple) and not all(-v.ndim <= a < v.ndim for a in axis):
            raise _Shape(f"axis={axis} on an array with {v.ndim} axes")
        red = REDUCERS[e[1]]
        return red(v, axis=axis, keepdims=keep)
    if kind == "np":
        args = [np.asarray(_eval(a, env), dtype=float) for a in e[2]]
        if e[1] in NP_UNARY:
            return NP_UNARY[e[1]](args[0])
        if e[1] == "where":
            return np.where(args[0] != 0, args[1], args[2])
        if e[1] in ("outer",) and (args[0].ndim > 1 or args[1].ndim > 1):
            raise _Shape("np.outer needs vectors")
        return _binary_np(e[1], args[0], args[1])
    op, a, b = e[1], _eval(e[2], env), _eval(e[3], env)
    return _binary(op, a, b)


class BudgetError(SpecError):
    """The file would make more or larger arrays than the grading budget allows."""


def _spend(env: dict[str, Any], value: Any) -> None:
    """Count ``value`` against the budget of everything one run of the file allocates."""
    spent = int(env.get(SPENT, 0)) + int(np.size(value))
    if spent > MAX_TOTAL:
        raise BudgetError(
            f"the file's arrays would hold more than {MAX_TOTAL} numbers in all "
            f"(the budget for grading one file; {spent} so far)"
        )
    env[SPENT] = spent


def _check_size(fn: str, args: list[Any], env: Mapping[str, Any]) -> None:
    """Refuse, before computing it, work or an array a file would make unreasonably large."""
    n = 0
    if fn == "repeat" and len(args) > 1:
        n = int(np.size(args[0])) * int(np.max(np.abs(np.asarray(args[1], dtype=float)), initial=1))
    elif fn == "pad" and len(args) > 1:
        grow = 1 + int(np.sum(np.abs(np.asarray(args[1], dtype=float))))
        n = int(np.size(args[0])) * grow * grow
    elif fn == "broadcast_to" and len(args) > 1:
        n = int(np.prod(np.asarray(args[1], dtype=float)))
    elif fn == "tensordot" and len(args) > 1:
        n = int(np.size(args[0])) * int(np.size(args[1]))
    elif fn == "einsum" and args and isinstance(args[0], str) and "." not in args[0]:
        dims: dict[str, int] = {}  # the work: one loop over every distinct index
        for sub, op in zip(args[0].split("->")[0].split(","), args[1:], strict=False):
            for letter, size in zip(sub, np.shape(op), strict=False):
                dims[letter] = max(dims.get(letter, 1), int(size))
        n = int(np.prod(list(dims.values()), dtype=float)) // 10
    if n > MAX_ELEMENTS:
        raise _Shape(f"{fn}() would make more than {MAX_ELEMENTS} elements")
    if n + int(env.get(SPENT, 0)) > MAX_TOTAL:
        raise BudgetError(
            f"{fn}() would take the file's arrays past {MAX_TOTAL} numbers in all "
            "(the budget for grading one file)"
        )


def _intish(v: Any) -> Any:
    """Numbers are read as floats; a whole one is an int where a shape, axis or size is."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, tuple):
        return tuple(_intish(c) for c in v)
    return v


def _subscript(item: tuple, env: Mapping[str, Any]) -> Any:
    if item[0] == "none":
        return None
    if item[0] == "ellipsis":
        return Ellipsis
    if item[0] == "at":
        v = _eval(item[1], env)
        if np.ndim(v):  # fancy indexing: logprobs[range(n), Yb], np.eye(k)[labels]
            a = np.asarray(v)
            if a.dtype.kind == "f" and not np.all(a == np.round(a)):
                raise _Shape("an index array must hold integers")
            return a.astype(np.int64)
        return _index_int(v)
    return slice(*[None if p is None else _index_int(_eval(p, env)) for p in item[1:]])


def _index_int(v: Any) -> int:
    if np.ndim(v) or float(v) != int(v):
        raise _Shape(f"an index must be an integer, got {v!r}")
    return int(v)


def _shape_text(v: Any) -> str:
    s = np.shape(v)
    return "a number" if not s else str(tuple(s))


def _binary_np(fn: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    try:
        return NP_BINARY[fn](a, b)
    except ValueError:
        raise _Shape(f"np.{fn} of {_shape_text(a)} and {_shape_text(b)}") from None


def _binary(op: str, a: Any, b: Any) -> Any:
    try:
        if op == "@":
            if np.ndim(a) == 0 or np.ndim(b) == 0:
                raise _Shape("@ needs arrays, not numbers (use *)")
            return np.asarray(a) @ np.asarray(b)
        if op in (">", "<", ">=", "<=", "=="):
            fns = {">": np.greater, "<": np.less, ">=": np.greater_equal}
            fns.update({"<=": np.less_equal, "==": np.equal})
            return fns[op](a, b).astype(float)
        if np.ndim(a) and np.ndim(b) and np.shape(a) != np.shape(b):
            # NumPy would broadcast; a (N, 4) * (4,) row is fine, (N, 4) * (N, 2) is not
            np.broadcast_shapes(np.shape(a), np.shape(b))
        fn = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "**": np.power}
        return fn[op](a, b)
    except ValueError:
        what = {"@": "matrix product"}.get(op, f"'{op}'")
        raise _Shape(
            f"{what} of {_shape_text(a)} and {_shape_text(b)}: shapes do not fit"
        ) from None


def _run(stmts: list[LearnerLine], env: dict[str, Any]) -> Any:
    """Run statements in ``env``; returns the last target's value.

    Raises:
        KeyError: a name that is not defined.
        _Shape: anything else NumPy objects to (shapes, types): the learner's mistake.
        BudgetError: the file's arrays grow past the budget.
    """
    with np.errstate(all="ignore"):
        for s in stmts:
            if s.op == "def":  # a helper: its parameters and body, called by name
                env[s.target] = s.expr
                continue
            try:
                value = _value(s, env)
            except (KeyError, _Shape, BudgetError):
                raise
            except (ValueError, IndexError, ArithmeticError) as exc:
                reason = " ".join(str(exc).split())[:120] or type(exc).__name__
                raise _Shape(f"line {s.line}: {reason}") from None
            _spend(env, value)
            env[s.target] = value
    return env[stmts[-1].target]


def _value(s: LearnerLine, env: dict[str, Any]) -> Any:
    """The new value of ``s.target`` after statement ``s``."""
    value = _eval(s.expr, env)
    if s.index is None:
        return value if s.op == "=" else _binary(s.op[0], env[s.target], value)
    if s.target not in env:
        raise KeyError(s.target)
    whole = np.array(env[s.target], dtype=float)  # a copy: earlier values stay as they were
    at = tuple(_subscript(i, env) for i in s.index)
    whole[at] = value if s.op == "=" else _binary(s.op[0], whole[at], value)
    return whole
