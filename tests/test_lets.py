"""Named sub-expressions of a map (``let``): parsing and its errors, a map with lets derives
exactly as the same map written out, and the documents write the steps in the names (the
backward pass through the names checked numerically against the derivation)."""

from __future__ import annotations

import functools
import textwrap

import numpy as np
import pytest
import sympy as sp

from symgrad import LayerNorm, Map, RMSNorm, a, build, i, j, n
from symgrad.backends.codegen import load_module
from symgrad.cli import main
from symgrad.documents.lets import K, NamedStage
from symgrad.documents.render import render
from symgrad.frontend.spec import loads_spec
from symgrad.ir.layers import Dense
from symgrad.ir.lets import distinct_dummies
from symgrad.pipeline import derive, generate

L2NORM = a[i] / sp.sqrt(sp.Sum(a[j] ** 2, (j, 0, n - 1)) + sp.Float(1e-6))

HEAD = """\
name = "letnorm"
input = 4
loss = "mse"

[[layer]]
units = 5
activation = "tanh"

[[layer]]
type = "map"
name = "centred"
params = { g = ["n"] }
"""
TAIL = """
[[layer]]
units = 2
"""
LETS = (
    HEAD
    + textwrap.dedent(
        """\
    let = { mu = "sum(a[j], j)/n", var = "sum((a[j] - mu)**2, j)/n" }
    expr = "g[i] * (a[i] - mu) / sqrt(var + 1e-5)"
    """
    )
    + TAIL
)
PLAIN = (
    HEAD
    + textwrap.dedent(
        """\
    expr = "g[i] * (a[i] - sum(a[j], j)/n) / sqrt(sum((a[k] - sum(a[j], j)/n)**2, k)/n + 1e-5)"
    """
    )
    + TAIL
)
#: a name with the free index (x-hat) and one that reads two earlier names
XHAT = (
    HEAD
    + textwrap.dedent(
        """\
    expr = "g[i] * xhat"

    [layer.let]
    mu = "sum(a[j], j)/n"
    var = "sum((a[j] - mu)**2, j)/n"
    xhat = "(a[i] - mu)/sqrt(var + 1e-5)"

    """
    )
    + TAIL
)


@functools.cache
def _module(text: str, tag: str):
    net = loads_spec(text, file=f"{tag}.toml")
    return net, load_module(generate(net), f"lets_{tag}")


def _batch(mod, seed: int = 0):
    rng = np.random.default_rng(seed)
    params = {k: v + rng.normal(0.0, 0.3, v.shape) for k, v in mod.init_params(seed).items()}
    return params, rng.normal(0.0, 1.0, (6, 4)), rng.normal(0.0, 1.0, (6, 2))


# -- parsing -------------------------------------------------------------------------------


def test_lets_are_kept_on_the_stage_in_order_and_substituted_in_the_body():
    net = loads_spec(LETS, file="lets.toml")
    st = net.stages[2]
    assert [s.name for s, _ in st.lets] == ["mu", "var"]
    assert not {s.name for s in st.body.free_symbols} & {"mu", "var"}
    mu = st.lets[0][1]
    assert mu.has(sp.Sum) and st.body.has(mu)  # the definition, in the stage's arrays
    # a sum substituted into a sum over the same index gets a fresh index (no capture)
    var = st.lets[1][1]
    outer = next(s for s in sp.preorder_traversal(var) if isinstance(s, sp.Sum))
    inner = next(s for s in outer.function.atoms(sp.Sum))
    assert outer.limits[0][0] != inner.limits[0][0]


@pytest.mark.parametrize(
    ("let", "field", "words"),
    [
        ('{ j = "a[i]" }', "layer[2].let.j", "index name"),
        ('{ g = "a[i]" }', "layer[2].let.g", "parameter of this map"),
        ('{ sum = "a[i]" }', "layer[2].let.sum", "reserved"),
        ('{ a1 = "a[i]" }', "layer[2].let.a1", "array of the network"),
        ('{ tanh = "a[i]" }', "layer[2].let.tanh", "function name"),
        ('{ _m = "a[i]" }', "layer[2].let._m", "name"),
        ('{ m2 = "a[i]", mu = "sum(a[j], j)/n" }', "layer[2].let.m2", "not used"),
        ("{ mu = 3 }", "layer[2].let.mu", "string"),
        ('{ mu = "__import__(1)" }', "layer[2].let.mu", ""),
        ('{ mu = "var + 1", var = "sum(a[j], j)" }', "layer[2].let.mu", "var"),
        ('"mu"', "layer[2].let", "table"),
    ],
)
def test_bad_lets_are_one_line_errors_with_exit_code_2(tmp_path, capsys, let, field, words):
    text = HEAD + f"let = {let}\n" + 'expr = "g[i] * (a[i] - mu)"\n' + TAIL
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    out = tmp_path / "out.tex"
    code = main(["derive", str(spec), "--to", "latex", "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{spec}: {field}:" in err and words in err
    assert not out.exists()


def test_let_text_is_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    text = HEAD + f"let = {{ mu = \"open('{marker}', 'w')\" }}\n" + 'expr = "g[i]*mu"\n' + TAIL
    with pytest.raises(Exception, match="layer\\[2\\].let.mu"):
        loads_spec(text)
    assert not marker.exists()


# -- numerics ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [LETS, XHAT], ids=["mu_var", "xhat"])
def test_a_map_with_lets_derives_as_the_map_written_out(text):
    """Loss and every gradient equal to the written-out map's (the same derivation), and
    both agree with central differences of the loss (rel. 1e-6)."""
    _, with_lets = _module(text, "lets" if text is LETS else "xhat")
    _, plain = _module(PLAIN, "plain")
    params, X, Y = _batch(with_lets)
    loss_a, grads_a = with_lets.loss_and_grads(params, X, Y)
    loss_b, grads_b = plain.loss_and_grads(params, X, Y)
    assert loss_a == pytest.approx(loss_b, rel=1e-13)
    for key, g in grads_b.items():
        np.testing.assert_allclose(grads_a[key], g, rtol=1e-11, atol=1e-13)
    h = 1e-6
    g2 = params["g2"]
    for pos in range(g2.size):
        up = {**params, "g2": g2.copy()}
        dn = {**params, "g2": g2.copy()}
        up["g2"][pos] += h
        dn["g2"][pos] -= h
        fd = (with_lets.loss_and_grads(up, X, Y)[0] - with_lets.loss_and_grads(dn, X, Y)[0]) / (
            2 * h
        )
        assert grads_a["g2"][pos] == pytest.approx(fd, rel=1e-6, abs=1e-9)


def _evaluate(e: sp.Expr, width: sp.Expr, size: int, values: dict[str, np.ndarray]) -> float:
    """``e`` at concrete values: sums unrolled, arrays read from ``values``."""
    e = e.xreplace({width: sp.Integer(size)}).doit()
    e = e.replace(
        lambda x: isinstance(x, sp.Indexed),
        lambda x: sp.Float(values[str(x.base.label)][int(x.indices[0])]),
    )
    return float(sp.N(e.doit()))


def _named_networks():
    """Networks with a stage that has names: the two spec maps, and the built-in layers
    whose statistics are found by their structure (index ``k`` is also the variance's
    summation index in the norm layers' bodies)."""
    return {
        "mu_var": (lambda: loads_spec(LETS, file="lets.toml"), 2),
        "xhat": (lambda: loads_spec(XHAT, file="lets.toml"), 2),
        "layernorm": (lambda: build("ln", 3, [Dense(5, "tanh"), LayerNorm(), Dense(2)], "mse"), 2),
        "rmsnorm": (lambda: build("rms", 3, [Dense(5, "tanh"), RMSNorm(), Dense(2)], "mse"), 2),
        "l2norm": (lambda: build("l2", 3, [Dense(5, "tanh"), Map(L2NORM), Dense(2)], "mse"), 2),
        "softmax": (lambda: build("sm", 3, [Dense(5, "softmax"), Dense(2)], "mse"), 1),
    }


@pytest.mark.parametrize("case", list(_named_networks()))
def test_the_backward_pass_through_the_names_equals_the_derivation(case):
    """Each name's adjoint substituted into the next, the input's adjoint equals the
    derivation's at random values of every array (rel. 1e-9, every component)."""
    make, at = _named_networks()[case]
    net = make()
    d = derive(net)
    step = next(s for s in d.steps if s.kind == "input" and s.stage is net.stages[at])
    named = NamedStage.of(step.stage)
    assert named is not None
    up = sp.IndexedBase(step.upstream, real=True)
    steps = named.backward(up)
    # substitute the adjoints, last name first, then the names' definitions
    scalars: dict[sp.Basic, sp.Expr] = {}
    indexed: dict[sp.Basic, sp.Expr] = {}

    def substituted(e: sp.Expr) -> sp.Expr:
        e = e.xreplace(scalars)
        for base, value in indexed.items():
            e = e.replace(
                lambda x, b=base: isinstance(x, sp.Indexed) and x.base == b,
                lambda x, v=value: v.xreplace({K: x.indices[0]}),
            )
        return e

    for lhs, _, value, _terms in steps[:-1]:
        if isinstance(lhs, sp.Indexed):
            indexed[lhs.base] = substituted(value)
        else:
            scalars[lhs] = substituted(value)
    # the definitions may sum over the letter of the input's index: renamed apart first
    result = distinct_dummies(named.expand(substituted(steps[-1][2])), frozenset({K}))
    # the derivation's form may read the stage's output (a forward value): written out
    st = step.stage
    theirs_e = step.component.replace(
        lambda x: isinstance(x, sp.Indexed) and x.base == st.out,
        lambda x: distinct_dummies(st.body.xreplace({st.index: x.indices[0]}), frozenset({i})),
    )
    width, size = st.width, 5
    rng = np.random.default_rng(1)
    arrays = {str(x.base.label) for x in theirs_e.atoms(sp.Indexed)}
    arrays |= {str(x.base.label) for x in result.atoms(sp.Indexed)}
    values = {nm: rng.normal(0.0, 1.0, size) for nm in arrays}
    # the textbook form (x-hat, sums as means), where a name is linear in the input
    textbook = named.textbook(step.component, K)
    assert (textbook is not None) == (case in ("xhat", "layernorm")), case
    if textbook is not None:
        textbook = distinct_dummies(named.expand(_plain(textbook, width)), frozenset({K}))
    for k in range(size):
        ours = _evaluate(result.xreplace({K: k}), width, size, values)
        theirs = _evaluate(theirs_e.xreplace({i: k}), width, size, values)
        assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)
        if textbook is not None:
            book = _evaluate(textbook.xreplace({K: k}), width, size, values)
            assert book == pytest.approx(theirs, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("case", ["xhat", "layernorm"])
def test_the_local_derivative_through_x_hat_equals_the_derivation(case):
    """The local derivative written through x-hat (no entry of the input left) equals the
    derivation's at random values, every pair (i, k) (rel. 1e-9)."""
    make, at = _named_networks()[case]
    net = make()
    step = next(s for s in derive(net).steps if s.kind == "input" and s.stage is net.stages[at])
    named = NamedStage.of(step.stage)
    assert named is not None
    through = named.without_input(step.local)
    assert through is not None and not through.has(step.stage.inp)
    ours_e = distinct_dummies(named.expand(_plain(through, step.stage.width)), frozenset({K, i}))
    st = step.stage
    theirs_e = step.local.replace(
        lambda x: isinstance(x, sp.Indexed) and x.base == st.out,
        lambda x: distinct_dummies(st.body.xreplace({st.index: x.indices[0]}), frozenset({i})),
    )
    from symgrad.verify.evaluation import eval_component

    size = 4
    rng = np.random.default_rng(2)
    arrays = {str(x.base.label) for e in (ours_e, theirs_e) for x in e.atoms(sp.Indexed)}
    values = {nm: rng.normal(0.0, 1.0, size) for nm in arrays}
    grid = ({st.width: size}, (i, K), {i: size, K: size})  # every (i, k) at once
    ours, theirs = (eval_component(e, values, *grid) for e in (ours_e, theirs_e))
    assert ours.shape == (size, size)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", ["xhat", "layernorm"])
def test_the_matrix_forms_through_x_hat_equal_the_derivation(case):
    """The per-sample matrix forms the documents write through x-hat (the local Jacobian
    ``diag(gamma/s) - gamma 1^T/(n s) - (gamma xhat) xhat^T/(n s)`` and the backward line
    ``(g gamma - sum(g gamma)/n - xhat sum(g gamma xhat)/n)/s``) read no input, and equal
    the derivation's at one sample's forward values (rel. 1e-12)."""
    from symgrad.calculus.local_matrix import Diag
    from symgrad.calculus.matrix_form import Mat, Vec
    from symgrad.documents.lets import MatrixNames
    from symgrad.verify.evaluation import eval_matrix, run_derivation

    make, at = _named_networks()[case]
    net = make()
    d = derive(net)
    step = next(s for s in d.steps if s.kind == "input" and s.stage is net.stages[at])
    forward = next(f for f in d.forward if f.stage is step.stage)
    names = MatrixNames.of(forward)
    assert names is not None
    definitions = names.definitions("vector")
    rng = np.random.default_rng(3)
    params = {p.name: rng.normal(scale=0.7, size=net.shape(p)) for p in net.params}
    x = rng.normal(size=net.size(net.input_width))
    y = rng.normal(size=net.size(net.output_width))
    _, env = run_derivation(d, params, x, y)
    rows = cols = net.size(step.stage.width)
    env = {**env, **params, "x": x, "I": np.eye(rows, cols)}
    sizes = dict(net.sizes)

    def value(m: sp.Expr) -> np.ndarray:
        for sym, form in reversed(definitions):  # the names written out again
            m = m.xreplace({sym: form})
        m = m.replace(lambda e: isinstance(e, Diag), lambda e: e.args[0] * Mat("I"))
        return np.broadcast_to(eval_matrix(m, env, sizes), (rows, cols))

    inp = Vec(str(step.stage.inp))
    for form in (step.local_matrix, step.matrix):
        through = names.name(form, "vector", through=True)
        assert not through.has(inp), through
        np.testing.assert_allclose(value(through), value(form), rtol=1e-12, atol=1e-14)


def _plain(e: sp.Expr, width: sp.Expr) -> sp.Expr:
    """A textbook display with its means, orderings and factors written as sums again."""
    from symgrad.documents.textbook import Mean, Ordered, Scaled

    rules = (
        (Ordered, lambda *a: sp.Add(*a)),
        (Scaled, lambda c, b: c * b),
        (Mean, lambda b, v: sp.Sum(b, (v, 0, width - 1)) / width),
    )
    for cls, f in rules:
        e = e.replace(lambda a, cls=cls: isinstance(a, cls), lambda a, f=f: f(*a.args))
    return e


# -- documents -----------------------------------------------------------------------------


def test_documents_show_the_names_and_the_steps_through_them():
    d = derive(loads_spec(LETS, file="lets.toml"))
    text = render(d, "text")
    assert "mu = (sum_j (a1[j]))/n_1" in text
    assert "a2[i] = " in text and "/sqrt(var + 1.0e-5)" in text
    assert "dl/dvar = " in text and "dl/dmu = " in text
    tex = render(d, "latex")
    assert r"\mu &= " in tex and r"\mathrm{var}" in tex
    assert r"\frac{\partial \ell}{\partial \mu}" in tex
    md = render(d, "markdown")
    assert r"Through the named sub-expressions ($\mu$, $\mathrm{var}$)" in md
    # the forward pass no longer spells the variance out inside the stage's row
    row = next(line for line in text.splitlines() if line.strip().startswith("a2[i] ="))
    assert "sum" not in row


def test_layernorm_names_its_mean_and_variance():
    net = build("ln", 3, [Dense(4, "tanh"), LayerNorm(), Dense(2)], "mse")
    st = net.stages[2]
    assert [s.name for s, _ in st.lets] == ["mu", "sigma2", "xhat"]
    tex = render(derive(net), "latex")
    assert r"\sigma^2 &= " in tex and r"\frac{\partial \ell}{\partial \sigma^2}" in tex
    assert r"\hat{x}_{i} &= " in tex and "this is the textbook form" in tex
    # the term of dl/dmu through sigma2 sums the deviations from the mean: said, and shown 0
    assert "One term is 0 and drops out" in tex
    assert r"2 n_{1} \mu - 2 \sum_{k=1}^{n_{1}} a^{[1]}_{k}" in tex
    assert r"\operatorname{mean}_{j}\!\left(" in tex
    # the Jacobian's gamma 1^T: the ones vector, never a parenthesised number
    assert r"\mathbf{1}^{\top}" in tex and r"(1)^{\top}" not in tex
    # the layer-by-layer Jacobians read the names too, never the variance spelled out
    text = render(derive(net), "text", width=200)
    j2 = next(line for line in text.splitlines() if line.strip().startswith("J2 = "))
    assert "sqrt(sigma2 + 1.0e-5)" in j2 and "xhat" in j2 and "sum" not in j2
    # the local derivative ends in x-hat, and says which stored values it reads
    flat = " ".join(text.split())
    assert "= (gamma2[i]/sqrt(sigma2 + 1.0e-5))*([i == k] - 1/n_1 - xhat[i]*xhat[k]/n_1)" in flat
    assert "reads the forward values: sigma2, xhat, so the backward pass" in flat


def test_python_api_lets():
    mu = sp.Symbol("mu", real=True)
    net = build(
        "api", 3, [Dense(4), Map(a[i] - mu, lets=((mu, sp.Sum(a[j], (j, 0, n - 1)) / n),))], "mse"
    )
    st = net.stages[1]
    assert st.lets and not st.body.has(mu) and st.body.has(sp.Sum)


def test_a_statistic_is_not_named_over_a_users_own_name():
    """A map that already reads a name ``S`` (here the width its softmax runs over) keeps
    it: the softmax denominator is then left unnamed rather than shown under one letter."""
    width = sp.Symbol("S", integer=True, positive=True)
    softmax = sp.exp(a[i]) / sp.Sum(sp.exp(a[j]), (j, 0, n - 1))
    net = build("clash", 3, [Dense(width), Map(softmax), Dense(2)], "mse", sizes={width: 4})
    assert net.stages[1].lets == ()
    plain = build("plain", 3, [Dense(4), Map(softmax), Dense(2)], "mse")
    assert [s.name for s, _ in plain.stages[1].lets] == ["S"]


def test_a_python_map_whose_inner_sum_reuses_the_outer_index():
    """``Sum((a[j] - Sum(a[j], j)/n)**2, j)``: SymPy reads the inner ``j`` as a new index.
    The map's body gets distinct letters before anything else reads it, so the gradient
    agrees with finite differences, PyTorch and JAX, and the documents render (this once
    gave a wrong gradient for the first layer, or a lowering error)."""
    from symgrad.verify.verify import verify_network

    mu = sp.Sum(a[j], (j, 0, n - 1)) / n
    body = (a[i] - mu) / sp.sqrt(sp.Sum((a[j] - mu) ** 2, (j, 0, n - 1)) / n + sp.Rational(1, 100))
    net = build("shadowed", 3, [Dense(4, "tanh"), Map(body, name="norm"), Dense(2)], "mse")
    report = verify_network(net)
    assert report.ok, report.format()
    assert "sigma2 = (sum_j ((-mu + a1[j])**2))/n_1" in render(derive(net), "text")
