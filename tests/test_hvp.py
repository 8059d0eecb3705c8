"""Second order (``codegen --hvp``, ``calculus/forward.py``): the generated ``hvp`` against
``torch.autograd.functional.hvp`` and ``ggnvp`` against J^T H J V assembled with
``torch.func`` (jacrev/hessian), both through the independent PyTorch reference network,
to 1e-7 on the whole catalogue (custom activations, maps and losses included); the
R-operator's rules on their own; ``derive --hvp``.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import sympy as sp
from catalogue import catalogue

from symgrad.backends.codegen import load_module
from symgrad.calculus.forward import tangent
from symgrad.calculus.layout import BMatMul, BOuter, RowSum
from symgrad.calculus.matrix_form import Mat, Vec
from symgrad.cli import main
from symgrad.errors import DerivationError
from symgrad.ir import ops as F
from symgrad.pipeline import generate_code
from symgrad.verify.verify import random_targets, rel_error

NETS = catalogue()
NAMES = sorted(NETS)
TOL = 1e-7


@functools.cache
def generated(name: str, target: str = "numpy"):
    return load_module(generate_code(NETS[name], target=target, hvp=True), f"hvp_{target}_{name}")


def point(name: str, seed: int = 0, batch: int = 4):
    net = NETS[name]
    rng = np.random.default_rng(seed)
    params = {
        p.name: rng.uniform(-0.6, 0.6, net.shape(p)) + (1.0 if p.init == "ones" else 0.0)
        for p in net.params
    }
    X = rng.normal(0.0, 1.0, (batch, net.size(net.input_width)))
    Y = random_targets(net, batch, rng)
    V = {k: rng.normal(0.0, 1.0, v.shape) for k, v in params.items()}
    return params, X, Y, V


def _torch_functions(name, params, X, Y):
    """The reference loss and output as torch functions of the flat parameter vector."""
    torch = pytest.importorskip("torch")
    from symgrad.verify.reference import backend, eval_tensor, reference_forward

    ops = backend("torch")
    net = NETS[name]
    names = list(params)
    shapes = [params[k].shape for k in names]
    sizes = [int(np.prod(s)) for s in shapes]
    Xt, Yt = torch.tensor(X), torch.tensor(Y)

    def unflat(theta):
        return {k: t.reshape(s) for k, t, s in zip(names, theta.split(sizes), shapes, strict=True)}

    def loss(theta):
        return reference_forward(ops, net, unflat(theta), Xt, Yt)[1]

    def output(theta):
        return reference_forward(ops, net, unflat(theta), Xt, Yt)[0]

    def loss_of_output(yhat):
        """The loss as a function of the output (the reference's own loss on yhat)."""
        from symgrad.verify.reference import _BUILTIN_LOSS

        lo = net.loss
        if lo.name == "mse" and lo.elementwise == _BUILTIN_LOSS["mse"]:
            return ((yhat - Yt) ** 2).mean()
        if lo.name == "bce" and lo.elementwise == _BUILTIN_LOSS["bce"]:
            return torch.nn.functional.binary_cross_entropy(yhat, Yt)
        if lo.name == "cross_entropy":
            return -(Yt * torch.log(yhat)).sum(1).mean()
        # A custom loss: its component form evaluated by the reference's tensor evaluator.
        env = {str(net.output): yhat, str(lo.target): Yt}
        sizes = {s: int(v) for s, v in net.sizes.items()}
        per = eval_tensor(ops, lo.body, env, set(env), sizes, (), {}, X.shape[0])
        return per.mean()

    flat = torch.cat([torch.tensor(params[k]).reshape(-1) for k in names])
    return torch, loss, output, loss_of_output, flat, unflat


@pytest.mark.parametrize("name", NAMES)
def test_hvp_matches_torch_autograd(name):
    mod = generated(name)
    params, X, Y, V = point(name)
    torch, loss, _, _, flat, unflat = _torch_functions(name, params, X, Y)
    v = torch.cat([torch.tensor(V[k]).reshape(-1) for k in params])
    _, want = torch.autograd.functional.hvp(loss, flat, v)
    want = unflat(want)
    got = mod.hvp(params, X, Y, V)
    for k in params:
        err = rel_error(got[k], want[k].numpy())[1]
        assert err <= TOL, f"{name}: (H V)[{k}] rel err {err:.2e}"


@pytest.mark.parametrize("name", NAMES)
def test_ggnvp_matches_jacobian_hessian_jacobian(name):
    mod = generated(name)
    params, X, Y, V = point(name, seed=1)
    torch, _, output, loss_of_output, flat, unflat = _torch_functions(name, params, X, Y)
    J = torch.func.jacrev(output)(flat).reshape(-1, flat.numel())
    yhat = output(flat).detach()
    H = torch.func.hessian(loss_of_output)(yhat).reshape(yhat.numel(), yhat.numel())
    v = torch.cat([torch.tensor(V[k]).reshape(-1) for k in params])
    want = unflat(J.T @ (H @ (J @ v)))
    got = mod.ggnvp(params, X, Y, V)
    for k in params:
        err = rel_error(got[k], want[k].numpy())[1]
        assert err <= TOL, f"{name}: (G V)[{k}] rel err {err:.2e}"


@pytest.mark.parametrize("name", ["seed", "softmax_ce", "custom", "bilinear"])
def test_torch_and_jax_targets_agree_with_numpy(name):
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    params, X, Y, V = point(name, seed=2)
    want_h = generated(name).hvp(params, X, Y, V)
    want_g = generated(name).ggnvp(params, X, Y, V)
    tp = {k: torch.tensor(v) for k, v in params.items()}
    tv = {k: torch.tensor(v) for k, v in V.items()}
    th = generated(name, "torch").hvp(tp, X, Y, tv)
    tg = generated(name, "torch").ggnvp(tp, X, Y, tv)
    jh = jax.jit(generated(name, "jax").hvp)(params, X, Y, V)
    for k in params:
        assert rel_error(th[k].numpy(), want_h[k])[1] <= 1e-12
        assert rel_error(tg[k].numpy(), want_g[k])[1] <= 1e-12
        assert rel_error(np.asarray(jh[k]), want_h[k])[1] <= 1e-12


def test_hvp_float32_stays_float32():
    mod = generated("softmax_ce")
    params, X, Y, V = point("softmax_ce")
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    v32 = {k: v.astype(np.float32) for k, v in V.items()}
    assert all(h.dtype == np.float32 for h in mod.hvp(p32, X, Y, v32).values())
    assert all(g.dtype == np.float32 for g in mod.ggnvp(p32, X, Y, v32).values())


# -- the R-operator's rules -----------------------------------------------------------------


U, W = Vec("u"), Mat("W")
RU, RW = Vec("Ru"), Mat("RW")


def test_bilinear_rules():
    t = {U: RU, W: RW}
    assert tangent(BMatMul(U, W, 1), t) == BMatMul(RU, W, 1) + BMatMul(U, RW, 1)
    assert tangent(BOuter(U, Vec("x")), t) == BOuter(RU, Vec("x"))
    assert tangent(RowSum(U * U), t) == RowSum(2 * RU * U)


def test_elementwise_rules_come_from_the_ops():
    t = {U: RU}
    assert sp.simplify(tangent(F.sigmoid(U), t) - RU * F.sigmoid(U) * (1 - F.sigmoid(U))) == 0
    assert tangent(F.relu(U), t) == F.step(U) * RU
    assert tangent(F.step(U), t) == 0  # piecewise constant
    assert sp.simplify(tangent(sp.log(U), t) - RU / U) == 0
    assert tangent(Vec("x") * 3, t) == 0  # constants have no tangent


def test_component_form_rules():
    a, Ra = sp.IndexedBase("a", real=True), sp.IndexedBase("Ra", real=True)
    j = sp.Symbol("j", integer=True)
    n = sp.Symbol("n", integer=True, positive=True)
    expr = sp.Sum(a[j] ** 2, (j, 0, n - 1))
    assert tangent(expr, {a: Ra}) == sp.Sum(2 * a[j] * Ra[j], (j, 0, n - 1))


def test_missing_rule_is_an_error_naming_it():
    class Opaque(sp.Function):
        pass

    with pytest.raises(DerivationError, match="Opaque"):
        tangent(Opaque(U), {U: RU})


# -- command line ---------------------------------------------------------------------------


SPEC = """name = "tiny"
input = 2
loss = "mse"

[[layer]]
units = 3
activation = "tanh"

[[layer]]
units = 1
"""


def test_derive_hvp_shows_the_r_operator(tmp_path, capsys):
    spec = tmp_path / "tiny.toml"
    spec.write_text(SPEC)
    assert main(["derive", str(spec), "--hvp"]) == 0
    text = capsys.readouterr().out
    assert "R{z1}[i] = Rb1[i] + sum_j RW1[i, j]*x[j]" in text
    assert "batched: R{dW1} = Rdelta1.T @ X" in text
    assert main(["derive", str(spec), "--hvp", "--to", "latex"]) == 2


def test_codegen_hvp_and_targets(tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text(SPEC)
    for target in ("numpy", "torch", "jax", "cupy"):
        out = tmp_path / f"tiny_{target}.py"
        assert main(["codegen", str(spec), "-o", str(out), "--target", target, "--hvp"]) == 0
        text = out.read_text()
        assert "def hvp(" in text and "def ggnvp(" in text
    assert main(["codegen", str(spec), "-o", str(tmp_path / "x.py"), "--target", "tf"]) == 2
    bad = ["codegen", str(spec), "-o", str(tmp_path / "y.py"), "--target", "torch"]
    assert main([*bad, "--optimizer", "adam"]) == 2
    assert not (tmp_path / "y.py").exists()
