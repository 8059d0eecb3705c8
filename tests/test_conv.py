"""conv1d / conv2d layers: generated code against PyTorch, the spec, numbering and documents.

Every network is written twice, independently: with symgrad's layers (derived, then
printed as NumPy) and directly in ``torch.nn.functional``. Tolerances: float64 gradients
within 1e-7 relative (max-norm) of PyTorch's autograd; float32 in gives float32 out,
within 1e-4 relative.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import sympy as sp

from symgrad.backends.codegen import load_module
from symgrad.calculus.conv_form import Correlate, CorrInputGrad, CorrWeightGrad
from symgrad.calculus.index_arithmetic import InRange
from symgrad.errors import SpecError
from symgrad.frontend.spec import loads_spec
from symgrad.ir import layers as L
from symgrad.ir.conv import Conv, Flatten, Pool
from symgrad.pipeline import derive, generate

torch = pytest.importorskip("torch")
TF = torch.nn.functional

ACTS = {"relu": torch.relu, "tanh": torch.tanh, "identity": lambda v: v, "sigmoid": torch.sigmoid}


def torch_loss(layers, loss, params, X, Y):
    """The network in torch.nn.functional, layer by layer (numbered from 1)."""
    cur = torch.as_tensor(X)
    for n, lay in enumerate(layers, start=1):
        if isinstance(lay, Conv):
            conv = TF.conv1d if lay.dims == 1 else TF.conv2d
            b = params.get(f"b{n}")
            cur = conv(
                cur,
                params[f"W{n}"],
                b,
                stride=lay.stride,
                padding=lay.padding,
                dilation=lay.dilation,
            )
            cur = ACTS[lay.activation](cur)
        elif isinstance(lay, Pool):
            pool = getattr(TF, f"{lay.kind}_pool{lay.dims}d")
            stride = lay.kernel if lay.stride is None else lay.stride
            cur = pool(cur, lay.kernel, stride=stride, padding=lay.padding)
        elif isinstance(lay, Flatten):
            cur = cur.flatten(1)
        else:
            cur = cur @ params[f"W{n}"].T + params[f"b{n}"]
            if lay.activation == "softmax":
                assert loss == "cross_entropy"
                return TF.cross_entropy(cur, torch.as_tensor(Y))
            cur = ACTS[lay.activation](cur)
    return TF.mse_loss(cur, torch.as_tensor(Y))


def torch_grads(layers, loss, params, X, Y):
    tp = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    value = torch_loss(layers, loss, tp, np.asarray(X, np.float64), np.asarray(Y, np.float64))
    value.backward()
    return float(value.detach()), {k: t.grad.numpy() for k, t in tp.items()}


def check_against_torch(layers, shape, loss="mse", batches=(1, 16), seed=0):
    net = L.build("net", shape, layers, loss)
    mod = load_module(generate(net))
    params = {k: v + 0.05 for k, v in mod.init_params(seed).items()}
    rng = np.random.default_rng(seed)
    C = net.size(net.output_width)
    for n in batches:
        X = rng.normal(size=(n, *shape))
        Y = np.eye(C)[rng.integers(0, C, n)] if loss == "cross_entropy" else rng.normal(size=(n, C))
        want_loss, want = torch_grads(layers, loss, params, X, Y)
        got_loss, got = mod.loss_and_grads(params, X, Y)
        assert got_loss == pytest.approx(want_loss, rel=1e-10)
        assert set(got) == set(want)
        for k in want:
            scale = max(np.abs(want[k]).max(), 1e-12)
            err = np.abs(got[k] - want[k]).max() / scale
            assert err <= 1e-7, (k, n, err)
        # float32 in, float32 out, close to the float64 reference
        p32 = {k: v.astype(np.float32) for k, v in params.items()}
        l32, g32 = mod.loss_and_grads(p32, X.astype(np.float32), Y.astype(np.float32))
        assert l32 == pytest.approx(want_loss, rel=1e-4)
        for k in want:
            assert g32[k].dtype == np.float32, k
            scale = max(np.abs(want[k]).max(), 1e-12)
            assert np.abs(g32[k] - want[k]).max() / scale <= 1e-4, k
        # the forward pass alone agrees with loss_and_grads' (and leaves inputs alone)
        X0 = X.copy()
        assert mod.forward(params, X).shape == (n, C)
        np.testing.assert_array_equal(X, X0)
    return net, mod


CASES = {
    "conv2d-3x3": ([1, 6, 6], [Conv(3, 3, activation="relu"), Flatten(), L.Dense(2)]),
    "conv2d-stride2-pad1-nonsquare": (
        [2, 7, 6],
        [Conv(4, (3, 2), stride=2, padding=1, activation="tanh"), Flatten(), L.Dense(3)],
    ),
    "conv2d-one-channel-1x1": ([1, 3, 3], [Conv(1, 1), Flatten(), L.Dense(2, "sigmoid")]),
    "conv2d-stack-no-bias": (
        [2, 6, 6],
        [
            Conv(3, 2, activation="relu"),
            Conv(2, (2, 3), stride=(1, 2), padding=(1, 0), bias=False, activation="tanh"),
            Flatten(),
            L.Dense(2),
        ],
    ),
    "conv1d-stride2-pad1": (
        [3, 9],
        [Conv(2, 3, stride=2, padding=1, dims=1), Flatten(), L.Dense(2)],
    ),
    "conv1d-width1-channels": (
        [1, 5],
        [Conv(1, 2, activation="relu", dims=1), Flatten(), L.Dense(1)],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_conv_matches_torch(case):
    shape, layers = CASES[case]
    check_against_torch(layers, shape)


def test_cnn_with_softmax_cross_entropy_matches_torch():
    layers = [Conv(4, 3, activation="relu"), Pool("max", 2), Flatten(), L.Dense(3, "softmax")]
    check_against_torch(layers, [1, 8, 8], "cross_entropy")


def test_layers_are_numbered_by_position_with_torch_layouts():
    net = L.build("n", [2, 8, 9], [Conv(5, (3, 2)), Pool("max", 2), Flatten(), L.Dense(4)], "mse")
    assert net.param_names == ("W1", "b1", "W4", "b4")
    shapes = {p.name: net.shape(p) for p in net.params}
    assert shapes["W1"] == (5, 2, 3, 2)  # (out_channels, in_channels, kh, kw), as nn.Conv2d
    assert shapes["b1"] == (5,)
    assert shapes["W4"] == (4, 5 * 3 * 4)  # conv: 6 x 8, pool: 3 x 4


def test_derivation_is_a_transposed_correlation():
    net = L.build("n", [1, 5, 5], [Conv(2, 3, stride=2, padding=1), Flatten(), L.Dense(1)], "mse")
    d = derive(net)
    dx = d.step("dx")
    assert dx.component.has(InRange)  # the range condition of the solved kernel index
    assert not dx.component.has(sp.KroneckerDelta)
    assert isinstance(dx.matrix, CorrInputGrad)
    assert d.step("dW1").matrix.has(CorrWeightGrad)
    assert d.forward[0].matrix.has(Correlate)
    assert [str(i) for i in dx.indices] == ["c", "h", "w"]


SPEC = """
name = "cnn"
input = [1, 8, 8]
loss = "cross_entropy"

[[layer]]
type = "conv2d"
channels = 4
kernel = 3
activation = "relu"

[[layer]]
type = "maxpool2d"
kernel = 2

[[layer]]
type = "flatten"

[[layer]]
units = 10
activation = "softmax"
"""


def test_toml_conv_net_builds_the_same_network():
    net = loads_spec(SPEC)
    same = L.build(
        "cnn",
        [1, 8, 8],
        [Conv(4, 3, activation="relu"), Pool("max", 2), Flatten(), L.Dense(10, "softmax")],
        "cross_entropy",
    )
    assert [s.body for s in net.stages] == [s.body for s in same.stages]
    assert net.input_shape == (1, 8, 8)


@pytest.mark.parametrize(
    "change,field,message",
    [
        (("kernel = 3", "kernel = 9"), "layer[1]", "kernel 9 is larger than the height 8"),
        (("kernel = 3", "kernel = [3, 2, 1]"), "layer[1].kernel", "a list of 2"),
        (("kernel = 3", "kernel = 0"), "layer[1].kernel", "at least 1"),
        (("kernel = 3", "kernel = 3\nstride = 2"), "layer[1]", "is not an integer"),
        (("channels = 4", "channels = 2.5"), "layer[1].channels", "positive integer"),
        (("channels = 4", "chanels = 4"), "layer[1].chanels", "did you mean 'channels'"),
        (("input = [1, 8, 8]", "input = [1, 8, 8, 8]"), "input", "got 4 entries"),
        (('type = "flatten"', 'type = "flatten"\nunits = 3'), "layer[3].units", "unknown key"),
        (('type = "flatten"\n', 'type = "dense"\nunits = 3\n'), "layer[3]", "add a flatten layer"),
        (("kernel = 2", "kernel = 2\npadding = 2"), "layer[2]", "at most half the kernel"),
    ],
)
def test_bad_conv_specs_are_one_line_errors(change, field, message):
    text = SPEC.replace(*change, 1)
    assert text != SPEC
    with pytest.raises(SpecError) as exc:
        loads_spec(text, file="cnn.toml")
    line = exc.value.line() if hasattr(exc.value, "line") else str(exc.value)
    assert "\n" not in line
    assert field in line, line
    assert message in line, line


def test_generated_conv_code_has_no_python_loops_over_samples_or_pixels():
    src = generate(loads_spec(SPEC))
    body = src.split("def loss_and_grads", 1)[1]
    assert "for " not in body.split("return value, {", 1)[0]
    assert "_windows(" in src and "_max_pool_grad(" in src
    assert "INPUT_SIZE = (1, 8, 8)" in src


def test_documents_show_the_correlation_and_its_transpose():
    from symgrad.documents.render import render

    tex = render(derive(loads_spec(SPEC)), "latex")
    assert r"W^{[1]} \star" in tex
    assert r"\le" in tex  # range conditions of the transposed correlation
    assert "z^{[1]}_{chw}" in tex


def test_large_batches_take_the_blocked_im2col_path():
    """Above 2**16 window elements the windows are copied per kernel offset: same numbers."""
    layers = [Conv(3, 3, stride=2, padding=1, activation="relu"), Flatten(), L.Dense(2)]
    check_against_torch(layers, [2, 9, 9], batches=(300,))


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed")
def test_generated_conv_module_is_ruff_clean(tmp_path):
    layers = [
        Conv(3, (3, 2), stride=2, padding=1, activation="tanh"),
        Pool("max", 2, stride=1),
        Pool("avg", (1, 3)),
        Flatten(),
        L.Dense(2, "softmax"),
    ]
    path = tmp_path / "cnn.py"
    path.write_text(generate(L.build("cnn", [2, 7, 6], layers, "cross_entropy")))
    for cmd in (["check"], ["format", "--check", "--diff"]):
        res = subprocess.run(
            ["ruff", *cmd, "--isolated", "--no-cache", str(path)], capture_output=True, text=True
        )
        assert res.returncode == 0, res.stdout + res.stderr


SPEC_1D = """
name = "seq"
input = [2, 9]
loss = "mse"

[[layer]]
type = "conv1d"
channels = 3
kernel = 3
stride = 2
padding = 1
activation = "tanh"

[[layer]]
type = "avgpool1d"
kernel = 1

[[layer]]
type = "flatten"

[[layer]]
units = 2
"""


def test_toml_conv1d_and_avgpool1d_build_the_python_api_network():
    net = loads_spec(SPEC_1D)
    layers = [
        Conv(3, 3, stride=2, padding=1, activation="tanh", dims=1),
        Pool("avg", 1, dims=1),
        Flatten(),
        L.Dense(2),
    ]
    same = L.build("seq", [2, 9], layers, "mse")
    assert [s.body for s in net.stages] == [s.body for s in same.stages]
    check_against_torch(layers, [2, 9])


def test_cli_verify_and_derive_a_conv_spec(tmp_path, capsys):
    from symgrad.cli import main

    spec = tmp_path / "cnn.toml"
    spec.write_text(SPEC)
    assert main(["verify", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "W1" in out
    doc = tmp_path / "d.md"
    assert main(["derive", str(spec), "--to", "markdown", "-o", str(doc)]) == 0
    assert r"\star" in doc.read_text()
    module = tmp_path / "cnn.py"
    assert main(["codegen", str(spec), "-o", str(module), "--optimizer", "adam"]) == 0
    assert main(["verify", str(spec), "--module", str(module)]) == 0


def test_conv_spec_on_every_target_and_hvp():
    # (values and gradients of conv nets on every target: tests/test_targets_conv.py)
    from symgrad.pipeline import generate_code

    for target in ("numpy", "torch", "jax", "cupy"):
        code = generate_code(loads_spec(SPEC), target=target, hvp=True)
        assert "def hvp(" in code and "_correlate_input_grad" in code
