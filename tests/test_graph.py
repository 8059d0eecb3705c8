"""Printing: derivation -> Graphviz DOT of the computational graph."""

from __future__ import annotations

import re
import shutil

import pytest
import sympy as sp

from symgrad import Dense, Map, a, build, derive, i, j, n
from symgrad.documents import graph as graph_mod
from symgrad.documents.graph import render_graph, to_dot


@pytest.fixture(scope="module")
def seed_dot() -> str:
    net = build("seed_net", 3, [Dense(4, "sigmoid"), Dense(2, "sigmoid")], "mse")
    return to_dot(derive(net))


def _edges(dot: str) -> dict[tuple[str, str], list[str]]:
    """(src, dst) -> attribute strings of every edge."""
    out: dict[tuple[str, str], list[str]] = {}
    for m in re.finditer(r'^\s*"([^"]+)" -> "([^"]+)" \[(.*)\];$', dot, re.M):
        out.setdefault((m.group(1), m.group(2)), []).append(m.group(3))
    return out


def _nodes(dot: str) -> set[str]:
    return set(re.findall(r'^\s*"([^"]+)" \[', dot, re.M))


def test_nodes(seed_dot):
    assert seed_dot.startswith('digraph "seed_net" {')
    assert seed_dot.rstrip().endswith("}")
    assert {"x", "z1", "a1", "z2", "a2", "W1", "b1", "W2", "b2", "y", "L"} <= _nodes(seed_dot)
    assert "rankdir=LR" in seed_dot


def test_forward_edges_solid(seed_dot):
    e = _edges(seed_dot)
    for src, dst in [
        ("x", "z1"),
        ("W1", "z1"),
        ("b1", "z1"),
        ("z1", "a1"),
        ("a1", "z2"),
        ("W2", "z2"),
        ("b2", "z2"),
        ("z2", "a2"),
        ("a2", "L"),
        ("y", "L"),
    ]:
        assert (src, dst) in e, (src, dst)
        assert all("dashed" not in attrs for attrs in e[(src, dst)])


def test_backward_edges_coloured_and_labelled_in_math(seed_dot):
    e = _edges(seed_dot)
    blue = {
        ("a2", "z2"): "δ⁽²⁾",
        ("z2", "a1"): "∂ℓ/∂a⁽¹⁾",
        ("a1", "z1"): "δ⁽¹⁾",
        ("z1", "x"): "∂ℓ/∂x",
    }
    red = {
        ("z2", "W2"): "∂ℓ/∂W⁽²⁾ = δ⁽²⁾ a⁽¹⁾ᵀ",
        ("z2", "b2"): "∂ℓ/∂b⁽²⁾ = δ⁽²⁾",
        ("z1", "W1"): "∂ℓ/∂W⁽¹⁾ = δ⁽¹⁾ xᵀ",
        ("z1", "b1"): "∂ℓ/∂b⁽¹⁾ = δ⁽¹⁾",
    }
    for (src, dst), label in blue.items():
        (attrs,) = e[(src, dst)]
        assert 'style="dashed"' in attrs and "blue3" in attrs and "red" not in attrs
        assert f'label="{label}' in attrs
    for (src, dst), label in red.items():
        (attrs,) = e[(src, dst)]
        assert 'style="dashed"' in attrs and "red3" in attrs
        assert f'label="{label}"' in attrs
    # local Jacobians on the backward edges
    assert "J = ∂a⁽¹⁾/∂z⁽¹⁾ = diag(a⁽¹⁾⊙(1 − a⁽¹⁾))" in e[("a1", "z1")][0]
    assert "J = ∂z⁽²⁾/∂a⁽¹⁾ = W⁽²⁾" in e[("z2", "a1")][0]
    (loss_edge,) = e[("L", "a2")]
    assert "dashed" in loss_edge and "∂ℓ/∂a⁽²⁾" in loss_edge
    # no code-generation details, no ASCII adjoint names
    assert "not formed" not in seed_dot
    assert 'label="delta' not in seed_dot and 'label="dW' not in seed_dot


def test_shapes_and_legend(seed_dot):
    assert 'label="z⁽¹⁾ ∈ ℝ⁴\\ndense"' in seed_dot
    assert 'label="W⁽¹⁾\\n4×3"' in seed_dot
    assert 'label="x\\nℝ³"' in seed_dot
    assert "cluster_legend" in seed_dot
    assert "input Jacobian" in seed_dot and "parameter gradient" in seed_dot


def test_cross_entropy_loss_node_is_compact():
    net = build("sm", 3, [Dense(3, "softmax")], "cross_entropy")
    dot = to_dot(derive(net))
    (line,) = [ln for ln in dot.splitlines() if ln.strip().startswith('"L" [')]
    assert "doublecircle" not in line and "shape=box" in line


def test_no_bias_and_map_layer():
    l2 = Map(a[i] / sp.sqrt(sp.Sum(a[j] ** 2, (j, 0, n - 1)) + sp.Float(1e-6)), name="l2norm")
    net = build("m", 3, [Dense(4, "tanh", bias=False), l2, Dense(2, bias=False)], "mse")
    dot = to_dot(derive(net))
    nodes = _nodes(dot)
    assert "b1" not in nodes and "b3" not in nodes
    assert {"z1", "a1", "a2", "z3", "W1", "W3"} <= nodes
    e = _edges(dot)
    assert ("a1", "a2") in e and ("a2", "z3") in e and ("z3", "L") in e
    assert any('label="∂ℓ/∂a⁽¹⁾' in attrs for attrs in e[("a2", "a1")])
    assert 'label="a⁽²⁾ ∈ ℝ⁴\\nl2norm"' in dot


def test_render_graph_without_dot(monkeypatch, tmp_path, seed_dot):
    monkeypatch.setattr(graph_mod.shutil, "which", lambda name: None)
    assert render_graph(seed_dot, tmp_path / "g.svg") is False
    assert not (tmp_path / "g.svg").exists()


def test_render_graph_svg(tmp_path, seed_dot):
    if shutil.which("dot") is None:
        pytest.skip("graphviz (dot) is not installed")
    out = tmp_path / "g.svg"
    assert render_graph(seed_dot, out) is True
    svg = out.read_text(encoding="utf-8")
    assert "<svg" in svg and "δ⁽²⁾" in svg and "W⁽¹⁾" in svg


def test_render_graph_bad_source(tmp_path):
    if shutil.which("dot") is None:
        pytest.skip("graphviz (dot) is not installed")
    assert render_graph("digraph {", tmp_path / "bad.svg") is False


def test_the_graph_names_one_samples_loss_unless_the_samples_are_coupled():
    """The edges carry per-sample Jacobians, so their adjoints differentiate one sample's
    loss l; batch norm in training mode couples the samples: there only the mean L exists."""
    from catalogue import catalogue

    from symgrad import BatchNorm, Dense, build
    from symgrad.documents.graph import to_dot
    from symgrad.pipeline import derive

    seed = to_dot(derive(catalogue()["seed"]))
    assert "∂ℓ/∂W⁽¹⁾" in seed and "∂L/" not in seed
    assert 'label="ℓ\\nmse"' in seed
    bn = build("bn", 3, [Dense(4), BatchNorm(), Dense(2, "sigmoid")], "mse")
    coupled = to_dot(derive(bn))
    assert "∂L/∂W⁽¹⁾" in coupled and "∂ℓ/" not in coupled
