"""One expression front end: one tokenizer, one parser core, one op table (the registry).

Spec expressions (and ``check --formula`` component formulas), matrix-notation formulas and
``check --steps`` NumPy lines are three dialects of :mod:`symgrad.frontend.tokens`, read by
parsers built on :class:`symgrad.frontend.parser_core.ParserCore`. These tests prove that no
other module tokenizes, and that every op of the registry is accepted by each dialect that
can spell it, with the registry's value.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from symgrad.errors import SpecError
from symgrad.frontend import tokens
from symgrad.frontend.expr_parser import parse_expression
from symgrad.frontend.parser_core import ParserCore
from symgrad.ir.ops import OPS, Op
from symgrad.learn.steps.evaluate import _eval as eval_steps
from symgrad.learn.steps.ops import METHOD_UNARY
from symgrad.learn.steps.parse import parse_steps
from symgrad.verify.evaluation import eval_component
from symgrad.verify.matrix_formula import evaluate as eval_formula

PKG = Path(__file__).resolve().parent.parent / "symgrad"
TOKENS = PKG / "frontend" / "tokens.py"
#: A tokenizer regex: named groups for token kinds (two or more in one pattern).
_SCANNER_GROUP = re.compile(r"\(\?P<(num|name|op|ws|str|number|ident|punct)>")
#: Every op, at random points (both signs; log and sqrt give nan below 0 on each side).
RNG = np.random.default_rng(20)
X = RNG.uniform(-3.0, 3.0, size=7)
Y = RNG.uniform(-3.0, 3.0, size=7)
ALL_OPS = sorted(OPS.values(), key=lambda op: op.name)


def _strings(tree: ast.AST) -> list[str]:
    return [
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


def test_only_one_module_tokenizes():
    """No module of symgrad but ``frontend/tokens.py`` defines a tokenizer function, a
    token record or a scanner regex (named groups per token kind)."""
    offenders: list[str] = []
    for path in sorted(PKG.rglob("*.py")):
        if path == TOKENS:
            continue
        rel = str(path.relative_to(PKG))
        tree = ast.parse(path.read_text(), rel)
        for node in ast.walk(tree):
            is_def = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            if is_def and "tokeni" in node.name.lower():
                offenders.append(f"{rel}: def {node.name}")
            if isinstance(node, ast.ClassDef) and re.fullmatch(r"_?Tok(en)?", node.name):
                offenders.append(f"{rel}: class {node.name}")
        offenders += [
            f"{rel}: scanner regex {s[:40]!r}"
            for s in _strings(tree)
            if len(set(_SCANNER_GROUP.findall(s))) >= 2
        ]
    assert not offenders, offenders
    # ... and the one that does has each of them
    tree = ast.parse(TOKENS.read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "tokenize" for n in ast.walk(tree))


@pytest.mark.parametrize(
    "module",
    ["frontend/expr_parser.py", "verify/matrix_formula.py", "learn/steps/expression.py"],
)
def test_each_front_end_is_a_dialect_of_the_one_core(module):
    """Each reader tokenizes with :mod:`tokens` and parses on :class:`ParserCore`; none
    reaches eval, exec, compile, sympify, parse_expr or the ast module."""
    text = (PKG / module).read_text()
    tree = ast.parse(text)
    imported = {
        (n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names
    }
    assert ("symgrad.frontend.tokens", "tokenize") in imported or module.startswith("frontend")
    assert ("symgrad.frontend.parser_core", "ParserCore") in imported
    classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "_Parser"]
    assert classes and any(
        isinstance(b, ast.Subscript) and getattr(b.value, "id", "") == "ParserCore"
        for b in classes[0].bases
    )
    called = {
        n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    assert not called & {"eval", "exec", "compile", "sympify", "parse_expr", "__import__"}
    assert not any(
        isinstance(n, ast.Import | ast.ImportFrom)
        and any(a.name == "ast" for a in n.names)
        and getattr(n, "module", None) in (None, "")
        for n in ast.walk(tree)
    )


def test_dialects_admit_their_own_operators():
    """``@`` is matrix and NumPy, ``.T`` matrix only as a token (NumPy reads ``.`` then
    ``T``), strings NumPy only; each rejects what it does not admit in one line."""

    def fail(message: str):
        raise SpecError(message)

    def kinds(text: str, dialect: tokens.Dialect) -> list[str]:
        return [t.text for t in tokens.tokenize(text, fail, dialect)[:-1]]

    assert kinds("W2.T @ d", tokens.MATRIX) == ["W2", ".T", "@", "d"]
    assert kinds("W2.T @ d", tokens.NUMPY) == ["W2", ".", "T", "@", "d"]
    assert kinds("a[:, None]", tokens.NUMPY) == ["a", "[", ":", ",", "None", "]"]
    assert kinds("x ** -2.5e3", tokens.SPEC) == ["x", "**", "-", "2.5e3"]
    with pytest.raises(SpecError, match=r"unexpected character '@' at position 2"):
        tokens.tokenize("a @ b", fail, tokens.SPEC)
    with pytest.raises(SpecError, match=r"attribute access '\.' is not allowed \(position 1\)"):
        tokens.tokenize("a.T", fail, tokens.SPEC)
    with pytest.raises(SpecError, match=r"string literals are not allowed"):
        tokens.tokenize("'ij'", fail, tokens.SPEC)
    with pytest.raises(SpecError, match=r"unexpected character '\^' at position 1 \(write \*\*"):
        tokens.tokenize("a^2", fail, tokens.MATRIX)
    assert kinds('einsum("ij,ij->i", a, b)', tokens.NUMPY)[2] == '"ij,ij->i"'
    with pytest.raises(SpecError, match="too many tokens"):
        tokens.tokenize("+".join(["a"] * 600), fail, tokens.SPEC)


def _call(op: Op, name: str) -> str:
    return f"{name}(x, y)" if op.arity == 2 else f"{name}(x)"


def _want(op: Op) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(op.numeric(X, Y) if op.arity == 2 else op.numeric(X), dtype=float)


def _close(got, want) -> None:
    np.testing.assert_allclose(
        np.asarray(got, dtype=float), want, rtol=1e-12, atol=0, equal_nan=True
    )


@pytest.mark.parametrize("op", ALL_OPS, ids=lambda op: op.name)
def test_every_op_in_the_spec_dialect(op: Op):
    """A spec expression calls the registry's spec ops, a component formula every op; the
    parsed call is the op's SymPy function, and it evaluates to the registry's values. A
    constant argument folds: for SymPy's own functions by SymPy's evaluation, an
    independent check of the registry's NumPy callable (7 points, 1e-12)."""
    x, y = sp.Symbol("x", real=True), sp.Symbol("y", real=True)
    scalars = {"x": x, "y": y}
    if not op.spec:
        with pytest.raises(SpecError, match=f"function '{op.name}' is not allowed"):
            parse_expression(_call(op, op.name), scalars=scalars)
    for formula in ([False] if op.spec else []) + [True]:
        expr = parse_expression(_call(op, op.name), scalars=scalars, formula=formula)
        assert expr == (op.func(x, y) if op.arity == 2 else op.func(x))
        with np.errstate(all="ignore"):
            got = [eval_component(expr, {"x": u, "y": v}, {}) for u, v in zip(X, Y, strict=True)]
        _close(got, _want(op))
    for v, w in zip(
        map(float, np.abs(X) + 0.1), map(float, Y), strict=True
    ):  # a constant argument folds
        args = f"{v!r}, {w!r}" if op.arity == 2 else f"{v!r}"
        folded = parse_expression(f"{op.name}({args})", formula=True)
        assert folded.is_Number
        want = op.numeric(v, w) if op.arity == 2 else op.numeric(v)
        assert float(folded) == pytest.approx(float(want), rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("op", ALL_OPS, ids=lambda op: op.name)
def test_every_op_in_the_matrix_dialect(op: Op):
    """Every one-argument op is an elementwise function of matrix formulas (``relu(z1)``,
    ``elu(z1)`` ...), with the registry's values on a column; two-argument ops are not
    matrix notation and are refused in one line."""
    env = {"x": X, "y": Y}
    if op.arity != 1:
        with pytest.raises(SpecError, match=f"function '{op.name}' is not allowed"):
            eval_formula(_call(op, op.name), env)
        return
    got = eval_formula(f"{op.name}(x)", env)
    assert got.shape == (len(X), 1)
    _close(got[:, 0], _want(op))
    _close(eval_formula(f"2 * {op.name}(x) - x", env)[:, 0], 2 * _want(op) - X)


@pytest.mark.parametrize("op", ALL_OPS, ids=lambda op: op.name)
def test_every_op_in_the_numpy_dialect(op: Op):
    """A steps file calls each one-argument op bare (``relu(z1)``, as symgrad prints it),
    ``np.<np_name>(...)`` where NumPy spells it (``np.maximum(x, y)``) and ``x.<name>()``
    where torch has the method; each evaluates to the registry's values."""
    spellings = []
    if op.arity == 1:
        spellings.append(f"{op.name}(x)")
    if op.np_name is not None:
        spellings.append(_call(op, f"np.{op.np_name}"))
    if op.name in METHOD_UNARY:
        spellings.append(f"x.{op.name}()")
    assert spellings, f"{op.name}: no NumPy spelling"
    for text in spellings:
        (stmt,) = parse_steps(f"out = {text}\n", file="steps.py")
        with np.errstate(all="ignore"):
            got = eval_steps(stmt.expr, {"x": X, "y": Y})
        _close(got, _want(op))


def test_one_line_errors_name_file_line_and_field():
    """Each dialect's errors keep their one-line form: file and line (steps), field
    (formulas), position (specs)."""
    with pytest.raises(SpecError) as err:
        parse_steps("a = 1\nb = x $ y\n", file="mine.py")
    assert str(err.value).splitlines() == [str(err.value)]
    assert "mine.py" in str(err.value) and "line 2: unexpected character '$'" in str(err.value)
    with pytest.raises(SpecError, match=r"expected '\)' at position 7, found the end"):
        eval_formula("relu((x", {"x": X})
    with pytest.raises(SpecError, match=r"unexpected end of expression \(expected '\)'\)"):
        parse_expression("exp(x", scalars={"x": sp.Symbol("x")})
    deep = "(" * 50 + "x" + ")" * 50
    with pytest.raises(SpecError, match="nested too deeply at position"):
        parse_expression(deep, scalars={"x": sp.Symbol("x")})
    with pytest.raises(SpecError, match="formula nested deeper than 40"):
        eval_formula(deep, {"x": X})
    with pytest.raises(SpecError, match="line 1: expression nested too deeply"):
        parse_steps(f"a = {deep}\n")


def test_the_core_is_precedence_climbing():
    """``a - b - c`` groups left, ``*`` binds tighter than ``+``, comparisons do not
    chain: the same core reads every dialect."""
    from symgrad.frontend.expr_parser import _Parser as SpecParser
    from symgrad.learn.steps.expression import _Parser as NumpyParser
    from symgrad.verify.matrix_formula import _Parser as MatrixParser

    assert all(issubclass(p, ParserCore) for p in (SpecParser, MatrixParser, NumpyParser))
    a, b, c = sp.symbols("a b c")
    names = {"a": a, "b": b, "c": c}
    assert parse_expression("a - b - c", scalars=names) == a - b - c
    assert parse_expression("a + b * c", scalars=names) == a + b * c
    (stmt,) = parse_steps("out = a - b * c > a\n")
    assert stmt.expr == (
        "bin",
        ">",
        ("bin", "-", ("name", "a"), ("bin", "*", ("name", "b"), ("name", "c"))),
        ("name", "a"),
    )
    with pytest.raises(SpecError, match=r"line 1: unexpected '<'"):
        parse_steps("out = a > b < c\n")


def test_component_formulas_are_a_dialect_of_the_spec_parser():
    """``check --formula`` text: comparisons are the step of the difference (0 at a tie),
    juxtaposed factors multiply (also in an index, ``2h``), every registry op is callable;
    a spec reads none of these."""
    a, z, x = sp.IndexedBase("a1"), sp.IndexedBase("z1"), sp.IndexedBase("x")
    i, h = sp.Symbol("i", integer=True), sp.Symbol("h", integer=True)
    kw = {
        "arrays": {"a1": a, "z1": z, "x": x},
        "indices": {"i": (i, sp.Integer(3)), "h": (h, sp.Integer(3))},
        "free_indices": ["i", "h"],
        "index_arithmetic": True,
    }
    got = parse_expression("a1[i](1 - a1[i])*[z1[i] > 0] + 2(z1[i] <= a1[i])", formula=True, **kw)
    values = {a[i]: 0.25, z[i]: 0.5}
    assert float(got.subs(values)) == pytest.approx(0.25 * 0.75 * 1 + 2 * 0)
    assert float(got.subs({a[i]: 0.5, z[i]: 0.5})) == pytest.approx(0.25 + 2 * 0)  # a tie: 0
    assert parse_expression("x[i, 2h + 1]", formula=True, **kw) == x[i, 2 * h + 1]
    for text in ("a1[i](1 - a1[i])", "(z1[i] > 0)", "relu(z1[i])", "x[i, 2h]"):
        with pytest.raises(SpecError):
            parse_expression(text, **kw)
    with pytest.raises(SpecError, match=r"'\^': write \*\* for a power"):
        parse_expression("z1[i]^2", formula=True, **kw)
