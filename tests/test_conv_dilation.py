"""Dilated conv layers: ``x[c, s*i + d*k - p]``, torch's ``dilation=d``.

The generated NumPy module against PyTorch (float64 loss and every gradient within 1e-7
relative at batch 1 and 16; float32 stays float32), the derivation's matrix form (the
dilation is stated), the spec's one-line errors and the independent torch reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_conv import check_against_torch

from symgrad.calculus.conv_form import Correlate, CorrInputGrad, CorrWeightGrad, Windows
from symgrad.errors import SpecError
from symgrad.frontend.spec import loads_spec
from symgrad.ir import layers as L
from symgrad.ir.conv import Conv, Flatten, Pool, out_size
from symgrad.pipeline import derive, generate

pytest.importorskip("torch")

CASES = {
    "conv1d-d2": (
        [2, 9],
        [Conv(3, 3, dilation=2, activation="tanh", dims=1), Flatten(), L.Dense(2)],
    ),
    "conv1d-d2-stride2-pad1": (
        [2, 11],
        [Conv(2, 3, stride=2, padding=1, dilation=2, dims=1), Flatten(), L.Dense(2)],
    ),
    "conv1d-one-channel-d3": (
        [1, 10],
        [Conv(2, 2, dilation=3, activation="relu", dims=1), Flatten(), L.Dense(1)],
    ),
    "conv2d-d2": ([2, 7, 7], [Conv(3, 3, dilation=2, activation="relu"), Flatten(), L.Dense(2)]),
    "conv2d-d2-stride2-pad1": (
        [1, 9, 9],
        [Conv(2, 3, stride=2, padding=1, dilation=2, activation="tanh"), Flatten(), L.Dense(3)],
    ),
    "conv2d-nonsquare-d21": (
        [2, 9, 6],
        [
            Conv(3, (3, 2), padding=(1, 0), dilation=(2, 1), activation="tanh"),
            Flatten(),
            L.Dense(2),
        ],
    ),
    "conv2d-d12-stride-pad": (
        [1, 7, 9],
        [Conv(2, (2, 3), stride=(1, 2), padding=(0, 1), dilation=(1, 2)), Flatten(), L.Dense(2)],
    ),
    "conv2d-stack-dilated-then-pool": (
        [1, 10, 10],
        [
            Conv(2, 3, padding=2, dilation=2, activation="relu"),
            Pool("max", 2),
            Conv(2, 2, dilation=(2, 2), bias=False),
            Flatten(),
            L.Dense(2, "softmax"),
        ],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_dilated_conv_matches_torch(case):
    shape, layers = CASES[case]
    loss = "cross_entropy" if layers[-1].activation == "softmax" else "mse"
    check_against_torch(layers, shape, loss, batches=(1, 16))


def test_large_batch_dilated_takes_the_blocked_path():
    layers = [Conv(3, 3, stride=2, padding=1, dilation=2, activation="relu"), Flatten(), L.Dense(2)]
    check_against_torch(layers, [2, 9, 9], batches=(300,))


def test_output_size_is_torchs_formula():
    # floor((L + 2p - d(k - 1) - 1)/s) + 1, where the sweep tiles exactly
    assert out_size(9, 3, 1, 0, 1, "width", 2) == 5
    assert out_size(11, 3, 2, 1, 1, "width", 2) == 5
    assert out_size(10, 2, 1, 0, 1, "width", 3) == 7
    with pytest.raises(SpecError, match="dilation 3"):
        out_size(6, 3, 1, 0, 1, "width", 3)  # span 7 > 6
    with pytest.raises(SpecError, match="not an integer"):
        out_size(10, 3, 2, 0, 1, "width", 2)


def test_derivation_states_the_dilation():
    net = L.build(
        "n",
        [1, 9],
        [Conv(2, 3, stride=2, padding=1, dilation=2, dims=1), Flatten(), L.Dense(1)],
        "mse",
    )
    d = derive(net)
    fwd = d.forward[0].matrix
    assert fwd.has(Correlate)
    win = next(iter(fwd.atoms(Windows)))
    assert tuple(int(v) for v in win.args[5]) == (2,)
    assert "dilation 2" in str(fwd)
    dx = d.step("dx").matrix
    assert isinstance(dx, CorrInputGrad) and "dilation 2" in str(dx)
    assert d.step("dW1").matrix.has(CorrWeightGrad) and "dilation 2" in str(d.step("dW1").matrix)
    from symgrad.documents.render import render

    tex = render(d, "latex")
    assert r"\star_{d=2}" in tex and r"\star_{d=2}^{\top}" in tex


def test_undilated_nodes_are_unchanged():
    """Dilation 1 adds no argument: the nodes, code and documents are what they were."""
    net = L.build("n", [1, 6], [Conv(2, 3, dims=1), Flatten(), L.Dense(1)], "mse")
    d = derive(net)
    assert all(len(w.args) == 5 for w in d.forward[0].matrix.atoms(Windows))
    assert len(d.step("dx").matrix.args) == 5
    assert "dilation=" not in generate(net).split("def forward", 1)[1]


def test_generated_code_passes_dilation_and_has_no_loops():
    net = L.build(
        "n", [1, 9, 9], [Conv(2, 3, stride=2, padding=1, dilation=2), Flatten(), L.Dense(1)], "mse"
    )
    src = generate(net)
    assert "dilation=(2, 2)" in src
    body = src.split("def loss_and_grads", 1)[1]
    assert "for " not in body.split("return value, {", 1)[0]


SPEC = """
name = "dil"
input = [1, 9, 9]
loss = "mse"

[[layer]]
type = "conv2d"
channels = 2
kernel = 3
stride = 2
padding = 1
dilation = 2
activation = "tanh"

[[layer]]
type = "flatten"

[[layer]]
units = 2
"""


def test_toml_dilation_builds_the_python_api_network():
    net = loads_spec(SPEC)
    layers = [Conv(2, 3, stride=2, padding=1, dilation=2, activation="tanh"), Flatten(), L.Dense(2)]
    same = L.build("dil", [1, 9, 9], layers, "mse")
    assert [s.body for s in net.stages] == [s.body for s in same.stages]
    pair = loads_spec(SPEC.replace("dilation = 2", "dilation = [2, 1]"))
    assert dict(pair.stages[0].attrs)["dilation"] == (2, 1)


@pytest.mark.parametrize(
    "value,message",
    [
        ("0", "dilation must be at least 1, got 0"),
        ("-2", "dilation must be at least 1, got -2"),
        ('"2"', "dilation must be an integer"),
        ("[2, 1, 1]", "a list of 2"),
        ("1.5", "dilation must be an integer"),
        ("true", "dilation must be an integer"),
        ("6", "with dilation 6 (span 13) is larger than the height 9"),
    ],
)
def test_bad_dilation_is_a_one_line_error(value, message):
    with pytest.raises(SpecError) as exc:
        loads_spec(SPEC.replace("dilation = 2", f"dilation = {value}"), file="dil.toml")
    line = exc.value.line() if hasattr(exc.value, "line") else str(exc.value)
    assert "\n" not in line and "layer[1]" in line and message in line, line


@pytest.mark.parametrize("value", ["0", "-1", '"two"'])
def test_cli_bad_dilation_exits_2_with_one_line(tmp_path, capsys, value):
    from symgrad.cli import main

    spec = tmp_path / "dil.toml"
    spec.write_text(SPEC.replace("dilation = 2", f"dilation = {value}"))
    assert main(["verify", str(spec)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "dilation" in err, err


def test_python_api_bad_dilation():
    for bad in (0, -1, "2", (2,)):
        with pytest.raises(SpecError, match="dilation"):
            L.build("n", [1, 9, 9], [Conv(2, 3, dilation=bad), Flatten(), L.Dense(1)], "mse")


def test_independent_reference_uses_the_dilation():
    """verify's torch reference (built from the IR's attrs) agrees with F.conv2d(dilation=)."""
    from symgrad.backends.codegen import load_module
    from symgrad.verify.verify import torch_reference

    net = loads_spec(SPEC)
    mod = load_module(generate(net))
    params = mod.init_params(1)
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(5, 1, 9, 9)), rng.normal(size=(5, 2))
    _, ref_loss, ref_grads = torch_reference(net, params, X, Y)
    loss, grads = mod.loss_and_grads(params, X, Y)
    assert float(ref_loss) == pytest.approx(loss, rel=1e-10)
    for k, g in grads.items():
        ref = np.asarray(ref_grads[k])
        assert np.abs(g - ref).max() <= 1e-9 * max(np.abs(ref).max(), 1e-12), k


def test_cli_verify_dilated_spec(tmp_path, capsys):
    from symgrad.cli import main

    spec = tmp_path / "dil.toml"
    spec.write_text(SPEC)
    assert main(["verify", str(spec)]) == 0
    assert "OK" in capsys.readouterr().out


def test_graph_and_text_document_state_the_dilation():
    from symgrad.documents.graph import to_dot
    from symgrad.documents.render import render

    d = derive(loads_spec(SPEC.replace("dilation = 2", "dilation = [2, 1]")))
    dot = to_dot(d)
    assert "conv2d, dilation 2×1" in dot
    text = render(d, "text")
    assert "dilation 2x1" in text
