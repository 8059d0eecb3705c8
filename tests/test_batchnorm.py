"""``batchnorm`` in training mode: the one layer that couples the samples.

Its component form carries the sample index (``a2[s, i]``) and sums over the batch; the
backward pass collects a term from every sample. Checked against PyTorch's own
``F.batch_norm(..., training=True)`` written by hand here (and through the independent
reference of ``verify``), in float64 and float32, at several batch sizes and widths, through
every code-generation target and the Hessian-vector product.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import sympy as sp

import symgrad as sg
from symgrad import BatchNorm, Dense, LayerNorm, build
from symgrad.backends.codegen import load_module
from symgrad.cli import main
from symgrad.errors import SpecError
from symgrad.frontend.spec import loads_spec
from symgrad.pipeline import derive, generate_code, render_document
from symgrad.verify.verify import random_targets, rel_error, verify_network

TOL = 1e-7

BN_TOML = """
name = "bn_net"
input = 4
loss = "cross_entropy"

[[layer]]
units = 5

[[layer]]
type = "batchnorm"

[[layer]]
units = 3
activation = "relu"

[[layer]]
units = 3
activation = "softmax"
"""


def bn_relu_net(width: int = 5):
    """dense -> batchnorm -> relu -> dense -> softmax + cross-entropy."""
    return build(
        "bn_relu",
        4,
        [Dense(width), BatchNorm(), Map_relu(), Dense(3, "softmax")],
        "cross_entropy",
    )


def Map_relu():
    """relu as a layer of its own (the built-in activation's expression, as a map)."""
    from symgrad import Map, a, i, x
    from symgrad.ir.ops import ACTIVATIONS

    return Map(ACTIVATIONS["relu"].xreplace({x: a[i]}), name="relu")


def bn_mse_net(width: int):
    """dense(width) -> batchnorm -> dense(2, tanh), mse (odd widths: 1, 3)."""
    return build("bn_w", 3, [Dense(width, "tanh"), BatchNorm(), Dense(2, "tanh")], "mse")


def point(net, batch: int, seed: int = 0, shift: float = 0.0):
    rng = np.random.default_rng(seed)
    params = {
        p.name: rng.uniform(-0.6, 0.6, net.shape(p)) + (1.0 if p.init == "ones" else 0.0)
        for p in net.params
    }
    X = rng.normal(0.0, 1.0, (batch, net.size(net.input_width))) + shift
    return params, X, random_targets(net, batch, rng)


def torch_loss(net, params, X, Y):
    """The network written by hand in torch (F.batch_norm in training mode)."""
    torch = pytest.importorskip("torch")
    TF = torch.nn.functional
    cur = torch.as_tensor(X)
    for st in net.stages:
        if st.label == "dense":
            cur = cur @ params[st.params[0].name].T + params[st.params[1].name]
        elif st.label == "batchnorm":
            g, b = (params[p.name] for p in st.params)
            cur = TF.batch_norm(cur, None, None, g, b, training=True, eps=1e-5)
        elif st.label == "relu":
            cur = torch.relu(cur)
        elif st.label == "tanh":
            cur = torch.tanh(cur)
        elif st.label == "softmax":
            return TF.cross_entropy(cur, torch.as_tensor(Y))
        else:
            raise AssertionError(st.label)
    return TF.mse_loss(cur, torch.as_tensor(Y))


def torch_grads(net, params, X, Y):
    torch = pytest.importorskip("torch")
    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    value = torch_loss(net, leaves, X, Y)
    value.backward()
    return float(value.detach()), {k: t.grad.numpy() for k, t in leaves.items()}


def max_errors(net, batch: int, seed: int = 0, shift: float = 0.0):
    mod = load_module(generate_code(net), f"bn_{net.name}_{batch}")
    params, X, Y = point(net, batch, seed, shift)
    value, grads = mod.loss_and_grads(params, X, Y)
    ref_value, ref = torch_grads(net, params, X, Y)
    errs = {k: rel_error(grads[k], ref[k])[1] for k in ref}
    return rel_error(value, ref_value)[1], errs


# -- the IR, the spec and the API ------------------------------------------------------


def test_batchnorm_is_one_stage_carrying_the_sample_index():
    net = loads_spec(BN_TOML, file="bn.toml")
    (bn,) = [s for s in net.stages if s.sample is not None]
    assert bn.label == "batchnorm" and bn.layer == 2
    assert [p.name for p in bn.params] == ["gamma2", "beta2"]
    assert [p.init for p in bn.params] == ["ones", "zeros"]
    assert dict(bn.attrs) == {"norm": "batchnorm", "eps": 1e-5, "training": True}
    # every other stage keeps the batch implicit
    assert all(s.sample is None for s in net.stages if s is not bn)
    assert sg.BatchNorm is BatchNorm


def test_spec_rejects_unknown_keys_of_batchnorm():
    bad = BN_TOML.replace('type = "batchnorm"', 'type = "batchnorm"\nmomentum = 0.1')
    with pytest.raises(SpecError, match="momentum"):
        loads_spec(bad, file="bn.toml")


def test_batch_size_symbol_is_reserved():
    spec = BN_TOML.replace("input = 4\n", "input = 4\nsizes = { N = 5 }\n")
    with pytest.raises(SpecError, match="N"):
        loads_spec(spec, file="bn.toml")


# -- the derivation ----------------------------------------------------------------------


def test_derivation_shows_the_sample_index_and_the_sums_over_the_batch():
    d = derive(loads_spec(BN_TOML, file="bn.toml"))
    delta = d.step("delta1")
    assert [str(i) for i in delta.indices] == ["s", "i"]
    text = " ".join(render_document(d, to="text").split())  # wrapped to the terminal
    assert "a2[s, i] = " in text
    assert "mu[i] = (sum_s (z1[s, i]))/N" in text  # the batch mean, named
    assert "sum_t sum_k (da2[t, k]*d(a2[t, k])/d(z1[s, i]))" in text  # the chain rule
    # the textbook backward: centred on the batch mean, the sum of the upstream over the batch
    assert "delta1[s, i] = dL/dz1[s, i]" in text
    flat = " ".join(text.split())  # the text is wrapped at the terminal's width
    assert (
        "(gamma2[i]/sqrt(sigma2[i] + eps))*(da2[s, i] - mean_t(da2[t, i]) - "
        "mean_u(da2[u, i]*xhat[u, i])*xhat[s, i])" in flat
    )
    # parameter gradients sum over the samples in the component form itself
    assert str(d.step("dbeta2").component) == "Sum(da2[t, p], (t, 0, N - 1))"
    md = render_document(d, to="markdown")
    assert r"\sum_{t=1}^{N}" in md


def test_summary_batched_lines_are_arrays_of_their_entries():
    """The batched summary writes the batch-norm lines, which only have a component form,
    as the arrays of their entries (``[...]_(s, i)``): a matrix on the left is never equal
    to one entry on the right, and the entries read lower-case arrays, never A[t, p]."""
    d = derive(loads_spec(BN_TOML, file="bn.toml"))
    text = render_document(d, to="text")
    summary = " ".join(text[text.index("Summary: the backward pass as computed") :].split())
    assert "dL/dbeta2 = [sum_t (da2[t, p])]_(p)" in summary
    assert "dL/dgamma2 = [N*mean_u(da2[u, p]*xhat[u, p])]_(p)" in summary
    assert "delta1 = [(gamma2[i]/sqrt(sigma2[i] + eps))*(da2[s, i]" in summary
    assert summary.split("delta1 = ")[1].split("dL/dW1")[0].rstrip().endswith("]_(s, i)")
    tex = render_document(d, to="latex")
    tex = tex[tex.index("the backward pass as computed") :]
    assert "\\right]_{s i}" in tex and "\\right]_{p}" in tex
    assert "A^{[2]}_{t" not in tex  # an entry is in component notation


def test_derivation_time_does_not_blow_up():
    start = time.perf_counter()
    net = build(
        "bn_deep",
        4,
        [Dense(6, "tanh"), BatchNorm(), Dense(6, "tanh"), BatchNorm(), Dense(6), BatchNorm()]
        + [Dense(3, "softmax")],
        "cross_entropy",
    )
    d = derive(net)
    generate_code(d)
    assert time.perf_counter() - start < 60
    assert sum(s.stage is not None and s.stage.sample is not None for s in d.steps) >= 8


def test_latex_compiles(tmp_path):
    from test_render_doc import _pdflatex

    log = _pdflatex(
        render_document(derive(loads_spec(BN_TOML, file="bn.toml")), to="latex"), tmp_path
    )
    assert "Overfull \\hbox" not in log


# -- the generated NumPy code against PyTorch --------------------------------------------


@pytest.mark.parametrize("batch", [2, 16])
def test_float64_matches_torch(batch):
    pytest.importorskip("torch")
    loss_err, errs = max_errors(bn_relu_net(), batch)
    assert loss_err <= TOL
    assert max(errs.values()) <= TOL, errs


@pytest.mark.parametrize("width", [1, 3])
def test_odd_widths(width):
    pytest.importorskip("torch")
    loss_err, errs = max_errors(bn_mse_net(width), 7, seed=width)
    assert loss_err <= TOL
    assert max(errs.values()) <= TOL, errs


def test_inputs_far_from_zero():
    """A batch mean much larger than its spread: the gradient is centred on the mean."""
    pytest.importorskip("torch")
    loss_err, errs = max_errors(bn_mse_net(3), 8, seed=3, shift=50.0)
    assert loss_err <= TOL
    assert max(errs.values()) <= 1e-6, errs


def test_spec_network_matches_torch():
    pytest.importorskip("torch")
    net = loads_spec(BN_TOML, file="bn.toml")
    loss_err, errs = max_errors(net, 9, seed=5)
    assert loss_err <= TOL
    assert max(errs.values()) <= TOL, errs


def test_batch_coupling_every_sample_moves_every_gradient():
    """Finite differences of the whole batch loss in one input sample: the gradient of the
    other samples' outputs flows back through the batch statistics."""
    net = bn_mse_net(3)
    mod = load_module(generate_code(net), "bn_fd")
    params, X, Y = point(net, 5, seed=2)
    base = mod.loss(params, X, Y)
    X2 = X.copy()
    X2[0] += 1e-3
    # the output of sample 1 changes when sample 0 does (coupling) ...
    assert not np.allclose(mod.forward(params, X)[1], mod.forward(params, X2)[1])
    # ... and the loss change matches the parameter gradients' directional derivative
    _, g = mod.loss_and_grads(params, X, Y)
    V = {k: np.random.default_rng(1).normal(size=v.shape) for k, v in params.items()}
    h = 1e-6
    plus = mod.loss({k: params[k] + h * V[k] for k in params}, X, Y)
    minus = mod.loss({k: params[k] - h * V[k] for k in params}, X, Y)
    fd = (plus - minus) / (2 * h)
    assert abs(fd - sum(float(np.sum(g[k] * V[k])) for k in params)) <= 1e-7 * max(1, abs(fd))
    assert np.isfinite(base)


def test_float32_in_float32_out():
    pytest.importorskip("torch")
    net = bn_relu_net()
    mod = load_module(generate_code(net), "bn_f32")
    params, X, Y = point(net, 8, seed=1)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    value, grads = mod.loss_and_grads(p32, X.astype(np.float32), Y.astype(np.float32))
    out = mod.forward(p32, X.astype(np.float32))
    assert out.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())
    ref_value, ref = torch_grads(net, params, X, Y)
    assert abs(value - ref_value) <= 1e-5 * abs(ref_value)
    for k in ref:  # b1's gradient is 0 (the batch mean removes any bias): an absolute floor
        assert rel_error(grads[k], ref[k], floor=1e-2)[1] <= 1e-4, k


def test_vectorised_no_python_loop_over_samples():
    code = generate_code(loads_spec(BN_TOML, file="bn.toml"))
    body = code[code.index("def loss_and_grads") :]
    assert "for " not in body.split("return value")[0]


# -- other targets and second order ------------------------------------------------------


def test_torch_target_matches_torch():
    torch = pytest.importorskip("torch")
    net = bn_relu_net()
    mod = load_module(generate_code(net, target="torch"), "bn_torch")
    params, X, Y = point(net, 6, seed=2)
    ref_value, ref = torch_grads(net, params, X, Y)
    tp = {k: torch.tensor(v) for k, v in params.items()}
    value, grads = mod.loss_and_grads(tp, torch.tensor(X), torch.tensor(Y))
    assert rel_error(float(value), ref_value)[1] <= TOL
    for k in ref:
        assert rel_error(grads[k].numpy(), ref[k])[1] <= TOL, k
    # autograd through the derived VJP (NetworkFunction) and the loss (LossFunction)
    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    mod.loss(leaves, torch.tensor(X), torch.tensor(Y)).backward()
    for k in ref:
        assert rel_error(leaves[k].grad.numpy(), ref[k])[1] <= TOL, k
    Xt = torch.tensor(X, requires_grad=True)
    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    TF = torch.nn.functional
    TF.cross_entropy(torch.log(mod.forward(leaves, Xt)), torch.tensor(Y)).backward()
    Xr = torch.tensor(X, requires_grad=True)
    refl = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    torch_loss(net, refl, Xr, Y).backward()
    assert rel_error(Xt.grad.numpy(), Xr.grad.numpy())[1] <= TOL
    for k in ref:
        assert rel_error(leaves[k].grad.numpy(), refl[k].grad.numpy())[1] <= TOL, k


def test_jax_target_matches_torch():
    jax = pytest.importorskip("jax")
    pytest.importorskip("torch")
    jax.config.update("jax_enable_x64", True)
    net = bn_relu_net()
    mod = load_module(generate_code(net, target="jax"), "bn_jax")
    params, X, Y = point(net, 6, seed=3)
    ref_value, ref = torch_grads(net, params, X, Y)
    value, grads = jax.jit(mod.loss_and_grads)(params, X, Y)
    assert rel_error(float(value), ref_value)[1] <= TOL
    g2 = jax.grad(lambda p: mod.loss(p, X, Y))(params)
    for k in ref:
        assert rel_error(np.asarray(grads[k]), ref[k])[1] <= TOL, k
        assert rel_error(np.asarray(g2[k]), ref[k])[1] <= TOL, k


def test_hvp_matches_torch():
    torch = pytest.importorskip("torch")
    net = bn_relu_net()
    mod = load_module(generate_code(net, hvp=True), "bn_hvp")
    params, X, Y = point(net, 5, seed=4)
    names = list(params)
    shapes = [params[k].shape for k in names]
    sizes = [int(np.prod(s)) for s in shapes]

    def loss(theta):
        parts = dict(zip(names, theta.split(sizes), strict=True))
        p = {k: t.reshape(s) for (k, t), s in zip(parts.items(), shapes, strict=True)}
        return torch_loss(net, p, X, Y)

    flat = torch.cat([torch.tensor(params[k]).reshape(-1) for k in names])
    V = {k: np.random.default_rng(7).normal(size=params[k].shape) for k in names}
    v = torch.cat([torch.tensor(V[k]).reshape(-1) for k in names])
    _, want = torch.autograd.functional.hvp(loss, flat, v)
    got = mod.hvp(params, X, Y, V)
    for k, w, s in zip(names, want.split(sizes), shapes, strict=True):
        assert rel_error(got[k], w.reshape(s).numpy())[1] <= TOL, k


# -- verify, the command line, the graph -------------------------------------------------


def test_verify_passes_on_a_batchnorm_net():
    pytest.importorskip("torch")
    net = loads_spec(BN_TOML, file="bn.toml")
    report = verify_network(net, batch=4, against=("torch",))
    assert report.ok, report.format()
    assert "torch" in {r.reference for r in report.rows}


def test_verify_refuses_a_batch_of_one():
    with pytest.raises(SpecError, match="batch of at least 2"):
        verify_network(loads_spec(BN_TOML, file="bn.toml"), batch=1)


def test_cli_derive_codegen_verify_graph(tmp_path, capsys):
    spec = tmp_path / "bn.toml"
    spec.write_text(BN_TOML, encoding="utf-8")
    assert main(["derive", str(spec), "-o", str(tmp_path / "d.txt")]) == 0
    assert "sum_t" in (tmp_path / "d.txt").read_text(encoding="utf-8")
    assert main(["codegen", str(spec), "-o", str(tmp_path / "m.py")]) == 0
    graph = tmp_path / "g.dot"
    assert main(["derive", str(spec), "-o", str(tmp_path / "e.md"), "--graph", str(graph)]) == 0
    assert '"z1" -> "a2"' in graph.read_text(encoding="utf-8")
    assert main(["verify", str(spec), "--batch", "1"]) == 2
    assert "batch of at least 2" in capsys.readouterr().err


def test_a_quantity_feeding_batchnorm_and_another_layer_is_refused():
    from symgrad import Map, i

    a1 = sp.IndexedBase("a1", real=True)
    net = build(
        "bn_skip",
        3,
        [Dense(4, "tanh"), BatchNorm(), Map(sg.a[i] + a1[i]), Dense(2)],
        "mse",
    )
    with pytest.raises(sg.DerivationError, match="couples the samples"):
        derive(net)


def test_layernorm_unchanged_alongside():
    """The per-sample norms keep their implicit batch (no sample index)."""
    net = build("ln", 3, [Dense(4), LayerNorm(), BatchNorm(), Dense(2)], "mse")
    d = derive(net)
    assert [s.sample is None for s in net.stages] == [True, True, False, True]
    assert [str(i) for i in d.step("da2").indices] == ["s", "i"]


# -- check: a learner's batch-norm backward, graded on whole batches ----------------------

T_MEAN = "sum(z1[t, i], t)/N"
T_VAR = f"sum((z1[v, i] - {T_MEAN})**2, v)/N"
T_XHAT_S = f"(z1[s, i] - {T_MEAN})/sqrt({T_VAR} + 1e-5)"
T_XHAT_U = f"(z1[u, i] - {T_MEAN})/sqrt({T_VAR} + 1e-5)"
T_DELTA1 = (
    f"gamma2[i]/sqrt({T_VAR} + 1e-5) * (da2[s, i] - sum(da2[t, i], t)/N"
    f" - {T_XHAT_S} * sum(da2[u, i]*{T_XHAT_U}, u)/N)"
)


@pytest.mark.parametrize(
    ("grad", "formula", "ok"),
    [
        ("delta1", T_DELTA1, True),  # the textbook form, written with the batch's sums
        ("delta1", f"gamma2[i]/sqrt({T_VAR} + 1e-5) * (da2[s, i] - sum(da2[t, i], t)/N)", False),
        ("delta1", "gamma2[i]/sqrt(1e-5 + 1) * da2[s, i]", False),  # as if per sample
        ("dbeta2", "sum(da2[t, p], t)", True),
        ("dbeta2", "da2[s, p]", None),  # s is not free in a gradient summed over the batch
        ("dW3", "delta3[p]*a2[q]", True),  # per-sample steps of the same network
        ("db1", "delta1[p]", True),  # identically zero in exact arithmetic (ATOL)
    ],
)
def test_check_grades_batch_norm_steps(grad, formula, ok):
    from symgrad.verify.check import check_formula

    net = loads_spec(BN_TOML, file="bn.toml")
    if ok is None:
        with pytest.raises(SpecError, match="unknown index 's'"):
            check_formula(net, grad, formula)
        return
    result = check_formula(net, grad, formula)
    assert result.ok is ok, result.format()
    if grad == "delta1":
        assert "batch statistics" in result.meaning and result.indices == ("s", "i")


def test_check_batch_norm_in_matrix_notation_is_one_line(tmp_path, capsys):
    spec = tmp_path / "bn.toml"
    spec.write_text(BN_TOML)
    assert main(["check", str(spec), "--grad", "delta1", "--formula", "da2 gamma2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "component form, with the sample index s" in err


STEPS = """import numpy as np

delta4 = (a4 - Y) / N
dW4 = delta4.T @ a3
db4 = delta4.sum(axis=0)
da3 = delta4 @ W4
delta3 = da3 * (z3 > 0)
dW3 = delta3.T @ a2
db3 = delta3.sum(axis=0)
da2 = delta3 @ W3
mu = z1.mean(axis=0)
var = ((z1 - mu) ** 2).mean(axis=0)
xhat = (z1 - mu) / np.sqrt(var + 1e-5)
dgamma2 = (da2 * xhat).sum(axis=0)
dbeta2 = da2.sum(axis=0)
delta1 = gamma2 / np.sqrt(var + 1e-5) * (da2 - da2.mean(axis=0) - xhat * (da2 * xhat).mean(axis=0))
dW1 = delta1.T @ X
db1 = delta1.sum(axis=0)
"""


def test_check_steps_on_a_batch_norm_backward(tmp_path, capsys):
    spec = tmp_path / "bn.toml"
    spec.write_text(BN_TOML)
    right = tmp_path / "right.py"
    right.write_text(STEPS)
    assert main(["check", str(spec), "--steps", str(right)]) == 0
    assert "OK: all" in capsys.readouterr().out
    wrong = tmp_path / "wrong.py"  # the xhat term of the batch-norm backward forgotten
    wrong.write_text(STEPS.replace(" - xhat * (da2 * xhat).mean(axis=0))", ")"))
    assert main(["check", str(spec), "--steps", str(wrong)]) == 1
    assert "(delta1) is the first wrong step" in capsys.readouterr().out


# -- a user's component-form map may couple the samples too --------------------------------

U = sp.Symbol("u", integer=True)
GAIN = sp.IndexedBase("g", real=True)
MEAN = sp.Sum(sg.a[sg.t, sg.i], (sg.t, 0, sg.N - 1)) / sg.N
VAR = sp.Sum((sg.a[U, sg.i] - MEAN) ** 2, (U, 0, sg.N - 1)) / sg.N


def test_user_map_with_the_sample_index_verifies():
    """Batch norm written by hand in component form: the same stage structure (the sample
    index read from the expression, not from a layer name), checked by verify against the
    reference evaluating its component form, and equal to the built-in layer."""
    pytest.importorskip("torch")
    body = GAIN[sg.i] * (sg.a[sg.s, sg.i] - MEAN) / sp.sqrt(VAR + sp.Float(1e-5))
    mine = build(
        "mine", 3, [Dense(4, "tanh"), sg.Map(body, name="mybn", params={GAIN: (sg.n,)})], "mse"
    )
    assert mine.stages[2].sample == sg.s
    report = verify_network(mine, batch=5)
    assert report.ok, report.format()
    builtin = build("builtin", 3, [Dense(4, "tanh"), BatchNorm()], "mse")
    params, X, Y = point(builtin, 6, seed=8)
    params["beta2"] = np.zeros_like(params["beta2"])  # the hand-written map has no shift
    got = load_module(generate_code(mine), "bn_mine").loss_and_grads(
        {"W1": params["W1"], "b1": params["b1"], "g2": params["gamma2"]}, X, Y
    )
    want = load_module(generate_code(builtin), "bn_builtin").loss_and_grads(params, X, Y)
    assert rel_error(got[0], want[0])[1] <= 1e-12
    assert rel_error(got[1]["g2"], want[1]["gamma2"])[1] <= 1e-10
    assert rel_error(got[1]["W1"], want[1]["W1"])[1] <= 1e-10


def test_user_map_centring_on_the_batch():
    pytest.importorskip("torch")
    net = build("centre", 3, [Dense(4, "tanh"), sg.Map(sg.a[sg.s, sg.i] - MEAN), Dense(2)], "mse")
    assert verify_network(net, batch=3).ok


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (sg.a[sg.i] - MEAN, "takes a sample index first"),
        (sg.a[sg.s, sg.i] * GAIN[sg.s], "cannot take a sample index"),
    ],
)
def test_user_map_with_the_sample_index_is_validated(body, match):
    with pytest.raises(SpecError, match=match):
        build("bad", 3, [Dense(4), sg.Map(body, params={GAIN: (sg.n,)}), Dense(2)], "mse")


def test_batchnorm_on_the_input_vjp_and_input_gradient():
    """BatchNorm reading x: the input gradient dx (the VJP of the torch and JAX modules) is
    the step through the coupled stage, with the sample index the rows' axis."""
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    net = build("bn_first", 3, [BatchNorm(), Dense(2, "tanh")], "mse")
    loss_err, errs = max_errors(net, 5)
    assert loss_err <= TOL and max(errs.values()) <= TOL, errs
    params, X, _ = point(net, 5, seed=6)
    G = np.random.default_rng(6).normal(size=(5, 2))
    Xr = torch.tensor(X, requires_grad=True)
    p = {k: torch.tensor(v) for k, v in params.items()}
    TF = torch.nn.functional
    a1 = TF.batch_norm(Xr, None, None, p["gamma1"], p["beta1"], training=True, eps=1e-5)
    (torch.tanh(a1 @ p["W2"].T + p["b2"]) * torch.tensor(G)).sum().backward()
    tmod = load_module(generate_code(net, target="torch"), "bn_first_torch")
    Xt = torch.tensor(X, requires_grad=True)
    (tmod.forward(p, Xt) * torch.tensor(G)).sum().backward()
    assert rel_error(Xt.grad.numpy(), Xr.grad.numpy())[1] <= TOL
    jmod = load_module(generate_code(net, target="jax"), "bn_first_jax")
    dx, _ = jmod.vjp(params, X, G)
    assert rel_error(np.asarray(dx), Xr.grad.numpy())[1] <= TOL
