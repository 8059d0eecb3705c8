"""Stage 6 (print), C target, emit: the printed program -> ``net.c`` and ``net.h`` (C99, no malloc).

The statements are those of every other target: ``codegen._Printer.program`` runs the
same common-subexpression elimination over the same lowered program
(``pipeline.lower``, ``calculus/lower.py``); here each statement keeps its SymPy expression, which
``c_nodes.StatementLowerer`` lowers to loops. This module lays out the buffers (the
parameters and gradients as one flat array each, the temporaries in the caller's
workspace), builds the three functions' bodies and renders ``templates/c/net.c.j2`` and
``templates/c/net.h.j2``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import sympy as sp

from symgrad._version import __version__
from symgrad.backends.c_lower import Buf, Shape, dim
from symgrad.backends.c_names import c_comment, c_names, c_paths, c_string, prefix_of
from symgrad.backends.c_nodes import NREAL, StatementLowerer
from symgrad.backends.c_printer import SymgradCPrinter
from symgrad.backends.codegen import OPTIMIZERS, Statement, _Printer
from symgrad.backends.target import NUMPY
from symgrad.calculus.conv_form import Windows
from symgrad.calculus.layout import N
from symgrad.calculus.reverse import Derivation
from symgrad.derivations import lower
from symgrad.errors import SpecError
from symgrad.files import atomic_write, check_writable, marker_line
from symgrad.ir.network import Network
from symgrad.templating import environment

DTYPES = {"float64": "double", "float32": "float"}


@dataclass(frozen=True)
class CStatement:
    """One statement of the program with its (CSE-reduced) expression."""

    target: str
    expr: sp.Expr
    comment: tuple[str, ...]
    shape: Shape | None = None  # the full shape it is broadcast to, where widened


class _ExprPrinter(_Printer):
    """The shared program printer, keeping each statement's expression (no line splits:
    C has no line length to keep)."""

    def __init__(self, net: Network) -> None:
        super().__init__(net, NUMPY, inplace=False)
        self.exprs: list[sp.Expr] = []

    def _split(self, target: str, expr: sp.Expr, comment: tuple[str, ...]) -> list[Statement]:
        self.exprs.append(expr)
        return [Statement(target, "", comment)]


def _widened(text: str | None) -> Shape | None:
    """A widening shape written as shape code (``(X.shape[0], 5)``) as dimensions."""
    if text is None:
        return None
    return tuple(
        N if t.startswith("X") else sp.Integer(t) for t in re.findall(r"X\.shape\[0\]|\d+", text)
    )


@dataclass
class CProgram:
    """The statements by section, the loss expression and the network."""

    net: Network
    forward: list[CStatement]
    loss: list[CStatement]
    backward: list[CStatement]
    total: sp.Expr


def c_program(d: Derivation | Network) -> CProgram:
    prog = lower(d)
    net = prog.derivation.network
    pr = _ExprPrinter(net)
    blocks = pr.program(prog)
    exprs = iter(pr.exprs)
    out: dict[str, list[CStatement]] = {"forward": [], "loss": [], "backward": []}
    # A convolution's windows are a way of reading its input, not an array: a temporary
    # the elimination made of them is put back into the statements that read it.
    views: dict[sp.Symbol, sp.Expr] = {}
    for it, block in zip(prog.items, blocks, strict=True):
        for k, st in enumerate(block):
            expr = next(exprs).xreplace(views)
            if isinstance(expr, Windows):
                views[sp.Symbol(st.target)] = expr
                continue
            shape = _widened(it.widen) if k == len(block) - 1 else None
            out[it.section].append(CStatement(st.target, expr, st.comment, shape))
    total = prog.total_code
    return CProgram(net, out["forward"], out["loss"], out["backward"], total)


@dataclass
class Function:
    """One generated C function's body, built statement by statement."""

    lw: StatementLowerer
    named: list[Buf] = field(default_factory=list)
    scratch: dict[int, sp.Expr] = field(default_factory=dict)  # N-degree -> coefficient
    uses_scratch: bool = False

    def statement(self, st: CStatement, names: dict[str, str], grads: dict[str, Buf]) -> None:
        lw = self.lw
        for line in st.comment:
            lw.emit([f"/* {c_comment(line)} */"])
        cname = names[st.target]
        shape = st.shape if st.shape is not None else self.dry_shape(st.expr)
        start = len(lw.aux)
        if st.target in grads:
            dest = grads[st.target]
        elif cname == "out":
            dest = Buf("out", shape, "out")
        elif not shape:
            dest = Buf(cname, (), "local")
            lw.emit([f"{lw.real} {cname};"])
        else:
            dest = Buf(cname, shape, "ws")
            self.named.append(dest)
        lw.taken.add(dest.name)
        lw.dest = dest if dest.kind != "local" else None
        mark = len(lw.lines)
        val = lw.lower(st.expr)
        lw.dest = None
        lw.used.add(dest.name)
        lw.assign(dest, val)
        lw.vars[st.target] = dest
        # this statement's scratch buffers share one region (dead after the statement);
        # declared in a block of their own, so that they may be restrict pointers
        offset = sp.S.Zero
        decls = []
        for buf in lw.aux[start:]:
            decls.append(f"{lw.real} *restrict {buf.name} = scratch + {dim(offset)};")
            offset += buf.size
        if decls:
            self.uses_scratch = True
            body = ["{", *("    " + x for x in decls)] + ["    " + x for x in lw.lines[mark:]]
            lw.lines[mark:] = [*body, "}"]
        for deg, coeff in _coeffs(offset).items():
            self.scratch[deg] = max(self.scratch.get(deg, sp.S.Zero), coeff)

    def dry_shape(self, expr: sp.Expr) -> Shape:
        lw = self.lw
        probe = StatementLowerer(
            dict(lw.vars), SymgradCPrinter(lw.real, lw.printer.prefix), lw.real
        )
        probe.counter = 10**6
        return probe.lower(expr).shape

    def workspace(self) -> tuple[list[str], sp.Expr]:
        """Pointer declarations into the workspace, and its length (a polynomial in N)."""
        real = self.lw.real
        lines = []
        offset = sp.S.Zero
        for buf in self.named:
            lines.append(f"{real} *restrict {buf.name} = workspace + {dim(offset)};")
            offset += buf.size
        if self.uses_scratch:
            lines.append(f"{real} *const scratch = workspace + {dim(offset)};")
        scratch = sum((c * N**d for d, c in self.scratch.items()), sp.S.Zero)
        return lines, sp.expand(offset + scratch)


def _coeffs(size: sp.Expr) -> dict[int, sp.Expr]:
    poly = sp.Poly(sp.expand(size), N)
    return {m[0]: c for m, c in zip(poly.monoms(), poly.coeffs(), strict=True)}


def _unused(body: list[str], args: list[str]) -> list[str]:
    """``(void)arg;`` for each function argument the body never mentions (-Wextra)."""
    text = "\n".join(body)
    return [f"(void){a};" for a in args if not re.search(rf"\b{a}\b", text)]


@dataclass
class _Layout:
    """The arrays every function starts from: inputs and parameters."""

    net: Network
    real: str
    prefix: str
    names: dict[str, str]
    params: list[dict]

    def lowerer(self) -> StatementLowerer:
        net = self.net
        dims = net.input_shape or (net.size(net.input_width),)
        shape_in = (N, *(sp.Integer(v) for v in dims))
        shape_out = (N, sp.Integer(net.size(net.output_width)))
        bufs = {
            str(net.input): Buf("X", shape_in, "in"),
            str(net.loss.target): Buf("Y", shape_out, "in"),
        }
        for p in self.params:
            bufs[p["name"]] = Buf(p["cname"], p["dims"], "param")
        lw = StatementLowerer(bufs, SymgradCPrinter(self.real, self.prefix), self.real)
        lw.taken |= set(self.names.values())
        return lw

    def head(self, lw: StatementLowerer) -> list[str]:
        out = [
            f"const {self.real} *restrict {p['cname']} = params + {p['offset']};"
            for p in self.params
            if p["cname"] in lw.used
        ]
        if NREAL in lw.used:
            out.append(f"const {self.real} {NREAL} = ({self.real})n;")
        return out


def _forward(lay: _Layout, prog: CProgram) -> tuple[list[str], Function]:
    fn = Function(lay.lowerer())
    names = dict(lay.names)
    names[prog.net.output.name] = "out"
    for st in prog.forward:
        fn.statement(st, names, {})
    ws, _ = fn.workspace()
    body = lay.head(fn.lw) + ws + fn.lw.lines
    return body + _unused(body, ["params", "X", "n", "workspace"]), fn


def _loss_and_grads(lay: _Layout, prog: CProgram) -> tuple[list[str], Function]:
    fn = Function(lay.lowerer())
    lw = fn.lw
    for st in prog.forward + prog.loss:
        fn.statement(st, lay.names, {})
    lw.emit(["/* the loss: the mean over the batch of the per-sample loss */"])
    total = lw.lower(prog.total)
    lw.used.add(NREAL)
    lw.emit([f"const {lay.real} loss = ({lw.text(total, False)}) / {NREAL};"])
    split = len(lw.lines)
    grads: dict[str, Buf] = {}
    decls = []
    for p in lay.params:
        g = lay.names["d" + p["name"]]
        grads["d" + p["name"]] = Buf(g, p["dims"], "grad")
        decls.append(f"{lay.real} *restrict {g} = grads + {p['offset']};")
    for st in prog.backward:
        fn.statement(st, lay.names, grads)
    ws, _ = fn.workspace()
    body = lay.head(lw) + ws + lw.lines[:split]
    body += ["if (grads == NULL) {", "    return loss;", "}", *decls, *lw.lines[split:]]
    body.append("return loss;")
    return _unused(body, ["params", "X", "Y", "n", "workspace"]) + body, fn


def _size_macro(poly: sp.Expr) -> str:
    """A workspace length polynomial in N as C text in ``max_batch``."""
    terms = []
    for deg, coeff in sorted(_coeffs(poly).items()) if poly != 0 else []:
        batch = " * ".join(["(size_t)(max_batch)"] * deg)
        terms.append(f"(size_t){coeff}" + (f" * {batch}" if batch else ""))
    return "(" + (" + ".join(terms) or "(size_t)0") + ")"


def c_context(
    d: Derivation | Network,
    *,
    dtype: str = "float64",
    optimizer: str | None = None,
    prefix: str = "net",
    source: str | None = None,
) -> dict:
    """Everything ``templates/c/net.c.j2`` and ``net.h.j2`` need."""
    if dtype not in DTYPES:
        raise SpecError(f"unknown dtype '{dtype}' (known: {', '.join(DTYPES)})")
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise SpecError(f"unknown optimizer '{optimizer}' (known: {', '.join(OPTIMIZERS)})")
    prog = c_program(d)
    net = prog.net
    real = DTYPES[dtype]
    quantities = [p.name for p in net.params] + ["d" + p.name for p in net.params]
    for st in prog.forward + prog.loss + prog.backward:
        quantities.append(st.target)
    names = c_names(list(dict.fromkeys(quantities)), prefix)
    params, offset = [], 0
    for p in net.params:
        dims = tuple(sp.Integer(net.size(w)) for w in net.shape(p))
        size = int(sp.Mul(*dims))
        fan_in = net.size(p.fan_in) if p.fan_in is not None else 1
        params.append(
            {
                "name": p.name,
                "cname": names[p.name],
                "literal": c_string(p.name),
                "dims": dims,
                "shape": [int(v) for v in dims],
                "size": size,
                "offset": offset,
                "init": p.init,
                "bound": repr(1.0 / float(fan_in) ** 0.5),
            }
        )
        offset += size
    lay = _Layout(net, real, prefix, names, params)
    fwd, ffn = _forward(lay, prog)
    lag, lfn = _loss_and_grads(lay, prog)
    sizes = [ffn.workspace()[1], lfn.workspace()[1]]
    coeffs: dict[int, sp.Expr] = {}
    for s in sizes:
        for deg, c in _coeffs(s).items() if s != 0 else []:
            coeffs[deg] = max(coeffs.get(deg, sp.S.Zero), c)
    work = sum((c * N**deg for deg, c in coeffs.items()), sp.S.Zero)
    src = source or net.source or ""
    return {
        "marker_line": marker_line("dot"),
        "version": __version__,
        "name": c_comment(net.name),
        "source": c_comment(src),
        "loss_name": c_comment(net.loss.name),
        "prefix": prefix,
        "PREFIX": prefix.upper(),
        "real": real,
        "dtype": dtype,
        "params": params,
        "param_count": offset,
        "input_size": int(sp.Mul(*(net.input_shape or (net.size(net.input_width),)))),
        "input_shape": list(net.input_shape or (net.size(net.input_width),)),
        "output_size": net.size(net.output_width),
        "forward": fwd,
        "loss_and_grads": lag,
        "helpers": sorted(ffn.lw.printer.helpers | lfn.lw.printer.helpers),
        "optimizer": optimizer,
        "workspace": _size_macro(work),
        "workspace_poly": work,
        "cap": "88.0f" if real == "float" else "708.0",
    }


def generate_c(
    d: Derivation | Network,
    *,
    dtype: str = "float64",
    optimizer: str | None = None,
    prefix: str = "net",
    source: str | None = None,
) -> tuple[str, str]:
    """The C source and header of the network (``<prefix>.c``, ``<prefix>.h``)."""
    ctx = c_context(d, dtype=dtype, optimizer=optimizer, prefix=prefix, source=source)
    env = environment()
    return (
        env.get_template("c/net.c.j2").render(**ctx),
        env.get_template("c/net.h.j2").render(**ctx),
    )


def write_c(
    d: Derivation,
    output: str,
    *,
    dtype: str = "float64",
    optimizer: str | None = None,
    source: str | None = None,
    force: bool = False,
) -> tuple[Path, Path]:
    """Generate and write ``<output>.c`` and ``<output>.h`` (each atomically; both are
    checked before anything is generated, so a refusal leaves neither half-written)."""
    src_path, hdr_path = c_paths(output)
    marker = marker_line("dot")
    for p in (src_path, hdr_path):
        check_writable(p, force=force, marker=marker)
    code, header = generate_c(
        d, dtype=dtype, optimizer=optimizer, prefix=prefix_of(str(src_path)), source=source
    )
    atomic_write(hdr_path, header, force=force, marker=marker)
    atomic_write(src_path, code, force=force, marker=marker)
    return src_path, hdr_path


__all__ = ["c_context", "c_program", "generate_c", "prefix_of", "write_c"]
