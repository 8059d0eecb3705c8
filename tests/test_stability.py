"""Numbers you can trust: stability decided by structure, never by names.

- The rules of ``calculus/stability.py``, each on its own pattern.
- A map named ``sigmoid`` whose body is another function, followed by ``bce``: loss and
  gradients match PyTorch to 1e-12 relative.
- Renaming every layer and loss of the catalogue gives byte-identical code apart from the
  names; misleading names (``sigmoid``, ``softmax``, ``bce``) change nothing but comments.
- User-written unstable forms are finite and within 1e-6 relative of PyTorch's stable
  reference (``F.softplus``, ``F.log_softmax``, ``F.binary_cross_entropy``) at |logits| up
  to 1e3.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import sympy as sp
from catalogue import catalogue

from symgrad.backends.codegen import load_module
from symgrad.calculus.layout import RowSum
from symgrad.calculus.matrix_form import Vec
from symgrad.calculus.stability import (
    ALL_RULES,
    ClampMin,
    LogCosh,
    LogSumExp,
    Softmax,
    stabilise,
    stabilise_network,
)
from symgrad.frontend.spec import loads_spec
from symgrad.ir import ops as F
from symgrad.pipeline import generate

u, v = sp.symbols("u v", real=True)
U = Vec("u")
A = Vec("a")
Y = Vec("y")

# ---------------------------------------------------------------------------------------
# The rules, one pattern each.


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (sp.log(1 + sp.exp(u)), F.softplus(u)),
        (sp.log(1 + sp.exp(-2 * u)), F.softplus(-2 * u)),
        (sp.log(3 + 2 * sp.exp(u)), sp.log(3) + F.softplus(u + sp.log(sp.Rational(2, 3)))),
        (sp.log(sp.exp(u) + sp.exp(v)), u + F.softplus(v - u)),
        (
            (1 + sp.exp(u)) / (2 + sp.exp(u)),
            (F.sigmoid(u) + F.sigmoid(-u)) / (F.sigmoid(u) + 2 * F.sigmoid(-u)),
        ),
        (sp.sinh(u) * v / sp.cosh(u), sp.tanh(u) * v),
        (1 / (1 + sp.exp(-u)), F.sigmoid(u)),
        (1 / (1 + sp.exp(-2 * u)), F.sigmoid(2 * u)),
        (sp.exp(u) / (1 + sp.exp(u)), F.sigmoid(u)),
        (sp.exp(-u) / (1 + sp.exp(-u)) ** 2, F.sigmoid(u) * F.sigmoid(-u)),
        (sp.log(F.sigmoid(u)), -F.softplus(-u)),
        (sp.log(1 - F.sigmoid(u)), -F.softplus(u)),
        (sp.log(1 / (1 + sp.exp(-u))), -F.softplus(-u)),
        (sp.log(sp.cosh(u)), LogCosh(u)),
        (sp.log(RowSum(sp.exp(U))), LogSumExp(U)),
        (sp.exp(U) / RowSum(sp.exp(U)), Softmax(U)),
        (-sp.exp(U) * RowSum(A) / RowSum(sp.exp(U)), -Softmax(U) * RowSum(A)),
        (sp.sqrt(1 + u**2) - 1, u**2 / (sp.sqrt(1 + u**2) + 1)),
        (1 / sp.sqrt(RowSum(U**2)), 1 / ClampMin(sp.sqrt(RowSum(U**2)))),
        (RowSum(U**2) ** sp.Rational(-3, 2), ClampMin(sp.sqrt(RowSum(U**2))) ** -3),
    ],
)
def test_rule_rewrites_its_pattern(before, after):
    assert sp.simplify(stabilise(before) - after) == 0 or stabilise(before) == after


def test_cancellation_rules_use_log1p_expm1_hypot():
    from sympy.codegen.cfunctions import expm1, hypot, log1p

    assert stabilise(sp.log(1 + u**2)) == log1p(u**2)
    assert stabilise(sp.exp(u) - 1) == expm1(u)
    assert stabilise(1 - sp.exp(u)) == -expm1(u)
    assert stabilise(sp.sqrt(u**2 + v**2)) == hypot(u, v)


def test_bce_shaped_gradient_is_guarded_whatever_its_form():
    g = (Y - 1) / (1 - A) + Y / A
    out = stabilise(g, [r for r in ALL_RULES if r.name == "division-guard"])
    (clamp,) = out.atoms(ClampMin)
    assert sp.expand(clamp.args[0] - A * (1 - A)) == 0
    assert sp.simplify(out.xreplace({clamp: A * (1 - A)}) - g) == 0
    # A denominator that is not a polynomial in one value with roots 0 and 1 is left alone.
    assert not stabilise(Y / (A + 2), ALL_RULES).atoms(ClampMin)


def test_rules_are_identities_numerically():
    rng = np.random.default_rng(0)
    for rule in ALL_RULES:
        assert rule.pattern and rule.stable and rule.hazard, rule.name
    for before in (
        sp.log(1 + sp.exp(u)),
        u * sp.tanh(sp.log(1 + sp.exp(u))),
        sp.exp(-u) / (1 + sp.exp(-u)) ** 2,
        sp.sqrt(1 + u**2) - 1,
    ):
        after = stabilise(before).rewrite(sp.exp)
        for val in rng.normal(0, 3, 5):
            assert float(before.subs(u, val)) == pytest.approx(float(after.subs(u, val)))


def test_stabilise_network_is_identity_when_nothing_matches():
    for net in catalogue().values():
        assert stabilise_network(net) is net


# ---------------------------------------------------------------------------------------
# No dispatch on names.

SIGMOID_NAMED_MAP = """
name = "sigmap"
input = 3
loss = "bce"
[[layer]]
units = 2
[[layer]]
type = "map"
name = "sigmoid"
expr = "1/(1+exp(-2*a[i]))"
"""


def _torch_dense_point(seed: int, n_in: int, units: int, batch: int = 6, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    W = rng.normal(0, 1, (units, n_in))
    b = rng.normal(0, 1, units)
    X = rng.normal(0, 1, (batch, n_in))
    if scale != 1.0:  # logits of magnitude up to ``scale``
        z = X @ W.T + b
        k = scale / np.abs(z).max()
        W, b = W * k, b * k
    return W, b, X, rng


def _rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def test_sigmoid_named_map_with_bce_matches_torch():
    torch = pytest.importorskip("torch")
    mod = load_module(generate(loads_spec(SIGMOID_NAMED_MAP)), "sigmap")
    W, b, X, rng = _torch_dense_point(1, 3, 2)
    Yv = rng.uniform(0, 1, (6, 2))
    value, grads = mod.loss_and_grads({"W1": W, "b1": b}, X, Yv)
    tW = torch.tensor(W, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    z = torch.tensor(X) @ tW.T + tb
    ref = torch.nn.functional.binary_cross_entropy(1 / (1 + torch.exp(-2 * z)), torch.tensor(Yv))
    ref.backward()
    assert value == pytest.approx(ref.item(), rel=1e-12)
    assert _rel(grads["W1"], tW.grad.numpy()) < 1e-12
    assert _rel(grads["b1"], tb.grad.numpy()) < 1e-12


def _renamed(net, stage_names, loss_name):
    stages = tuple(
        dataclasses.replace(s, label=nm, kind="map")
        for s, nm in zip(net.stages, stage_names, strict=True)
    )
    return dataclasses.replace(
        net, stages=stages, loss=dataclasses.replace(net.loss, name=loss_name)
    )


@functools.cache
def _code(name: str) -> str:
    return generate(catalogue()[name])


NAMES = sorted(catalogue())


@pytest.mark.parametrize("name", NAMES)
def test_renaming_every_layer_and_loss_changes_only_the_names(name):
    net = catalogue()[name]
    new = [f"renamed_layer_{k}" for k in range(len(net.stages))]
    code = generate(_renamed(net, new, "renamed_loss"))
    back = code
    for s, nm in zip(net.stages, new, strict=True):
        back = back.replace(f"through {nm}:", f"through {s.label}:")
    back = back.replace("renamed_loss", net.loss.name)
    assert back == _code(name)


def _code_lines(code: str) -> list[str]:
    """The code without comments and docstrings (where names are shown)."""
    body = code.split('"""', 2)[2]
    return [ln for ln in body.splitlines() if not ln.strip().startswith(("#", '"""'))]


@pytest.mark.parametrize("name", NAMES)
def test_misleading_builtin_names_change_nothing(name):
    net = catalogue()[name]
    lies = ["sigmoid", "softmax", "softplus", "dense"]
    stage_names = [lies[k % len(lies)] for k in range(len(net.stages))]
    for loss_name in ("bce", "cross_entropy", "mse"):
        code = generate(_renamed(net, stage_names, loss_name))
        assert _code_lines(code) == _code_lines(_code(name)), loss_name


# ---------------------------------------------------------------------------------------
# User-written unstable forms at |logits| up to 1e3, against PyTorch's stable reference.


def _dense_spec(activation: str, loss: str = '"mse"', extra: str = "") -> str:
    return f"""
name = "user_form"
input = 3
loss = {loss}
[[layer]]
units = 3
activation = {activation}
{extra}
"""


def _torch_forms(torch):
    Fn = torch.nn.functional
    return {
        "softplus": (
            _dense_spec('{ name = "usoftplus", expr = "log(1 + exp(x))" }'),
            lambda z, Yt: Fn.mse_loss(Fn.softplus(z), Yt),
        ),
        "mish": (
            _dense_spec('{ name = "umish", expr = "x*tanh(log(1+exp(x)))" }'),
            lambda z, Yt: Fn.mse_loss(z * torch.tanh(Fn.softplus(z)), Yt),
        ),
        "tanh_bce": (
            _dense_spec('{ name = "tsig", expr = "0.5*tanh(x) + 0.5" }', '"bce"'),
            lambda z, Yt: Fn.binary_cross_entropy(0.5 * torch.tanh(z) + 0.5, Yt),
        ),
        "log_softmax": (
            _dense_spec(
                '"identity"',
                extra='[[layer]]\ntype = "map"\nexpr = "a[i] - log(sum(exp(a[j]), j))"',
            ),
            lambda z, Yt: Fn.mse_loss(Fn.log_softmax(z, dim=1), Yt),
        ),
        "user_sigmoid_bce": (
            _dense_spec('{ name = "usig", expr = "1/(1 + exp(-x))" }', '"bce"'),
            lambda z, Yt: Fn.binary_cross_entropy_with_logits(z, Yt),
        ),
    }


FORMS = ["softplus", "mish", "tanh_bce", "log_softmax", "user_sigmoid_bce"]


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e3])
@pytest.mark.parametrize("form", FORMS)
def test_user_forms_are_finite_and_match_torch_at_large_logits(form, scale):
    torch = pytest.importorskip("torch")
    spec, ref_loss = _torch_forms(torch)[form]
    mod = load_module(generate(loads_spec(spec)), f"form_{form}")
    W, b, X, rng = _torch_dense_point(2, 3, 3, scale=scale)
    Yv = rng.uniform(0, 1, (6, 3))
    # No overflow, no invalid operation, no division by zero anywhere in the module.
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value, grads = mod.loss_and_grads({"W1": W, "b1": b}, X, Yv)
    tW = torch.tensor(W, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    ref = ref_loss(torch.tensor(X) @ tW.T + tb, torch.tensor(Yv))
    ref.backward()
    assert np.isfinite(value) and all(np.isfinite(g).all() for g in grads.values())
    assert value == pytest.approx(ref.item(), rel=1e-6)
    assert _rel(grads["W1"], tW.grad.numpy()) < 1e-6
    assert _rel(grads["b1"], tb.grad.numpy()) < 1e-6


def test_log_softmax_backward_is_shifted():
    spec = _dense_spec(
        '"identity"', extra='[[layer]]\ntype = "map"\nexpr = "a[i] - log(sum(exp(a[j]), j))"'
    )
    backward = generate(loads_spec(spec)).split("# Backward pass")[1]
    assert "np.exp(" not in backward  # the forward's shifted exponential is reused


def test_normalising_map_without_eps_matches_torch_normalize_even_at_zero():
    torch = pytest.importorskip("torch")
    spec = _dense_spec(
        '"identity"', extra='[[layer]]\ntype = "map"\nexpr = "a[i] / sqrt(sum(a[j]**2, j))"'
    )
    mod = load_module(generate(loads_spec(spec)), "normalize")
    W, b, X, rng = _torch_dense_point(4, 3, 3)
    b = np.zeros(3)
    X[0] = 0.0  # a row whose pre-activation is exactly 0: its norm is 0
    Yv = rng.uniform(0, 1, (6, 3))
    value, grads = mod.loss_and_grads({"W1": W, "b1": b}, X, Yv)
    tW = torch.tensor(W, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    z = torch.tensor(X) @ tW.T + tb
    ref = torch.nn.functional.mse_loss(torch.nn.functional.normalize(z, dim=1), torch.tensor(Yv))
    ref.backward()
    assert np.isfinite(value) and all(np.isfinite(g).all() for g in grads.values())
    assert value == pytest.approx(ref.item(), rel=1e-12)
    assert _rel(grads["W1"], tW.grad.numpy()) < 1e-9
    assert _rel(grads["b1"], tb.grad.numpy()) < 1e-9


def test_cross_entropy_needs_a_softmax_body_not_a_softmax_name():
    from catalogue import SOFTMAX_MAP

    from symgrad import Dense, Map, build
    from symgrad.errors import SpecError

    net = build("ce_map", 3, [Dense(4, "tanh"), Map(SOFTMAX_MAP, name="probs")], "cross_entropy")
    code = generate(net)
    assert "_logsumexp" in code or "np.log(t" in code  # log-softmax, shifted by the maximum
    with pytest.raises(SpecError, match="softmax"):
        build("liar", 3, [Dense(4, "tanh"), Map(2 * SOFTMAX_MAP, name="softmax")], "cross_entropy")


@pytest.mark.parametrize(("dtype", "tol"), [(np.float64, 1e-15), (np.float32, 1e-6)])
def test_generated_sigmoid_keeps_relative_digits_in_both_tails(dtype, tol):
    """``(1 + tanh(x/2))/2`` rounds to 0 below x ~ -37 (relative error 1): the helper is
    ``1/(1 + exp(-x))`` with exp's argument capped below overflow, a few ulp everywhere."""
    import warnings

    import mpmath as mp

    mod = load_module(generate(catalogue()["seed"]), "sigmoid_helper")
    x = np.linspace(-700, 700, 2801).astype(dtype)
    x = np.concatenate([x, np.array([-1e30, -1e4, -90, -30, 0, 1e-8, 30, 1e4, 1e30], dtype)])
    with mp.workdps(40):
        ref = np.array([float(1 / (1 + mp.exp(-mp.mpf(float(v))))) for v in x])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning at either end
        got = mod._sigmoid(x.copy())
        inplace = x.copy()
        assert mod._sigmoid(inplace, out=inplace) is inplace  # the code's out=z1 form
    np.testing.assert_array_equal(inplace, got)
    assert got.dtype == dtype
    normal = ref > np.finfo(dtype).tiny  # below that the float type has no relative digits
    rel = np.abs(got[normal].astype(np.float64) - ref[normal]) / ref[normal]
    assert rel.max() <= tol
    assert (got[~normal] >= 0).all() and (got <= 1).all()
