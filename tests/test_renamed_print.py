"""Printing memoised up to the names of quantities gives the text a printer gives from
scratch: the same documents byte for byte, and the same formulas where the order of terms
or a custom node depends on the names."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import sympy as sp

from symgrad import derivations, pipeline
from symgrad.documents import renamed_print
from symgrad.documents.renamed_print import RenamedPrinter
from symgrad.ir.plain import TextPrinter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from compile_time import BATCHNORM_SPEC, mlp_spec  # noqa: E402

I = sp.Symbol("i", integer=True)  # noqa: E741


def _arrays(*names: str) -> list[sp.IndexedBase]:
    return [sp.IndexedBase(n, real=True) for n in names]


@pytest.mark.parametrize(
    "names",
    [
        ("x2", "x10"),  # "x10" sorts before "x2": the other order than x3, x4
        ("x3", "x4"),
        ("W9", "a10"),
        ("da3", "a3"),  # an adjoint is printed first in a product
        ("a3", "b3"),
    ],
)
def test_memoised_text_is_the_text_printed_from_scratch(names):
    u, v = _arrays(*names)
    memo = RenamedPrinter(TextPrinter())
    n = sp.Symbol("n_3", integer=True, positive=True)
    exprs = [
        u[I] + v[I],
        u[I] * v[I] * (1 - v[I]),
        sp.Sum(u[I] * v[I], (I, 0, n - 1)),
        u[I] ** 2 - 3 * v[I],
    ]
    for e in exprs:  # each after the forms of the earlier parameters are memoised
        assert memo(e) == TextPrinter().doprint(e)
    for e in exprs:
        for other in (("x2", "x10"), ("W9", "a10"), ("da3", "a3")):
            p, q = _arrays(*other)
            renamed = e.xreplace({u: p, v: q})
            assert memo(renamed) == TextPrinter().doprint(renamed)


class _Tagged(sp.Function):
    """A node that writes its argument's name itself (not through the printer)."""

    def _sympystr(self, printer):
        return f"tag<{self.args[0].base.label}>"


def test_a_name_written_without_its_atom_is_not_memoised():
    (u, v) = _arrays("a2", "a7")
    memo = RenamedPrinter(TextPrinter())
    for e in (_Tagged(u[I]) + u[I], _Tagged(v[I]) + v[I]):
        assert memo(e) == TextPrinter().doprint(e)
    assert "tag<a7>" in memo(_Tagged(v[I]) + v[I])


def _documents(spec: Path) -> dict[str, str]:
    sp.core.cache.clear_cache()
    derivations.clear()
    d = pipeline.derive(pipeline.parse(str(spec)))
    return {to: pipeline.render_document(d, to=to) for to in ("text", "markdown")}


@pytest.mark.parametrize(
    "spec",
    ["deep", "bn", "examples/digits_cnn/digits_cnn.toml", "examples/attention/attention.toml"],
)
def test_documents_are_those_printed_without_the_memo(spec, tmp_path, monkeypatch):
    path = ROOT / spec
    if spec == "deep":
        path = tmp_path / "deep.toml"
        path.write_text(mlp_spec(12, 5))
    elif spec == "bn":
        path = tmp_path / "bn.toml"
        path.write_text(BATCHNORM_SPEC)
    memoised = _documents(path)
    monkeypatch.setattr(
        renamed_print.RenamedPrinter,
        "__call__",
        lambda self, e: str(self._printer.doprint(e)),
    )
    assert _documents(path) == memoised
