"""Printing a parsed steps-file tree back as NumPy text."""

from __future__ import annotations

from collections.abc import Callable


def unparse(e: tuple) -> str:
    """The tree as NumPy text (parenthesised where Python needs it)."""
    prec = {"**": 4, "*": 3, "/": 3, "@": 3, "+": 2, "-": 2, ">": 1, "<": 1, ">=": 1}
    prec.update({"<=": 1, "==": 1})

    def go(x: tuple, ctx: int = 0) -> str:
        kind = x[0]
        if kind == "num":
            v = x[1]
            return str(int(v)) if v == int(v) and abs(v) < 1e15 else repr(v)
        if kind == "name":
            return x[1]
        if kind == "neg":
            s = "-" + go(x[1], 3)
            return f"({s})" if ctx > 3 else s
        if kind == "T":
            return go(x[1], 5) + ".T"
        if kind == "shape":
            return f"{go(x[1], 5)}.shape[{x[2]}]"
        if kind == "bare":
            return f"{x[1]}({go(x[2])})"
        if kind == "helper":
            return f"{x[1]}({', '.join(go(a) for a in x[2])})"
        if kind == "shapeall":
            return f"{go(x[1], 5)}.shape"
        if kind == "attr":
            return f"{go(x[2], 5)}.{x[1]}"
        if kind == "reduce":
            kw = ", ".join(f"{k}={v}" for k, v in x[3].items())
            return f"{go(x[2], 5)}.{x[1]}({kw})"
        if kind == "np":
            return f"np.{x[1]}({', '.join(go(a) for a in x[2])})"
        if kind == "str":
            return f'"{x[1]}"'
        if kind == "bool":
            return str(x[1])
        if kind == "const":
            return x[1]
        if kind == "tuple":
            inner = ", ".join(go(c) for c in x[1])
            return f"({inner},)" if len(x[1]) == 1 else f"({inner})"
        if kind == "call":
            kws = [f"{k}={go(v)}" for k, v in x[3].items()]
            if x[4] == "method":
                rest = ", ".join([go(a) for a in x[2][1:]] + kws)
                return f"{go(x[2][0], 5)}.{x[1]}({rest})"
            return f"{x[4]}{x[1]}({', '.join([go(a) for a in x[2]] + kws)})"
        if kind == "index":
            return f"{go(x[1], 5)}[{', '.join(_unparse_item(i, go) for i in x[2])}]"
        p = prec[x[1]]
        right_ctx = p + 1 if x[1] != "**" else p
        s = f"{go(x[2], p if x[1] != '**' else p + 1)} {x[1]} {go(x[3], right_ctx)}"
        return f"({s})" if p < ctx else s

    return go(e)


def _unparse_item(item: tuple, go: Callable[[tuple], str]) -> str:
    if item[0] == "none":
        return "None"
    if item[0] == "ellipsis":
        return "..."
    if item[0] == "at":
        return go(item[1])
    a, b, c = ("" if p is None else go(p) for p in item[1:])
    return f"{a}:{b}" + (f":{c}" if c else "")
