"""``check --grad`` and ``check --steps`` on conv nets.

Component formulas may read computed positions (``x[q, h + r, w + s]``, zeros outside the
input, as the layer reads it); conv quantities have axes (c, h, w). Matrix notation works
for elementwise steps; a correlation, pooling or (un)flattening written in matrix notation
is one clear error pointing at the component form.
"""

from __future__ import annotations

import numpy as np
import pytest

from symgrad.errors import SpecError
from symgrad.frontend.spec import load_spec
from symgrad.ir import layers as L
from symgrad.ir.conv import Conv, Flatten, Pool
from symgrad.verify.check import check_formula
from symgrad.verify.evaluation import run_derivation

DIGITS = "examples/digits_cnn/digits_cnn.toml"
SEQ = L.build(
    "seq",
    [2, 9],
    [Conv(3, 3, stride=2, padding=1, activation="tanh", dims=1), Flatten(), L.Dense(2)],
    "mse",
)


@pytest.fixture(scope="module")
def digits():
    return load_spec(DIGITS)


@pytest.mark.parametrize(
    "grad,formula",
    [
        ("dW1", "sum(sum(delta1[p, h, w]*x[q, h + r, w + s], h), w)"),
        ("db1", "sum(sum(delta1[p, h, w], h), w)"),
        ("delta1", "da1*[z1 > 0]"),
        ("dW4", "delta4 a3^T"),
        ("da2", "da3[9*c + 3*h + w]"),
    ],
)
def test_right_conv_formulas_pass(digits, grad, formula):
    res = check_formula(digits, grad, formula)
    assert res.ok, res.format()


@pytest.mark.parametrize(
    "grad,formula",
    [
        ("dW1", "sum(delta1[p, w]*x[q, 2*w + r - 1], w)"),
        ("dx", "sum(sum(W1[j, c, w - 2*k + 1]*delta1[j, k], j), k)"),  # zeros outside
        ("delta1", "da1 * (1 - a1**2)"),
        ("delta1", "da1[c, w]*(1 - a1[c, w]**2)"),
        ("da1", "da2[5*c + w]"),
    ],
)
def test_right_conv1d_formulas_pass(grad, formula):
    res = check_formula(SEQ, grad, formula)
    assert res.ok, res.format()


@pytest.mark.parametrize(
    "which,grad,formula,hint",
    [
        ("digits", "dW1", "sum(sum(delta1[p, h, w]*x[q, h + s, w + r], h), w)", None),  # swapped
        ("seq", "dx", "sum(sum(W1[j, c, w + 2*k - 1]*delta1[j, k], j), k)", None),  # not flipped
        ("seq", "delta1", "da1 * (1 - z1**2)", "z1 where a1"),
    ],
)
def test_wrong_conv_formulas_are_wrong(which, grad, formula, hint):
    net = load_spec(DIGITS) if which == "digits" else SEQ
    res = check_formula(net, grad, formula)
    assert not res.ok
    assert res.counterexample is not None
    if hint:
        assert any(hint in h for h in res.hints), res.hints


@pytest.mark.parametrize("grad,formula", [("dW1", "corr(delta1, x)"), ("da2", "unvec(da3)")])
def test_conv_ops_in_matrix_notation_are_one_clear_line(digits, grad, formula):
    with pytest.raises(SpecError) as exc:
        check_formula(digits, grad, formula)
    line = exc.value.line()
    assert "\n" not in line and "component form" in line and f"{grad} is a conv" in line


def test_the_derivations_own_component_forms_pass(digits):
    from symgrad.verify.check import _derivation, formula_text

    net, d = _derivation(digits, 0)
    for st in d.steps:
        if st.grad in ("da1", "dx", "delta1"):  # arg-max, ranges, step: no formula syntax
            continue
        res = check_formula(digits, st.grad, formula_text(st.component))
        assert res.ok, (st.grad, res.format())


def test_component_evaluation_of_conv_nets_matches_generated_code():
    """The derivation evaluated in components (index arithmetic, zero padding, the arg-max
    of max pooling, dilation's divisibility) equals the generated module, per sample."""
    from symgrad.backends.codegen import load_module
    from symgrad.pipeline import derive, generate

    nets = [
        load_spec(DIGITS),
        L.build(
            "n",
            [2, 11],
            [
                Conv(2, 3, stride=2, padding=1, dilation=2, dims=1, activation="tanh"),
                Pool("avg", 1, dims=1),
                Flatten(),
                L.Dense(2),
            ],
            "mse",
        ),
        L.build(
            "n",
            [1, 9, 9],
            [
                Conv(2, 3, padding=1, dilation=(2, 1), activation="relu"),
                Pool("max", 3, stride=1, padding=1),
                Flatten(),
                L.Dense(2),
            ],
            "mse",
        ),
    ]
    for net in nets:
        d = derive(net)
        mod = load_module(generate(net))
        rng = np.random.default_rng(0)
        params = {p.name: rng.uniform(-1, 1, net.shape(p)) for p in net.params}
        x = rng.normal(size=net.input_shape)
        C = net.size(net.output_width)
        y = np.eye(C)[3] if net.loss.name == "cross_entropy" else rng.normal(size=C)
        loss, env = run_derivation(d, params, x.ravel(), y)
        want_loss, grads = mod.loss_and_grads(params, x[None], y[None])
        assert loss == pytest.approx(want_loss, rel=1e-12)
        for k, g in grads.items():
            np.testing.assert_allclose(env["d" + k], g, rtol=1e-10, atol=1e-12)


# -- check --steps on conv nets ---------------------------------------------------------------

SMALL = L.build(
    "cnn",
    [1, 6, 6],
    [Conv(2, 3, activation="tanh"), Pool("max", 2), Flatten(), L.Dense(3, "softmax")],
    "cross_entropy",
)
BY_HAND = """\
delta4 = (yhat - Y) / N
dW4 = delta4.T @ a3
db4 = delta4.sum(axis=0)
da3 = delta4 @ W4
da2 = da3.reshape(N, 2, 2, 2)
up = np.repeat(np.repeat(da2, 2, axis=2), 2, axis=3)
top = np.repeat(np.repeat(a2, 2, axis=2), 2, axis=3)
da1 = up * (a1 == top)
delta1 = da1 * (1 - a1**2)
cols = np.lib.stride_tricks.sliding_window_view(X, (3, 3), axis=(2, 3))
dW1 = np.einsum("nohw,nchwij->ocij", delta1, cols)
db1 = delta1.sum(axis=(0, 2, 3))
padded = np.pad(delta1, ((0, 0), (0, 0), (2, 2), (2, 2)))
win = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
dX = np.einsum("nohwij,ocij->nchw", win, W1[:, :, ::-1, ::-1])
"""


def test_a_hand_written_conv_backward_pass_passes():
    from symgrad.learn.steps import check_steps

    report = check_steps(SMALL, BY_HAND)
    assert report.ok, report.format()
    checked = {v.grad for v in report.verdicts if v.grad}
    assert {"da2", "da1", "delta1", "dW1", "db1", "dx"} <= checked
    assert not report.missing


@pytest.mark.parametrize(
    "change,line,grad,slip",
    [
        (("da1 = up * (a1 == top)", "da1 = up"), 8, "da1", None),  # the error everywhere
        (("W1[:, :, ::-1, ::-1]", "W1"), 15, "dx", "the kernel not flipped"),
        (
            ("W1[:, :, ::-1, ::-1]", "np.flip(np.flip(W1, 2), 3)[:, :, ::-1, ::-1]"),
            15,
            "dx",
            "a flipped kernel",
        ),  # flipped twice: as it is
        (("cols)", "cols)[:, :, ::-1, ::-1]"), 11, "dW1", "a flipped kernel"),
        (("sum(axis=(0, 2, 3))", "sum(axis=(0, 2))"), 12, "db1", "summed over the wrong axes"),
        (("sum(axis=(0, 2, 3))", "sum(axis=0)"), 12, "db1", "the bias gradient summed over"),
        (
            ("da3.reshape(N, 2, 2, 2)", "np.moveaxis(da3.reshape(N, 2, 2, 2), 3, 1)"),
            5,
            "da2",
            "the flatten order",
        ),
        (("delta1 = da1 * (1 - a1**2)", "delta1 = da1 * (1 - z1**2)"), 9, "delta1", "z1"),
    ],
)
def test_slips_in_a_conv_backward_pass_are_found(change, line, grad, slip):
    from symgrad.learn.steps import check_steps

    text = BY_HAND.replace(*change)
    assert text != BY_HAND
    report = check_steps(SMALL, text)
    first = report.first_wrong
    assert first is not None and first.lines[0] == line and first.grad == grad, report.format()
    assert first.should_be and (first.counterexample or first.problem)
    if slip:
        assert first.slip and slip in first.slip, report.format()
    # one slip: every later step is right again (the right value carried on)
    assert [v for v in report.verdicts if v.status == "wrong"] == [first], report.format()


def test_the_conv_slips_are_not_named_on_a_right_dense_step():
    """The conv edits try flips only on arrays with spatial axes, and other axes only
    after the dense slips: a dense bias summed over the wrong axis keeps its own words."""
    from symgrad.learn.steps import check_steps
    from symgrad.learn.steps.conv_slips import flatten_order, kernels

    assert kernels(SMALL) == {"W1": 4} and kernels(SEQ) == {"W1": 3}
    text = BY_HAND.replace("db4 = delta4.sum(axis=0)", "db4 = delta4.sum(axis=1)")
    first = check_steps(SMALL, text).first_wrong
    assert first is not None and first.grad == "db4"
    assert first.slip is not None and "the wrong axis: sum over the samples" in first.slip
    rng = np.random.default_rng(1)
    w = rng.normal(size=(7, 3, 2, 2))
    assert flatten_order([w], [w]) is None  # right: no slip
    assert flatten_order([w[:, ::-1]], [w]) is None  # another permutation: not this slip
    last = w.reshape(7, -1).reshape(7, 2, 2, 3)
    assert "channel-last" in (flatten_order([np.moveaxis(last, -1, 1)], [w]) or "")
    assert "channel-last" in (flatten_order([last], [w]) or "")


@pytest.mark.parametrize(
    "net",
    [
        load_spec(DIGITS),
        SEQ,
        L.build(
            "dil",
            [1, 9, 9],
            [
                Conv(2, 3, stride=2, padding=1, dilation=2, activation="relu"),
                Pool("avg", 2, stride=1),
                Flatten(),
                L.Dense(2),
            ],
            "mse",
        ),
    ],
    ids=["digits", "conv1d", "dilated"],
)
def test_the_derivations_own_conv_steps_pass(net):
    """``derive --form matrix``'s batched lines of a conv net, pasted as a steps file (the
    array operations as the generated code calls them), are right."""
    from symgrad.learn.steps import _should_be, check_steps
    from symgrad.verify.check import _derivation

    _, d = _derivation(net, 0)
    text = "".join(f"{st.grad} = {_should_be(st)}\n" for st in d.steps)
    report = check_steps(net, text)
    assert report.ok, report.format()
    assert all(v.status == "right" for v in report.verdicts), report.format()


def test_the_digits_example_steps_file_passes(capsys):
    from symgrad.cli import main

    rc = main(["check", DIGITS, "--steps", "examples/digits_cnn/backward_steps.py"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "OK: all 9 checked steps are right" in out


@pytest.mark.parametrize("dilation", [1, 2])
def test_verify_symbolic_compares_a_conv_nets_matrix_and_component_forms(dilation):
    """``verify --symbolic``: the tensor form (correlations, pooling, flatten, on one sample
    through the generated code's helpers) against the component form."""
    from symgrad.verify.verify import symbolic_rows

    net = L.build(
        "n",
        [2, 9, 9],
        [
            Conv(3, 3, stride=2, padding=1, dilation=dilation, activation="relu"),
            Pool("max", 2 if dilation == 2 else 1),
            Conv(2, 1, bias=False),
            Pool("avg", 1),
            Flatten(),
            L.Dense(2),
        ],
        "mse",
    )
    rows = symbolic_rows(net)
    assert rows and all(r.ok for r in rows), [(r.name, r.ok) for r in rows]


def test_a_dilated_input_error_in_component_form():
    """Summed over the kernel offset (not the output position) a dilated conv's input error
    needs no division: dx[c, w] = sum_{j, kw} W1[j, c, kw] delta1[j, w - d*kw + p]."""
    net = L.build(
        "d",
        [2, 9],
        [Conv(3, 3, dilation=2, padding=1, dims=1, activation="tanh"), Flatten(), L.Dense(2)],
        "mse",
    )
    right = "sum(sum(W1[j, c, kw]*delta1[j, w - 2*kw + 1], j), kw)"
    assert check_formula(net, "dx", right).ok
    wrong = check_formula(net, "dx", right.replace("w - 2*kw + 1", "w + 2*kw - 1"))
    assert not wrong.ok and wrong.counterexample is not None
    assert check_formula(net, "dW1", "sum(delta1[p, w]*x[q, w + 2*r - 1], w)").ok
