"""Stage 6 (print), C target, lowering: batched array statements -> C99 loops over flat buffers.

The program the other targets print (``pipeline.lower``, after stable forms and
CSE) is batched, row-major array code: matrix products (``BMatMul``, ``BOuter``),
reductions (``RowSum``, ``ColSum``, ``Total``, the component fallback's ``AxisSum``,
``Einsum``), row-wise softmax and log-sum-exp, and elementwise arithmetic with NumPy's
broadcasting. Here each statement becomes loops:

- every array is a contiguous row-major buffer; an elementwise expression is one loop
  nest (one flat loop when every operand has the statement's shape) whose body is the
  expression printed by :class:`~symgrad.backends.c_printer.SymgradCPrinter`, with each
  array read at its broadcast index;
- a reduction is fused with the elementwise expression it reduces (no temporary);
- a matrix product, softmax or log-sum-exp is a call of a helper of the generated file
  (``templates/c/_helpers.c.j2``; matrix products may call CBLAS), its operands
  materialised first when they are expressions; a statement ``z = X W^T + b`` writes the
  product into ``z`` and adds ``b`` in place.

Temporaries live in the caller's workspace: statement targets each own a region, the
anonymous temporaries of one statement share a scratch region after them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from symgrad.backends.c_printer import SymgradCPrinter
from symgrad.calculus import conv_form
from symgrad.errors import SpecError

Shape = tuple[sp.Expr, ...]
ONE = sp.S.One
#: Nodes the C target does not lower (they occur only in programs it does not print).
REFUSED = {
    conv_form.Windows: "convolution windows outside a correlation",
    conv_form.WindowMaxTangent: "max-pooling tangents",
}


@dataclass(eq=False)
class Buf:
    """One array (or, with shape (), one number) of the generated code."""

    name: str  # the C identifier of the pointer (or of the local variable)
    shape: Shape
    kind: str  # "ws" (named), "aux" (scratch), "param", "grad", "in", "out", "local"

    @property
    def size(self) -> sp.Expr:
        return sp.Mul(*self.shape)


@dataclass(frozen=True)
class Ref:
    """An array read inside a loop nest: buffer axis ``d`` runs along loop axis
    ``axes[d]``."""

    buf: Buf
    axes: tuple[int, ...]


@dataclass(frozen=True)
class Index:
    """A loop index used as a value (``axis``), or the indicator of two equal indices."""

    axis: int
    other: int | None = None


@dataclass(frozen=True)
class Gathered:
    """An array read at computed positions (index arithmetic, ``a[i + h]``): buffer axis
    ``d`` (after the sample axis, read along loop axis ``lead`` when the array has one)
    at the value of ``pos[d]``, an expression over placeholders; zero outside the array."""

    buf: Buf
    lead: int | None
    pos: tuple[sp.Expr, ...]


@dataclass(frozen=True)
class Val:
    """A lowered expression: one element of it (placeholders for array reads) and its
    shape (the loop nest that evaluates it)."""

    expr: sp.Expr
    shape: Shape


def dim(d: sp.Expr) -> str:
    """A dimension or size as C text (``n`` is the batch size)."""
    return str(sp.expand(d)).replace("N", "n").replace("**", "^") if d.free_symbols else str(d)


def broadcast_shape(shapes: list[Shape]) -> Shape:
    rank = max((len(s) for s in shapes), default=0)
    out: list[sp.Expr] = []
    for ax in range(rank):
        dims = {s[ax - rank + len(s)] for s in shapes if ax - rank + len(s) >= 0} - {ONE}
        if len(dims) > 1:
            raise SpecError(f"the C target cannot broadcast the shapes {shapes}")
        out.append(dims.pop() if dims else ONE)
    return tuple(out)


@dataclass
class Lowerer:
    """Lowers the statements of one generated function; ``lines`` is its C body."""

    vars: dict[str, Buf]
    printer: SymgradCPrinter
    real: str
    lines: list[str] = field(default_factory=list)
    refs: dict[str, Ref | Index | Gathered] = field(default_factory=dict)
    aux: list[Buf] = field(default_factory=list)
    used: set[str] = field(default_factory=set)  # buffers and locals the code reads
    counter: int = 0
    dest: Buf | None = None
    taken: set[str] = field(default_factory=set)  # C names in use

    # -- names, placeholders --------------------------------------------------------
    def fresh(self, stem: str) -> str:
        while True:
            self.counter += 1
            name = f"{stem}{self.counter}"
            if name not in self.taken:
                self.taken.add(name)
                return name

    def place(self, ref: Ref | Index | Gathered) -> sp.Symbol:
        sym = sp.Symbol(f"_r{len(self.refs)}")
        self.refs[sym.name] = ref
        return sym

    def read(self, buf: Buf) -> Val:
        self.used.add(buf.name)
        if buf.kind == "local":
            return Val(sp.Symbol(buf.name), ())
        return Val(self.place(Ref(buf, tuple(range(len(buf.shape))))), buf.shape)

    def lift(self, val: Val, rank: int) -> Val:
        """``val`` as an operand of a rank-``rank`` loop nest (NumPy aligns on the right)."""
        k = rank - len(val.shape)
        if k == 0:
            return val
        return Val(self._shifted(val.expr, k), (ONE,) * k + val.shape)

    def _shifted(self, e: sp.Expr, k: int) -> sp.Expr:
        """``e`` with every placeholder's loop axes moved ``k`` axes in."""
        sub = {}
        for s in e.free_symbols:
            r = self.refs.get(s.name)
            if isinstance(r, Ref):
                sub[s] = self.place(Ref(r.buf, tuple(a + k for a in r.axes)))
            elif isinstance(r, Index):
                other = None if r.other is None else r.other + k
                sub[s] = self.place(Index(r.axis + k, other))
            elif isinstance(r, Gathered):
                lead = None if r.lead is None else r.lead + k
                pos = tuple(self._shifted(p, k) for p in r.pos)
                sub[s] = self.place(Gathered(r.buf, lead, pos))
        return e.xreplace(sub)

    def broadcast(self, vals: list[Val]) -> tuple[Shape, list[Val]]:
        shape = broadcast_shape([v.shape for v in vals])
        return shape, [self.lift(v, len(shape)) for v in vals]

    # -- C text ---------------------------------------------------------------------
    def gathered(self, ref: Gathered) -> str:
        """An array element at computed positions, zero where one is outside the array."""
        buf, skip = ref.buf, 0 if ref.lead is None else 1
        conds, terms = [], []
        if ref.lead is not None:
            terms.append(f"i{ref.lead} * {dim(sp.Mul(*buf.shape[1:]))}")
        for d, p in enumerate(ref.pos):
            at = self.text(Val(p, ()), False)
            conds.append(f"{at} >= 0 && {at} <= {dim(buf.shape[d + skip] - 1)}")
            stride = sp.Mul(*buf.shape[d + skip + 1 :])
            cast = f"(size_t)({at})"
            terms.append(cast if stride == ONE else f"{cast} * {dim(stride)}")
        return f"(({' && '.join(conds)}) ? {buf.name}[{' + '.join(terms)}] : 0)"

    def access(self, ref: Ref | Index | Gathered, flat: bool) -> str:
        if isinstance(ref, Gathered):
            return self.gathered(ref)
        if isinstance(ref, Index):
            if ref.other is None:
                return f"(({self.real})i{ref.axis})"
            return f"(({self.real})(i{ref.axis} == i{ref.other}))"
        buf = ref.buf
        if buf.kind == "local":
            return buf.name
        if flat:
            return f"{buf.name}[i0]"
        terms = []
        for d, ax in enumerate(ref.axes):
            if buf.shape[d] == ONE:
                continue
            stride = sp.Mul(*buf.shape[d + 1 :])
            terms.append(f"i{ax}" if stride == ONE else f"i{ax} * {dim(stride)}")
        return f"{buf.name}[{' + '.join(terms) or '0'}]"

    def text(self, val: Val, flat: bool) -> str:
        names = {}
        for s in val.expr.free_symbols:
            r = self.refs.get(s.name)
            if r is not None:
                names[s.name] = self.access(r, flat)
        self.printer.names = names
        return self.printer.doprint_expr(val.expr)

    def is_flat(self, val: Val, shape: Shape) -> bool:
        """Whether every array read has exactly the loop's shape (one flat loop)."""
        for s in val.expr.free_symbols:
            r = self.refs.get(s.name)
            if isinstance(r, Index | Gathered):
                return False
            identity = isinstance(r, Ref) and r.axes == tuple(range(len(shape)))
            if (
                isinstance(r, Ref)
                and r.buf.kind != "local"
                and (r.buf.shape != shape or not identity)
            ):
                return False
        return True

    def emit(self, lines: list[str]) -> None:
        self.lines.extend(lines)

    @staticmethod
    def loops(shape: Shape, body: list[str], start: int = 0, stop: int | None = None) -> list[str]:
        """``body`` inside loops over axes ``start..stop`` of ``shape`` (innermost last)."""
        out = body
        for ax in reversed(range(start, len(shape) if stop is None else stop)):
            head = f"for (size_t i{ax} = 0; i{ax} < {dim(shape[ax])}; ++i{ax}) {{"
            out = [head, *("    " + x for x in out), "}"]
        return out

    def out_access(self, buf: Buf, shape: Shape) -> str:
        return self.access(Ref(buf, tuple(range(len(shape)))), False)

    # -- buffers --------------------------------------------------------------------
    def new_buf(self, shape: Shape, stem: str = "w") -> Buf:
        if not shape:
            buf = Buf(self.fresh("s"), (), "local")
            self.emit([f"{self.real} {buf.name};"])
            return buf
        buf = Buf(self.fresh(stem), shape, "aux")
        self.aux.append(buf)
        return buf

    def target(self, shape: Shape) -> Buf:
        """The statement's own buffer if it has this shape and is still unwritten, else a
        new scratch buffer."""
        if self.dest is not None and self.dest.shape == shape:
            buf, self.dest = self.dest, None
            return buf
        return self.new_buf(shape)

    def assign(self, buf: Buf, val: Val) -> None:
        """``buf = val`` elementwise (``val`` broadcast to ``buf``'s shape)."""
        val = self.lift(val, len(buf.shape))
        sym = val.expr
        r = self.refs.get(sym.name) if isinstance(sym, sp.Symbol) else None
        if isinstance(r, Ref) and r.buf is buf and r.axes == tuple(range(len(buf.shape))):
            return  # already there
        if buf.kind == "local":
            self.emit([f"{buf.name} = {self.text(val, False)};"])
            return
        if not buf.shape:
            self.emit([f"{buf.name}[0] = {self.text(val, False)};"])
            return
        flat = self.is_flat(val, buf.shape)
        rhs = self.text(val, flat)
        if flat:
            self.emit(self.loops((buf.size,), [f"{buf.name}[i0] = {rhs};"]))
        else:
            self.emit(self.loops(buf.shape, [f"{self.out_access(buf, buf.shape)} = {rhs};"]))

    def materialise(self, val: Val) -> Buf:
        """A contiguous buffer holding ``val`` (the buffer itself when ``val`` reads one)."""
        sym = val.expr
        r = self.refs.get(sym.name) if isinstance(sym, sp.Symbol) else None
        if (
            isinstance(r, Ref)
            and r.buf.shape == val.shape
            and r.axes == tuple(range(len(val.shape)))
        ):
            return r.buf
        buf = self.target(val.shape) if val.shape else self.new_buf(())
        self.assign(buf, val)
        return buf

    # -- reductions -----------------------------------------------------------------
    def reduce(self, val: Val, axes: set[int], kind: str, keepdims: bool) -> Val:
        """Sum (``kind`` "+"), max or min of ``val`` over ``axes``, fused with it."""
        rank = len(val.shape)
        kept = [a for a in range(rank) if a not in axes]
        out_shape = tuple(ONE if a in axes else val.shape[a] for a in range(rank))
        if not keepdims:
            out_shape = tuple(val.shape[a] for a in kept)
        buf = self.target(out_shape) if out_shape else self.new_buf(())
        huge = "HUGE_VALF" if self.real == "float" else "HUGE_VAL"
        init = {"+": "0", "max": f"-{huge}", "min": huge}[kind]
        f = "f" if self.real == "float" else ""

        def combine(acc: str, e: str) -> str:
            return f"{acc} + {e}" if kind == "+" else f"f{kind}{f}({acc}, {e})"

        e = self.text(val, False)
        # the output element read inside the loop nest: its axes are the kept loop axes
        out = self.access(Ref(buf, tuple(range(rank)) if keepdims else tuple(kept)), False)
        start = min(axes, default=rank)
        if all(a in axes for a in range(start, rank)):  # reduced axes innermost: a local
            inner = self.loops(val.shape, [f"acc = {combine('acc', e)};"], start)
            body = [f"{self.real} acc = {init};", *inner, f"{out} = acc;"]
            if start == 0:
                self.emit(["{", *("    " + x for x in body), "}"])
            else:
                self.emit(self.loops(val.shape, body, 0, start))
        else:
            if buf.kind == "local":
                self.emit([f"{buf.name} = {init};"])
            else:
                self.emit(self.loops((buf.size,), [f"{buf.name}[i0] = {init};"]))
            self.emit(self.loops(val.shape, [f"{out} = {combine(out, e)};"]))
        return self.read(buf)
