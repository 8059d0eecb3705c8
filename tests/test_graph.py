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


def test_backward_edges_dashed_red_and_labelled(seed_dot):
    e = _edges(seed_dot)
    expected = {
        ("a2", "z2"): "delta2",
        ("z2", "W2"): "dW2",
        ("z2", "b2"): "db2",
        ("z2", "a1"): "da1",
        ("a1", "z1"): "delta1",
        ("z1", "W1"): "dW1",
        ("z1", "b1"): "db1",
    }
    for (src, dst), label in expected.items():
        (attrs,) = e[(src, dst)]
        assert 'style="dashed"' in attrs and "red" in attrs
        assert f'label="{label}"' in attrs
    # adjoints the code never forms: the fused loss gradient and dx
    (loss_edge,) = e[("L", "a2")]
    assert "dashed" in loss_edge and "da2" in loss_edge and "red" not in loss_edge
    (dx_edge,) = e[("z1", "x")]
    assert "dx" in dx_edge and "red" not in dx_edge


def test_no_bias_and_map_layer():
    l2 = Map(a[i] / sp.sqrt(sp.Sum(a[j] ** 2, (j, 0, n - 1)) + sp.Float(1e-6)), name="l2norm")
    net = build("m", 3, [Dense(4, "tanh", bias=False), l2, Dense(2, bias=False)], "mse")
    dot = to_dot(derive(net))
    nodes = _nodes(dot)
    assert "b1" not in nodes and "b3" not in nodes
    assert {"z1", "a1", "a2", "z3", "W1", "W3"} <= nodes
    e = _edges(dot)
    assert ("a1", "a2") in e and ("a2", "z3") in e and ("z3", "L") in e
    assert any('label="da1"' in attrs for attrs in e[("a2", "a1")])
    assert 'label="a2\\nl2norm"' in dot


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
    assert "<svg" in svg and "delta2" in svg and "W1" in svg


def test_render_graph_bad_source(tmp_path):
    if shutil.which("dot") is None:
        pytest.skip("graphviz (dot) is not installed")
    assert render_graph("digraph {", tmp_path / "bad.svg") is False
