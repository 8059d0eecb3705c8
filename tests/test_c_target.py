"""The C target: ``codegen --target c`` against the NumPy module, strict compilers, sanitizers.

Every catalogue network's C code (through ``symgrad.load_c``) gives the NumPy module's
loss, output and gradients (float64: relative 1e-12 of each gradient's largest entry,
floored at 1e-3 of the largest entry of all for gradients that cancel to zero; float32:
2e-4), compiles with ``-std=c99 -Wall -Wextra -Werror -pedantic``, and runs
clean under AddressSanitizer and UndefinedBehaviorSanitizer with a workspace of exactly
``NET_WORKSPACE_LEN(n)`` numbers (slow suite). A subset runs by default. Without a C
compiler these tests are skipped.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import symgrad.ir.layers as L
from symgrad import BatchNorm, Dense, build
from symgrad.backends.c_emit import generate_c
from symgrad.backends.c_loader import CModule, compiler, load_c
from symgrad.backends.c_names import c_comment, c_names, c_paths, c_string, prefix_of
from symgrad.backends.codegen import load_module
from symgrad.backends.emit import generate
from symgrad.cli import main
from symgrad.ir.conv import Conv, Flatten, Pool
from symgrad.pipeline import derive
from symgrad.verify.verify import VerifyReport, _Local, _verify_module, random_point

sys.path.insert(0, str(Path(__file__).parent))
from catalogue import catalogue  # noqa: E402

pytestmark = pytest.mark.skipif(compiler() is None, reason="no C compiler (cc) on PATH")

STRICT = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")
FAST = ("seed", "softmax_ce", "maxshift", "rmsnorm_pairwise")
NETS = catalogue()
NETS["batchnorm"] = build("bn", 3, [Dense(5, "tanh"), BatchNorm(), Dense(2, "tanh")], "mse")
#: convolution and pooling (2-d and 1-d, stride, padding, dilation, no bias)
CONV = {
    "conv-maxpool": L.build(
        "cm", [2, 8, 9], [Conv(5, (3, 2), activation="relu"), Pool("max", 2), Flatten(), Dense(4)],
        "mse",
    ),
    "conv-sumpool-padded": L.build(
        "cs", [2, 6, 6],
        [Conv(3, 3, padding=1, activation="tanh"), Pool("sum", 2, stride=1, padding=1), Flatten(),
         Dense(3, "softmax")],
        "cross_entropy",
    ),
    "conv-dilated-strided": L.build(
        "cd", [2, 9, 9],
        [Conv(3, 3, dilation=2, activation="tanh"), Pool("max", 3, stride=2, padding=1),
         Flatten(), Dense(2)],
        "mse",
    ),
    "conv-stack-no-bias": L.build(
        "cn", [2, 6, 6],
        [Conv(3, 2, activation="relu"),
         Conv(2, (2, 3), stride=(1, 2), padding=(1, 0), bias=False, activation="tanh"),
         Flatten(), Dense(2)],
        "mse",
    ),
    "conv1d": L.build("c1", [3, 9], [Conv(2, 3, stride=2, padding=1, dims=1), Flatten(),
                                    Dense(2)], "mse"),
}  # fmt: skip
NETS.update(CONV)
ROOT = Path(__file__).resolve().parent.parent


def c_module(net, tmp_path: Path, dtype: str = "float64", **kw) -> CModule:
    code, header = generate_c(derive(net), dtype=dtype, prefix="net")
    (tmp_path / "net.c").write_text(code)
    (tmp_path / "net.h").write_text(header)
    return load_c(tmp_path / "net.c", cflags=STRICT, **kw)


def assert_same(net, cmod: CModule, rtol: float, dtype=np.float64, batch: int = 5) -> None:
    mod = load_module(generate(derive(net)))
    params, X, Y = random_point(net, mod, 0, batch)
    params = {k: v.astype(dtype) for k, v in params.items()}
    X, Y = X.astype(dtype), Y.astype(dtype)
    ref_loss, ref = mod.loss_and_grads(params, X, Y)
    loss, grads = cmod.loss_and_grads(params, X, Y)
    assert loss == pytest.approx(ref_loss, rel=rtol, abs=rtol)
    assert cmod.loss(params, X, Y) == loss
    # relative to each gradient's largest entry; gradients that cancel to zero (a bias
    # before batch norm) compare with a floor: the network's largest gradient entry
    floor = max(float(np.max(np.abs(g))) for g in ref.values()) * 1e-3
    for name, g in ref.items():
        scale = max(float(np.max(np.abs(g))), floor, 1e-300)
        err = float(np.max(np.abs(grads[name] - g))) / scale
        assert err <= rtol, f"{net.name} d{name}: relative error {err:.2e}"
        assert grads[name].dtype == np.dtype(dtype)
    out, ref_out = cmod.forward(params, X), mod.forward(params, X)
    assert np.max(np.abs(out - ref_out)) <= rtol * max(1.0, float(np.max(np.abs(ref_out))))


@pytest.mark.parametrize("name", (*FAST, "batchnorm", "conv-maxpool", "conv1d"))
def test_c_equals_the_numpy_module(name, tmp_path):
    assert_same(NETS[name], c_module(NETS[name], tmp_path), 1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NETS))
def test_every_catalogue_network_float64_and_float32(name, tmp_path):
    net = NETS[name]
    assert_same(net, c_module(net, tmp_path), 1e-12)
    for n in (1, 7):
        assert_same(
            net, c_module(net, tmp_path), 1e-12, batch=max(n, 2 if name == "batchnorm" else 1)
        )
    f32 = tmp_path / "f32"
    f32.mkdir()
    assert_same(net, c_module(net, f32, "float32"), 2e-4, np.float32)


def test_verify_against_torch_through_the_loader(tmp_path):
    """The verification's own checks (API, finite differences, PyTorch autograd) run on the
    C module loaded in Python."""
    pytest.importorskip("torch")
    net = NETS["softmax_ce"]
    report = VerifyReport(net.name, "net.c", "float64", 0, 4)
    _verify_module(
        _Local(c_module(net, tmp_path)), net, report, "float64", ("fd", "torch"), 0, 4, None, 200
    )
    assert report.ok, report.format()
    assert report.n_checks >= 8


HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include "net.h"

static int run(size_t n)
{
    net_real *params = malloc(sizeof(net_real) * NET_PARAM_COUNT);
    net_real *grads = malloc(sizeof(net_real) * NET_PARAM_COUNT);
    net_real *X = malloc(sizeof(net_real) * n * NET_INPUT_SIZE);
    net_real *Y = malloc(sizeof(net_real) * n * NET_OUTPUT_SIZE);
    net_real *out = malloc(sizeof(net_real) * n * NET_OUTPUT_SIZE);
    size_t len = NET_WORKSPACE_LEN(n);
    net_real *work = malloc(sizeof(net_real) * (len ? len : 1));
    net_real loss, again;
    size_t k;
    net_init_params(params, 7);
    for (k = 0; k < NET_PARAM_COUNT; ++k) params[k] += (net_real)0.01 * (net_real)(k % 7);
    for (k = 0; k < n * NET_INPUT_SIZE; ++k) X[k] = (net_real)((double)(k % 11) / 5.0 - 1.0);
    for (k = 0; k < n * NET_OUTPUT_SIZE; ++k) Y[k] = (net_real)(1.0 / NET_OUTPUT_SIZE);
    net_forward(params, X, n, out, work);
    loss = net_loss_and_grads(params, X, Y, n, grads, work);
    again = net_loss(params, X, Y, n, work);
    printf("%zu %.17g %.17g %.17g\n", n, (double)loss, (double)again, (double)grads[0]);
    free(params); free(grads); free(X); free(Y); free(out); free(work);
    return loss == again ? 0 : 1;
}

int main(void)
{
    return run(1) | run(2) | run(9);
}
"""


def sanitized_run(net, tmp_path: Path, dtype: str = "float64") -> str:
    code, header = generate_c(derive(net), dtype=dtype, prefix="net")
    (tmp_path / "net.c").write_text(code)
    (tmp_path / "net.h").write_text(header)
    (tmp_path / "main.c").write_text(HARNESS)
    exe = tmp_path / "run"
    flags = [*STRICT, "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    cmd = [compiler(), *flags, "net.c", "main.c", "-o", str(exe), "-lm"]
    built = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, check=False)
    if built.returncode != 0 and "sanitize" in built.stderr:
        pytest.skip("the compiler has no address/undefined sanitizer")
    assert built.returncode == 0, built.stderr
    res = subprocess.run([str(exe)], capture_output=True, text=True, check=False, timeout=60)
    assert res.returncode == 0 and "runtime error" not in res.stderr, res.stderr
    return res.stdout


@pytest.mark.parametrize("name", ["maxshift", "conv-dilated-strided"])
def test_sanitizers_on_one_network(name, tmp_path):
    out = sanitized_run(NETS[name], tmp_path)
    assert len(out.splitlines()) == 3


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NETS))
def test_sanitizers_on_every_network(name, tmp_path):
    sanitized_run(NETS[name], tmp_path)
    f32 = tmp_path / "f32"
    f32.mkdir()
    sanitized_run(NETS[name], f32, "float32")


def test_backward_statements_carry_their_formulas():
    code, header = generate_c(derive(NETS["softmax_ce"]))
    assert "/* dl/dz2[i] = a2[i] - y[i]  (per sample) */" in code
    mean = "/* delta2 = dL/dz2 = dl/dz2 / n: L is the mean loss over the batch of n samples */"
    assert mean in code  # the one division by the batch size, named as such
    assert "/* dL/dz1[i] = (1 - a1[i]**2)*da1[i] */" in code
    assert "malloc" not in code and "#include <stdlib.h>" not in code
    includes = {line for line in code.splitlines() if line.startswith("#include")}
    assert includes <= {'#include "net.h"', "#include <math.h>", "#include <stddef.h>",
                        "#include <stdint.h>", "#include <cblas.h>"}  # fmt: skip
    assert "NET_WORKSPACE_LEN(max_batch)" in header


def test_init_params_is_deterministic_and_bounded(tmp_path):
    cmod = c_module(NETS["seed"], tmp_path)
    a, b, c = cmod.init_params(0), cmod.init_params(0), cmod.init_params(1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["W1"], c["W1"])
    assert np.abs(a["W1"]).max() <= 1 / np.sqrt(3) and np.abs(a["W1"]).max() > 0.1
    assert cmod.PARAM_NAMES == ("W1", "b1", "W2", "b2")
    assert cmod.PARAM_SHAPES["W1"] == (4, 3)


def test_the_loader_refuses_bad_arguments(tmp_path):
    cmod = c_module(NETS["seed"], tmp_path)
    params = cmod.init_params(0)
    with pytest.raises(ValueError, match="X has shape"):
        cmod.loss_and_grads(params, np.zeros((2, 4)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="params has keys"):
        cmod.loss({"W1": params["W1"]}, np.zeros((2, 3)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="inf or nan"):
        cmod.loss(params, np.full((2, 3), np.nan), np.zeros((2, 2)))


def test_names_and_comments_are_made_safe():
    names = c_names(["int", "exp", "W1", "n", "x y", "net_forward"], "net")
    assert names["W1"] == "W1"
    assert len(set(names.values())) == 6
    for v in names.values():
        assert v.isidentifier() and v not in ("int", "exp", "n", "net_forward")
    assert "*/" not in c_comment("a */ b ??/ c")
    assert c_string('a"\\?é') == r"a\042\134\077\303\251"
    assert prefix_of("out/My-Net.c") == "my_net" and prefix_of("3.c") == "net_3"
    assert c_paths("a/net.h") == (Path("a/net.c"), Path("a/net.h"))


def test_cli_writes_source_and_header(tmp_path, capsys):
    spec = str(ROOT / "examples" / "seed_net.toml")
    out = tmp_path / "seed.c"
    assert main(["codegen", spec, "--target", "c", "-o", str(out), "--dtype", "float32"]) == 0
    code = out.read_text()
    assert "float seed_loss_and_grads(" in code
    assert (tmp_path / "seed.h").read_text().startswith("// symgrad:generated")
    # regenerated over its own files; a file symgrad did not write is left alone
    assert main(["codegen", spec, "--target", "c", "-o", str(out), "--optimizer", "adam"]) == 0
    assert "seed_adam_step" in out.read_text()
    mine = tmp_path / "mine.h"
    mine.write_text("/* my header */\n")
    assert main(["codegen", spec, "--target", "c", "-o", str(tmp_path / "mine.c")]) == 2
    assert mine.read_text() == "/* my header */\n" and not (tmp_path / "mine.c").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-o", "net.py"], "writes a .c and a .h file"),
        (["-o", "net.c", "--hvp"], "--hvp is not available"),
    ],
)
def test_cli_refusals_are_one_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = str(ROOT / "examples" / "seed_net.toml")
    assert main(["codegen", spec, "--target", "c", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_the_digits_cnn_example_compiles_strictly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = str(ROOT / "examples" / "digits_cnn" / "digits_cnn.toml")
    assert main(["codegen", spec, "--target", "c", "-o", "cnn.c", "--optimizer", "sgd"]) == 0
    cmod = load_c(tmp_path / "cnn.c", cflags=STRICT)
    assert len(cmod.INPUT_SHAPE) == 3
    X = np.random.default_rng(0).normal(size=(2, *cmod.INPUT_SHAPE))
    assert cmod.forward(cmod.init_params(0), X).shape == (2, cmod.OUTPUT_SIZE)


EXAMPLE = ROOT / "examples" / "c"


def test_example_files_are_the_generated_ones(tmp_path, monkeypatch):
    (tmp_path / "circle.toml").write_text((EXAMPLE / "circle.toml").read_text())
    monkeypatch.chdir(tmp_path)
    argv = ["codegen", "circle.toml", "--target", "c", "-o", "circle.c", "--optimizer", "adam"]
    assert main(argv) == 0
    for name in ("circle.c", "circle.h"):
        assert (tmp_path / name).read_text() == (EXAMPLE / name).read_text(), name


def test_example_trains_in_plain_c(tmp_path):
    for name in ("main.c", "circle.c", "circle.h"):
        (tmp_path / name).write_text((EXAMPLE / name).read_text())
    cmd = [compiler(), *STRICT, "-O2", "main.c", "circle.c", "-lm", "-o", "train"]
    subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    res = subprocess.run([str(tmp_path / "train")], capture_output=True, text=True, check=True)
    losses = [float(line.split()[-1]) for line in res.stdout.splitlines() if "loss" in line]
    assert len(losses) == 20 and losses[-1] < 0.5 * losses[0]
    assert float(res.stdout.split("accuracy")[1].strip(" %\n")) > 90


@pytest.mark.parametrize(
    ("optimizer", "hyper"),
    [
        ("sgd", {"lr": 0.1, "weight_decay": 0.01}),
        ("momentum", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
        ("adam", {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01}),
    ],
)
def test_optimizer_steps_equal_the_numpy_modules(optimizer, hyper, tmp_path):
    import ctypes

    net = NETS["softmax_ce"]
    code, header = generate_c(derive(net), optimizer=optimizer)
    (tmp_path / "net.c").write_text(code)
    (tmp_path / "net.h").write_text(header)
    cmod = load_c(tmp_path / "net.c", cflags=STRICT)
    mod = load_module(generate(derive(net), optimizer=optimizer))
    params, X, Y = random_point(net, mod, 0, 4)
    state = mod.init_state(params)
    flat = np.concatenate([params[k].reshape(-1) for k in cmod.PARAM_NAMES])
    cstate = np.zeros(2 * flat.size + 1)
    step = getattr(cmod.lib, f"net_{optimizer}_step")
    ptr = ctypes.c_void_p
    for _ in range(3):
        _, grads = mod.loss_and_grads(params, X, Y)
        _, cgrads = cmod.loss_and_grads(cmod._unpack(flat.copy()), X, Y)
        g = np.concatenate([cgrads[k].reshape(-1) for k in cmod.PARAM_NAMES])
        mod.step(params, grads, state, **hyper)
        args = [ptr(flat.ctypes.data), ptr(g.ctypes.data)]
        if optimizer != "sgd":
            args.append(ptr(cstate.ctypes.data))
        step(*args, *(ctypes.c_double(v) for v in hyper.values()))
    want = np.concatenate([params[k].reshape(-1) for k in cmod.PARAM_NAMES])
    assert np.max(np.abs(flat - want)) <= 1e-12 * np.max(np.abs(want))
