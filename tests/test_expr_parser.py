"""Tests of the spec-expression parser (whitelist tokenizer + recursive descent)."""

from __future__ import annotations

import inspect
import re
import time

import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from symgrad.errors import SpecError
from symgrad.frontend import expr_parser
from symgrad.frontend.expr_parser import parse_expression
from symgrad.ir.ops import sigmoid

x, y, yhat, b, c = sp.symbols("x y yhat b c")
i, j, k = sp.symbols("i j k", integer=True)
n = sp.Symbol("n", integer=True, positive=True)
a = sp.IndexedBase("a")
A = sp.IndexedBase("A", shape=(n, n))

ENV: dict = {
    "scalars": {"x": x, "y": y, "yhat": yhat, "b": b, "c": c},
    "arrays": {"a": a, "A": A},
    "indices": {"i": (i, n), "j": (j, n), "k": (k, n)},
    "free_indices": ("i",),
}


def parse(text: object, **overrides: object) -> sp.Expr:
    return parse_expression(text, **{**ENV, **overrides})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x/(1 + abs(x))", x / (1 + sp.Abs(x))),
        ("log(cosh(yhat - y))", sp.log(sp.cosh(yhat - y))),
        (
            "a[i] / sqrt(sum(a[j]**2, j) + 1e-6)",
            a[i] / sp.sqrt(sp.Sum(a[j] ** 2, (j, 0, n - 1)) + sp.Float("1e-6")),
        ),
        ("exp(a[i]) / sum(exp(a[j]), j)", sp.exp(a[i]) / sp.Sum(sp.exp(a[j]), (j, 0, n - 1))),
        ("-x**2", -(x**2)),
        ("2**-1*x", x / 2),
        ("x - b - c", (x - b) - c),
        ("x / b / c", (x / b) / c),
        ("x**2**3", x**8),
        ("(x**2)**3", x**6),
        ("max(x, 0)", sp.Max(x, 0)),
        ("min(x, y, 1)", sp.Min(x, y, 1)),
        ("sigmoid(x)", sigmoid(x)),
        (
            "tanh(x) + sinh(x) * cosh(x) - sin(x) / cos(x)",
            sp.tanh(x) + sp.sinh(x) * sp.cosh(x) - sp.sin(x) / sp.cos(x),
        ),
        ("+x - -y", x + y),
        ("x**-0.5", x ** sp.Float("-0.5")),
        ("x**(1/2)", sp.sqrt(x)),
        ("3", sp.Integer(3)),
        ("2.5e3", sp.Float("2500")),
        ("sum(A[i, j] * a[j], j)", sp.Sum(A[i, j] * a[j], (j, 0, n - 1))),
        ("sum(sum(A[j, k], k), j)", sp.Sum(sp.Sum(A[j, k], (k, 0, n - 1)), (j, 0, n - 1))),
        ("  x\t*\n y ", x * y),
    ],
)
def test_parses_to_expected(text: str, expected: sp.Expr) -> None:
    result = parse(text)
    # Calls are built unevaluated (cosh(yhat - y) is not rewritten to cosh(y - yhat)).
    assert result == expected or result.doit() == expected
    assert sp.simplify(result - expected) == 0


def test_types_of_numbers() -> None:
    assert isinstance(parse("12"), sp.Integer)
    assert isinstance(parse("1.5"), sp.Float)
    assert isinstance(parse("1e-6"), sp.Float)


def test_precedence_structure() -> None:
    neg_sq = parse("-x**2")
    assert neg_sq.is_Mul and sp.S.NegativeOne in neg_sq.args
    assert parse("x - b - c") != parse("x - (b - c)")
    assert parse("x / b / c") != parse("x / (b / c)")
    assert parse("2**-1") == sp.Rational(1, 2)


MALFORMED = [
    ("__import__('os').system('ls')", "string literals are not allowed"),
    ("__import__", "unknown name '__import__'"),
    ("x.real", "attribute access '.' is not allowed"),
    ("lambda: 1", "unexpected character ':'"),
    ("lambda x", "unknown name 'lambda'"),
    ("exec('1')", "not allowed"),
    ("exec(x)", "function 'exec' is not allowed"),
    ('"x"', "string literals are not allowed"),
    ("x; y", "unexpected character ';' at position 1"),
    ("x = 1", "unexpected character '='"),
    ("exp(x=1)", "unexpected character '='"),
    ("x @ y", "unexpected character '@' at position 2"),
    ("foo(x)", "function 'foo' is not allowed (allowed: abs"),
    ("x**x", "must be a numeric constant"),
    ("x**1000", "|value| <= 64"),
    ("2**2**2**2**2", "|value| <= 64"),
    ("1e999", "out of range"),
    ("9" * 400, "out of range"),
    ("1e300 * 1e300", "too large"),
    ("(" * 100 + "x" + ")" * 100, "nested too deeply"),
    ("exp(" * 50 + "x" + ")" * 50, "nested too deeply"),
    ("x+" * 2500 + "x", "too long"),
    ("x+" * 600 + "x", "too many tokens"),
    ("a[i+1]", "only index names are allowed inside brackets"),
    ("a[1]", "only index names are allowed inside brackets"),
    ("a[]", "only index names are allowed inside brackets"),
    ("a[k]", "index 'k' at position 2 is not declared free here"),
    ("a[q]", "unknown index 'q'"),
    ("A[i]", "takes 2 indices"),
    ("i + 1", "index 'i' at position 0 may only appear inside brackets"),
    ("sum(a[j], q)", "unknown index 'q'"),
    ("sum(a[j], x)", "unknown index 'x'"),
    ("sum(a[j], 1)", "must be an index name"),
    ("sum(a[i], i)", "cannot sum over free index 'i'"),
    ("sum(sum(a[j], j), j)", "already bound by an enclosing sum"),
    ("sum(x)", "sum() takes 2 or more arguments"),
    ("sum()", "sum() takes 2 or more arguments"),
    ("sum(a[j]], j)", "unexpected ']'"),
    ("sum(a[j]", "unexpected end of expression"),
    ("sum(x, j, j)", "already bound by an enclosing sum"),
    ("sum(x, j, 1)", "must be an index name"),
    ("sum(x, (j, 0, 1), (k, 0", "unexpected end of expression"),
    ("sum(x, (j, 0, 1)", "unexpected end of expression"),
    ("sum", "must be called"),
    ("exp(x, y)", "exp() takes exactly 1 argument"),
    ("exp()", "unexpected ')'"),
    ("max(x)", "max() takes 2 to"),
    ("min(" + ", ".join(["x"] * 20) + ")", "min() takes 2 to"),
    ("", "empty expression"),
    ("   ", "empty expression"),
    ("x +", "unexpected end of expression"),
    ("(x", "unexpected end of expression"),
    (")", "unexpected ')' at position 0"),
    ("x y", "unexpected 'y' at position 2"),
    ("x, y", "unexpected ','"),
    ("a", "array 'a' at position 0 must be subscripted"),
    ("x[i]", "scalar 'x' at position 0 cannot be subscripted"),
    ("[x]", "unexpected '['"),
    ("x(1)", "'x' at position 0 is not a function"),
    ("1/0", "division by zero"),
    ("x/0", "division by zero"),
    ("0**-1", "division by zero"),
    ("max(sqrt(-1), 0)", "is not a real number"),
    ("log(-1)", "is not a real number"),
    ("(-8)**(1/3)", "is not a real number"),
    ("exp(" * 30 + "2" + ")" * 30, "too large"),
    ("x²", "unexpected character '²'"),
]


@pytest.mark.parametrize(("text", "phrase"), MALFORMED, ids=[repr(t[:30]) for t, _ in MALFORMED])
def test_rejects_malformed(text: str, phrase: str) -> None:
    with pytest.raises(SpecError) as info:
        parse(text)
    message = str(info.value)
    assert phrase in message, message
    assert "\n" not in message


def test_message_lists_allowed_names() -> None:
    with pytest.raises(SpecError, match=r"unknown name 'os' at position 0 \(allowed: x\)"):
        parse_expression("os", scalars={"x": x})


def test_non_string_input() -> None:
    for value in (3, 1.5, None, ["x"], b"x"):
        with pytest.raises(SpecError, match="expected a string expression"):
            parse(value)


def test_error_is_located() -> None:
    with pytest.raises(SpecError) as info:
        parse_expression("x +", scalars={"x": x}, file="spec.toml", field="loss.expr")
    assert info.value.file == "spec.toml"
    assert info.value.field == "loss.expr"
    assert str(info.value) == "spec.toml: loss.expr: unexpected end of expression"


def test_sum_index_rules_with_no_free_indices() -> None:
    with pytest.raises(SpecError, match="not declared free here"):
        parse("a[i]", free_indices=())
    assert parse("sum(a[i], i)", free_indices=()) == sp.Sum(a[i], (i, 0, n - 1))


@pytest.mark.parametrize("name", ["abs", "sqrt", "log", "exp", "tanh", "sin", "sigmoid"])
def test_deep_symbolic_nesting_is_fast(name: str) -> None:
    # SymPy's automatic evaluation of tanh(tanh(...) - x) - x ... takes minutes; the
    # parser keeps calls unevaluated, so this stays fast.
    text = f"{name}(" * 39 + "x**2 - y" + ") - x" * 39
    start = time.perf_counter()
    result = parse(text)
    assert time.perf_counter() - start < 1.0
    assert result.has(x) and isinstance(result, sp.Expr)


def test_constant_calls_fold_to_numbers() -> None:
    assert parse("sigmoid(0)") == sp.Rational(1, 2)
    assert parse("max(1, 2)") == 2
    assert parse("exp(0)") == 1
    folded = parse("log(2) * x")
    assert folded.has(sp.Float) and abs(folded.coeff(x) - 0.693147180559945) < 1e-12
    # log(log(2)) < 0, so the next log is complex: rejected at once, not evaluated deeply.
    with pytest.raises(SpecError, match="not a real number"):
        parse("log(" * 30 + "2" + ")" * 30)


def test_parser_never_evaluates_text() -> None:
    code = inspect.getsource(expr_parser).split('"""', 2)[2]  # after the module docstring
    forbidden = r"(?<![\w.])(eval|exec|compile|sympify|parse_expr|__import__)\(|import ast"
    assert re.search(forbidden, code) is None


def test_long_sign_and_power_chains_do_not_recurse() -> None:
    assert parse("-" * 999 + "x") == -x
    assert parse("x" + "**1" * 450) == x


def _check_total(text: object) -> None:
    start = time.perf_counter()
    try:
        result = parse(text)
    except SpecError:
        pass
    else:
        assert isinstance(result, sp.Expr)
    assert time.perf_counter() - start < 1.0, repr(text)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_fuzz_any_text(text: str) -> None:
    _check_total(text)


GRAMMAR_PIECES = [
    "x", "a", "i", "j", "k", "(", ")", "[", "]", "+", "-", "*", "/", "**", ",", ".",
    "0", "1", "2", "9", "e", "64", "sum", "exp", "max", "log", "sqrt", " ",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(GRAMMAR_PIECES), max_size=60).map("".join))
def test_fuzz_grammar_alphabet(text: str) -> None:
    _check_total(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="xaij()[]+-*/,.1e ", max_size=200))
def test_fuzz_grammar_characters(text: str) -> None:
    _check_total(text)


_LEAVES = st.sampled_from(
    [("x", x), ("y", y), ("2", sp.Integer(2)), ("0.5", sp.Float("0.5")), ("a[i]", a[i])]
)


def _call(fn: type[sp.Function], *args: sp.Expr) -> sp.Expr:
    """The parser's policy: constant calls fold to numbers, other calls stay as written."""
    if all(arg.is_Number for arg in args):
        return fn(*args).evalf(15) if not fn(*args).is_Number else fn(*args)
    return fn(*args, evaluate=False)


def _extend(children: st.SearchStrategy) -> st.SearchStrategy:
    pair = st.tuples(children, children)
    return st.one_of(
        pair.map(lambda p: (f"({p[0][0]} + {p[1][0]})", p[0][1] + p[1][1])),
        pair.map(lambda p: (f"({p[0][0]} - {p[1][0]})", p[0][1] - p[1][1])),
        pair.map(lambda p: (f"({p[0][0]} * {p[1][0]})", p[0][1] * p[1][1])),
        pair.map(lambda p: (f"max({p[0][0]}, {p[1][0]})", _call(sp.Max, p[0][1], p[1][1]))),
        children.map(lambda p: (f"(-{p[0]})", -p[1])),
        children.map(lambda p: (f"({p[0]})**2", p[1] ** 2)),
        children.map(lambda p: (f"exp({p[0]})", _call(sp.exp, p[1]))),
        children.map(lambda p: (f"sum({p[0]} * a[j], j)", sp.Sum(p[1] * a[j], (j, 0, n - 1)))),
    )


@settings(max_examples=200, deadline=None)
@given(st.recursive(_LEAVES, _extend, max_leaves=12))
def test_fuzz_valid_expressions_round_trip(pair: tuple[str, sp.Expr]) -> None:
    text, expected = pair
    try:
        result = parse(text)
    except SpecError as exc:  # nested sums over j, deep nesting, huge constants
        assert any(p in str(exc) for p in ("already bound", "too deeply", "too large")), exc
        return
    assert result == expected
