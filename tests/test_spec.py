"""Tests of the parse stage: spec files (TOML or Python) -> Network, and their errors."""

from __future__ import annotations

import json
import os
import tempfile
import textwrap
from pathlib import Path

import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import symgrad
from symgrad import Dense, Map, Network, SpecError, build
from symgrad.frontend.spec import MAX_FILE_BYTES, MAX_LAYERS, load_spec, loads_spec, spec_from_dict
from symgrad.ir.ops import sigmoid

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SPECS = Path(__file__).resolve().parent / "specs"

GOOD = """\
name = "net"
input = 3
loss = "mse"

[[layer]]
units = 4
activation = "sigmoid"
"""

MAP_NET = """\
name = "mapnet"
input = 3
loss = "mse"

[[layer]]
units = 4
activation = "tanh"

[[layer]]
type = "map"
{map}
"""


def write(tmp_path: Path, text: str | bytes, name: str = "spec.toml") -> str:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def with_layer(extra: str) -> str:
    """GOOD with lines added to its (only) layer."""
    return GOOD + extra + "\n"


def with_top(line: str, drop: str | None = None) -> str:
    """GOOD with ``drop``'s line removed and ``line`` added at the top."""
    lines = [ln for ln in GOOD.splitlines() if drop is None or not ln.startswith(f"{drop} =")]
    return line + "\n" + "\n".join(lines) + "\n"


def with_map(body: str) -> str:
    return MAP_NET.format(map=body)


# -- good specs ----------------------------------------------------------------------


def test_seed_net_example_matches_the_python_api() -> None:
    net = load_spec(str(EXAMPLES / "seed_net.toml"))
    assert isinstance(net, Network)
    assert net.name == "seed_net"
    assert net.param_names == ("W1", "b1", "W2", "b2")
    assert net.n_layers == 2
    assert [net.size(s.width) for s in net.stages] == [4, 4, 2, 2]
    assert net.size(net.input_width) == 3
    assert [s.label for s in net.stages] == ["dense", "sigmoid", "dense", "sigmoid"]
    assert net.loss.name == "mse"
    assert net.source == str(EXAMPLES / "seed_net.toml")
    api = build("seed_net", 3, [Dense(4, "sigmoid"), Dense(2, "sigmoid")], "mse")
    assert net.stages == api.stages
    assert net.loss == api.loss
    assert net.sizes == api.sizes


def test_seed_net_fixture_is_the_example() -> None:
    assert (
        load_spec(str(SPECS / "seed_net.toml")).stages
        == load_spec(str(EXAMPLES / "seed_net.toml")).stages
    )


def test_softmax_classifier_example() -> None:
    net = load_spec(str(EXAMPLES / "softmax_classifier.toml"))
    assert net.param_names == ("W1", "b1", "W2", "b2")
    assert [s.label for s in net.stages] == ["dense", "tanh", "dense", "softmax"]
    assert net.loss.name == "cross_entropy"
    assert net.size(net.output_width) == 3


def test_custom_example() -> None:
    net = load_spec(str(EXAMPLES / "custom.toml"))
    # layer 2 is a map without parameters; layer 3 has no bias.
    assert net.param_names == ("W1", "b1", "W3")
    assert [s.label for s in net.stages] == ["dense", "softsign", "l2norm", "dense"]
    assert [s.kind for s in net.stages] == ["affine", "elementwise", "map", "affine"]
    assert net.loss.name == "logcosh"
    assert net.loss.elementwise.doit() == sp.log(sp.cosh(symgrad.yhat_s - symgrad.y_s))
    softsign = net.stages[1]
    z1 = softsign.inp
    assert str(z1) == "z1"
    assert softsign.body == z1[symgrad.i] / (1 + sp.Abs(z1[symgrad.i]))
    l2 = net.stages[2]
    a1, n1 = l2.inp, net.stages[1].width
    assert str(a1) == "a1"
    i, j = symgrad.i, symgrad.j
    expected = a1[i] / sp.sqrt(sp.Sum(a1[j] ** 2, (j, 0, n1 - 1)) + sp.Float("1e-6"))
    assert l2.body == expected
    assert net.size(l2.width) == 5


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_every_example_loads(path: Path) -> None:
    net = load_spec(str(path))
    assert net.is_concrete
    assert net.param_names


def test_map_layer_default_name_and_width(tmp_path: Path) -> None:
    net = load_spec(write(tmp_path, with_map('expr = "tanh(a[i]) * sum(a[k], k)"')))
    stage = net.stages[-1]
    assert stage.label == "map"
    assert stage.width == stage.in_width
    assert net.size(net.output_width) == 4


def test_defaults_and_options(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        name = "opts"
        input = 2
        loss = "bce"

        [[layer]]
        units = 5
        type = "dense"
        activation = "softmax"   # softmax is allowed on any dense layer

        [[layer]]
        units = 3                # activation defaults to identity: no stage of its own
        bias = false

        [[layer]]
        units = 1
        activation = "sigmoid"
        """
    )
    net = load_spec(write(tmp_path, text))
    assert net.param_names == ("W1", "b1", "W2", "W3", "b3")
    assert [s.label for s in net.stages] == ["dense", "softmax", "dense", "dense", "sigmoid"]


def test_custom_activation_and_loss_parse_to_the_placeholders(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        name = "c"
        input = 2
        loss = { name = "sq", expr = "(yhat - y)**2 / 2" }

        [[layer]]
        units = 2
        activation = { name = "sig2", expr = "2*sigmoid(x) - 1" }
        """
    )
    net = load_spec(write(tmp_path, text))
    assert net.loss.elementwise == (symgrad.yhat_s - symgrad.y_s) ** 2 / 2
    z1 = net.stages[1].inp
    assert net.stages[1].body == 2 * sigmoid(z1[symgrad.i]) - 1
    assert net.stages[1].label == "sig2"


def test_cross_entropy_with_softmax_output(tmp_path: Path) -> None:
    text = GOOD.replace('"mse"', '"cross_entropy"').replace('"sigmoid"', '"softmax"')
    assert load_spec(write(tmp_path, text)).loss.name == "cross_entropy"


def test_utf8_bom_and_comments_are_fine(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf# a comment\n" + GOOD.encode()
    assert load_spec(write(tmp_path, data)).name == "net"


def test_loads_spec_and_spec_from_dict() -> None:
    assert loads_spec(GOOD).param_names == ("W1", "b1")
    doc = {"name": "d", "input": 2, "loss": "mse", "layer": [{"units": 1}]}
    assert spec_from_dict(doc).param_names == ("W1", "b1")
    with pytest.raises(SpecError, match=r"^<dict>: input: "):
        spec_from_dict({**doc, "input": 0}, file="<dict>")


def test_any_extension_is_read_as_toml(tmp_path: Path) -> None:
    assert load_spec(write(tmp_path, GOOD, "net.spec")).name == "net"


def test_maximum_sizes_are_accepted(tmp_path: Path) -> None:
    # the largest width, each on its own (together they make a 1e12-element W1: over the
    # parameter budget, see tests/test_safety_budgets.py)
    text = with_top("input = 1000000", drop="input")
    net = load_spec(write(tmp_path, text))
    assert net.size(net.input_width) == 1_000_000
    net = load_spec(write(tmp_path, GOOD.replace("units = 4", "units = 1000000", 1)))
    assert net.size(net.stages[0].width) == 1_000_000


# -- the Python form: path/to/file.py:NAME ----------------------------------------------


def test_python_spec() -> None:
    net = load_spec(f"{SPECS / 'pynet.py'}:net")
    assert net.name == "pynet"
    assert net.param_names == ("W1", "b1", "W3")
    assert [s.label for s in net.stages] == ["dense", "tanh", "l2norm", "dense", "sigmoid"]
    seed = load_spec(f"{SPECS / 'pynet.py'}:seed")
    assert seed.stages == load_spec(str(EXAMPLES / "seed_net.toml")).stages


def test_python_spec_equals_api_in_process() -> None:
    sp_net = Map(symgrad.a[symgrad.i] * 2, name="double")
    net = build("twice", 2, [Dense(3, "relu"), sp_net], "mse")
    assert net.stages[-1].label == "double"


@pytest.mark.parametrize(
    ("spec", "phrase"),
    [
        ("pynet.py:not_a_network", "'not_a_network' is an integer, not a symgrad.Network"),
        ("pynet.py:missing", "no object named 'missing' in this file (networks in this file"),
        ("pynet.py:1abc", "is not a Python name"),
        ("pynet.py", "name the network inside the Python file"),
        ("pynet_raises.py:net", "error while importing: RuntimeError: boom"),
        ("pynet_bad_build.py:net", "unknown activation 'sigmod'"),
        ("does_not_exist.py:net", "cannot read spec file"),
    ],
)
def test_python_spec_errors(spec: str, phrase: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(str(SPECS / spec))
    line = info.value.line()
    assert "\n" not in line
    assert line.startswith(str(SPECS / spec.split(":")[0]) + ": ")
    assert phrase in line


def test_python_spec_with_a_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, '"""A Python spec with a syntax error."""\n\nnet = (\n', "broken.py")
    with pytest.raises(SpecError) as info:
        load_spec(f"{path}:net")
    assert info.value.line().startswith(f"{path}: error while importing (line 3): SyntaxError")


def test_fixture_bad_specs_name_file_and_field() -> None:
    for name, field, phrase in [
        ("bad_activation_typo.toml", "layer[1].activaton", "did you mean 'activation'?"),
        ("bad_cross_entropy.toml", "loss", "needs a softmax activation on the last layer"),
    ]:
        path = str(SPECS / name)
        with pytest.raises(SpecError) as info:
            load_spec(path)
        assert info.value.line().startswith(f"{path}: {field}: ")
        assert phrase in info.value.line()


# -- the catalogue of malformed specs ---------------------------------------------------

L1 = "layer[1]"
BAD: list[tuple[str, str | bytes, str | None, str]] = [
    # names, including code-injection attempts
    (
        "name-injection",
        with_top('name = "x; import os"', "name"),
        "name",
        "not a Python identifier",
    ),
    ("name-keyword", with_top('name = "class"', "name"), "name", "is a Python keyword"),
    ("name-keyword-lambda", with_top('name = "lambda"', "name"), "name", "Python keyword"),
    ("name-underscore", with_top('name = "__init__"', "name"), "name", "must not start with '_'"),
    ("name-empty", with_top('name = ""', "name"), "name", "must not be empty"),
    ("name-int", with_top("name = 3", "name"), "name", "must be a string, got an integer"),
    ("name-unicode", with_top('name = "nét"', "name"), "name", "not a Python identifier"),
    ("name-newline", with_top('name = "a\\nimport os"', "name"), "name", "not a Python identifier"),
    ("name-long", with_top(f'name = "{"n" * 65}"', "name"), "name", "too long"),
    ("name-digit", with_top('name = "1net"', "name"), "name", "not a Python identifier"),
    # input
    ("input-bool", with_top("input = true", "input"), "input", "got a boolean (true)"),
    ("input-zero", with_top("input = 0", "input"), "input", "positive integer, got 0"),
    ("input-string", with_top('input = "3"', "input"), "input", "got a string ('3')"),
    ("input-float", with_top("input = 3.0", "input"), "input", "got a float"),
    ("input-huge", with_top("input = 1000001", "input"), "input", "too large"),
    ("input-date", with_top("input = 1979-05-27", "input"), "input", "got a date"),
    (
        "input-array",
        with_top("input = [3]", "input"),
        "input",
        "[channels, width] or [channels, height, width]",
    ),
    # top-level structure
    ("missing-loss", with_top("", "loss"), "loss", "missing required key 'loss'"),
    ("missing-name", with_top("", "name"), "name", "missing required key 'name'"),
    ("missing-input", with_top("", "input"), "input", "missing required key 'input'"),
    ("missing-layer", 'name = "n"\ninput = 3\nloss = "mse"\n', "layer", "missing required key"),
    ("unknown-top-key", with_top("inputs = 3"), "inputs", "unknown key 'inputs' (did you mean"),
    ("unknown-top-key-far", with_top("optimizer = 'adam'"), "optimizer", "unknown key"),
    ("layer-empty", 'name = "n"\ninput = 3\nloss = "mse"\nlayer = []\n', "layer", "at least one"),
    (
        "layer-table",
        'name = "n"\ninput = 3\nloss = "mse"\n[layer]\nunits = 2\n',
        "layer",
        "[[layer]]",
    ),
    (
        "layer-int",
        'name = "n"\ninput = 3\nloss = "mse"\nlayer = 3\n',
        "layer",
        "array of [[layer]]",
    ),
    (
        "layer-not-table",
        'name = "n"\ninput = 3\nloss = "mse"\nlayer = [1]\n',
        L1,
        "must be a table",
    ),
    # dense layers
    ("units-negative", GOOD.replace("units = 4", "units = -1"), f"{L1}.units", "got -1"),
    ("units-float", GOOD.replace("units = 4", "units = 2.5"), f"{L1}.units", "got a float (2.5)"),
    ("units-bool", GOOD.replace("units = 4", "units = false"), f"{L1}.units", "got a boolean"),
    ("units-huge", GOOD.replace("units = 4", "units = 10_000_000"), f"{L1}.units", "too large"),
    ("units-missing", GOOD.replace("units = 4", ""), f"{L1}.units", "missing required key"),
    (
        "activation-typo-key",
        with_layer('activaton = "relu"'),
        f"{L1}.activaton",
        "unknown key 'activaton' (did you mean 'activation'?)",
    ),
    ("units-typo-key", with_layer("unit = 3"), f"{L1}.unit", "did you mean 'units'?"),
    (
        "activation-unknown",
        GOOD.replace('"sigmoid"', '"sigmod"'),
        f"{L1}.activation",
        "unknown activation 'sigmod' (did you mean 'sigmoid'?",
    ),
    ("activation-int", GOOD.replace('"sigmoid"', "1"), f"{L1}.activation", "must be a name or"),
    (
        "activation-dotted-name",
        GOOD.replace('"sigmoid"', '{ name = "os.system", expr = "x" }'),
        f"{L1}.activation.name",
        "not a Python identifier",
    ),
    (
        "activation-keyword-name",
        GOOD.replace('"sigmoid"', '{ name = "import", expr = "x" }'),
        f"{L1}.activation.name",
        "Python keyword",
    ),
    (
        "activation-builtin-name",
        GOOD.replace('"sigmoid"', '{ name = "relu", expr = "x" }'),
        f"{L1}.activation.name",
        "clashes with the built-in activation",
    ),
    (
        "activation-import",
        GOOD.replace(
            '"sigmoid"', """{ name = "evil", expr = "__import__('os').system('rm -rf /')" }"""
        ),
        f"{L1}.activation.expr",
        "not allowed",
    ),
    (
        "activation-dunder",
        GOOD.replace('"sigmoid"', '{ name = "evil", expr = "x.__class__" }'),
        f"{L1}.activation.expr",
        "attribute access",
    ),
    (
        "activation-lambda",
        GOOD.replace('"sigmoid"', '{ name = "e", expr = "lambda: 0" }'),
        f"{L1}.activation.expr",
        "unexpected character ':'",
    ),
    (
        "activation-uses-y",
        GOOD.replace('"sigmoid"', '{ name = "e", expr = "x*y" }'),
        f"{L1}.activation.expr",
        "unknown name 'y'",
    ),
    (
        "activation-extra-key",
        GOOD.replace('"sigmoid"', '{ name = "e", expr = "x", code = "import os" }'),
        f"{L1}.activation.code",
        "unknown key 'code'",
    ),
    (
        "activation-no-expr",
        GOOD.replace('"sigmoid"', '{ name = "e" }'),
        f"{L1}.activation.expr",
        "missing required key 'expr'",
    ),
    (
        "activation-expr-int",
        GOOD.replace('"sigmoid"', '{ name = "e", expr = 3 }'),
        f"{L1}.activation.expr",
        "must be a string",
    ),
    (
        "activation-huge-power",
        GOOD.replace('"sigmoid"', '{ name = "e", expr = "x**100000" }'),
        f"{L1}.activation.expr",
        "exponent",
    ),
    ("bias-string", with_layer('bias = "yes"'), f"{L1}.bias", "must be true or false"),
    ("bias-int", with_layer("bias = 1"), f"{L1}.bias", "got an integer"),
    ("dense-with-expr", with_layer('expr = "a[i]"'), f"{L1}.expr", "only allowed on a map layer"),
    ("type-unknown", with_layer('type = "conv"'), f"{L1}.type", "unknown layer type 'conv'"),
    ("type-int", with_layer("type = 1"), f"{L1}.type", "must be a string"),
    # map layers
    ("map-undeclared-index", with_map('expr = "a[f]"'), "layer[2].expr", "undeclared index 'f'"),
    ("map-units-unknown", with_map('expr = "a[i]"\nunits = "h"'), "layer[2].units", "unknown size"),
    ("map-units-zero", with_map('expr = "a[i]"\nunits = 0'), "layer[2].units", "positive integer"),
    (
        "map-units-mismatch",
        with_map('expr = "a[i]"\nunits = 5'),
        "layer[2].expr",
        "index i runs 0..4 but axis 0 of a1 has positions 0..3",
    ),
    ("map-bias", with_map('expr = "a[i]"\nbias = false'), "layer[2].bias", "not allowed on a map"),
    (
        "map-activation",
        with_map('expr = "a[i]"\nactivation = "relu"'),
        "layer[2].activation",
        "not allowed on a map layer",
    ),
    ("map-no-expr", with_map('name = "m"'), "layer[2].expr", "missing required key 'expr'"),
    ("map-unbound-j", with_map('expr = "a[j]"'), "layer[2].expr", "not declared free"),
    ("map-uses-x-bare", with_map('expr = "x * a[i]"'), "layer[2].expr", "must be subscripted"),
    ("map-uses-h", with_map('expr = "a[i] / g"'), "layer[2].expr", "unknown name 'g'"),
    ("map-later-output", with_map('expr = "a3[i]"'), "layer[2].expr", "unknown name 'a3'"),
    ("map-own-output", with_map('expr = "a2[i]"'), "layer[2].expr", "unknown name 'a2'"),
    ("map-x-width", with_map('expr = "a[i] + x[i]"'), "layer[2].expr", "axis 0 of x has positions"),
    (
        "map-x-two-indices",
        with_map('expr = "sum(x[i, j], j)"'),
        "layer[2].expr",
        "takes 1 indices, got 2",
    ),
    (
        "map-params-type",
        with_map('expr = "a[i]"\nparams = 3'),
        "layer[2].params",
        "must be a table",
    ),
    (
        "map-params-shape-type",
        with_map('expr = "g * a[i]"\nparams = { g = 2 }'),
        "layer[2].params.g",
        "a shape must be an array",
    ),
    (
        "map-params-width",
        with_map('expr = "g[i] * a[i]"\nparams = { g = ["w"] }'),
        "layer[2].params.g[0]",
        "unknown width 'w'",
    ),
    (
        "map-params-dim-zero",
        with_map('expr = "g[i] * a[i]"\nparams = { g = [0] }'),
        "layer[2].params.g[0]",
        "positive integer",
    ),
    (
        "map-params-reserved",
        with_map('expr = "a[i]"\nparams = { x = ["n"] }'),
        "layer[2].params.x",
        "reserved",
    ),
    (
        "map-params-unused",
        with_map('expr = "a[i]"\nparams = { g = ["n"] }'),
        "layer[2].params.g",
        "not used",
    ),
    (
        "map-params-arity",
        with_map('expr = "sum(g[i, j] * a[j], j)"\nparams = { g = ["n"] }'),
        "layer[2].expr",
        "takes 1 indices, got 2",
    ),
    (
        "map-params-shape-mismatch",
        with_map('expr = "sum(g[i, j] * a[j], j)"\nparams = { g = ["n", 2] }'),
        "layer[2].expr",
        "axis 1 of g2 has size 2",
    ),
    (
        "map-scalar-param-subscripted",
        with_map('expr = "T[i] * a[i]"\nparams = { T = [] }'),
        "layer[2].expr",
        "cannot be subscripted",
    ),
    ("map-max-no-index", with_map('expr = "max(a[i], j)"'), "layer[2].expr", "does not use index"),
    ("map-max-over-i", with_map('expr = "max(a[i], i)"'), "layer[2].expr", "free index"),
    ("sizes-type", with_top("sizes = 3"), "sizes", "must be a table"),
    ("sizes-value", with_top("sizes = { h = 0 }"), "sizes.h", "positive integer"),
    ("sizes-float", with_top("sizes = { h = 2.5 }"), "sizes.h", "got a float"),
    ("sizes-reserved", with_top("sizes = { n = 3 }"), "sizes.n", "reserved"),
    ("sizes-layer-name", with_top("sizes = { a1 = 3 }"), "sizes.a1", "reserved"),
    ("units-unknown-size", GOOD.replace("units = 4", 'units = "h"'), f"{L1}.units", "unknown size"),
    ("penalty-type", with_top("penalty = 3"), "penalty", "must be a string"),
    ("penalty-unknown", with_top('penalty = "V9[p, q]**2"'), "penalty", "unknown name 'V9'"),
    ("penalty-arity", with_top('penalty = "W1[p]**2"'), "penalty", "takes 2 indices, got 1"),
    ("penalty-bare", with_top('penalty = "W1**2"'), "penalty", "must be subscripted"),
    ("penalty-sum", with_top('penalty = "sum(W1[p, q], p)"'), "penalty", "free index"),
    ("penalty-mixed-axes", with_top('penalty = "W1[p, p]**2"'), "penalty", "different sizes"),
    ("map-sum-over-i", with_map('expr = "sum(a[i], i)"'), "layer[2].expr", "free index"),
    ("map-keyword-name", with_map('expr = "a[i]"\nname = "for"'), "layer[2].name", "keyword"),
    (
        "map-injection-name",
        with_map('expr = "a[i]"\nname = "m(); os"'),
        "layer[2].name",
        "not a Python identifier",
    ),
    ("map-eval", with_map("expr = \"eval('1')\""), "layer[2].expr", "not allowed"),
    ("map-subscript-call", with_map('expr = "a[i]()"'), "layer[2].expr", "unexpected"),
    ("map-typo-key", with_map('exp = "a[i]"'), "layer[2].exp", "did you mean 'expr'?"),
    # losses
    ("loss-unknown", GOOD.replace('"mse"', '"mae"'), "loss", "unknown loss 'mae'"),
    ("loss-typo", GOOD.replace('"mse"', '"cross_entropi"'), "loss", "did you mean 'cross_entropy'"),
    ("loss-int", GOOD.replace('"mse"', "2"), "loss", "must be a name or"),
    (
        "cross-entropy-no-softmax",
        GOOD.replace('"mse"', '"cross_entropy"'),
        "loss",
        "needs a softmax activation on the last layer",
    ),
    (
        "cross-entropy-after-map",
        with_map('expr = "a[i]"').replace('"mse"', '"cross_entropy"'),
        "loss",
        "needs a softmax activation on the last layer",
    ),
    (
        "loss-uses-x",
        GOOD.replace('"mse"', '{ name = "l", expr = "x - y" }'),
        "loss.expr",
        "unknown name 'x'",
    ),
    (
        "loss-injection",
        GOOD.replace('"mse"', '{ name = "l", expr = "yhat; import os" }'),
        "loss.expr",
        "unexpected character ';'",
    ),
    (
        "loss-keyword-name",
        GOOD.replace('"mse"', '{ name = "def", expr = "y" }'),
        "loss.name",
        "Python keyword",
    ),
    (
        "loss-builtin-name",
        GOOD.replace('"mse"', '{ name = "mse", expr = "y" }'),
        "loss.name",
        "clashes with the built-in loss",
    ),
    (
        "loss-extra-key",
        GOOD.replace('"mse"', '{ name = "l", expr = "y", weight = 2 }'),
        "loss.weight",
        "unknown key 'weight'",
    ),
    ("loss-no-name", GOOD.replace('"mse"', '{ expr = "y" }'), "loss.name", "missing required"),
    (
        "loss-string-literal",
        GOOD.replace('"mse"', """{ name = "l", expr = "'rm -rf'" }"""),
        "loss.expr",
        "string literals are not allowed",
    ),
    (
        "loss-empty-expr",
        GOOD.replace('"mse"', '{ name = "l", expr = "" }'),
        "loss.expr",
        "empty expression",
    ),
    # files and TOML
    ("invalid-toml", "name = \n", None, "invalid TOML"),
    ("duplicate-key", with_top('name = "again"'), None, "invalid TOML"),
    ("dense-with-name", with_layer('name = "d"'), f"{L1}.name", "only allowed on a map layer"),
    ("undecodable", b"\xff\xfe\x00n\x00a\x00m\x00e", None, "not a UTF-8 text file (byte 0xff"),
    ("latin1", GOOD.replace("net", "n\xe9t").encode("latin-1"), None, "not a UTF-8 text file"),
    ("nested-arrays", "name = " + "[" * 5000, None, "invalid TOML"),
    ("nested-tables", "name = " + "{a = " * 5000, None, "invalid TOML"),
    ("too-many-layers", GOOD + "[[layer]]\nunits = 1\n" * MAX_LAYERS, "layer", "too many layers"),
    ("too-large", GOOD + "#" * MAX_FILE_BYTES, None, "too large"),
    ("quoted-key-newline", with_top('"a\\nb" = 1'), None, "unknown key"),
]


@pytest.mark.parametrize(("text", "field", "phrase"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_spec(tmp_path: Path, text: str | bytes, field: str | None, phrase: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    line = info.value.line()
    assert "\n" not in line and "\r" not in line
    assert len(line) < 600
    prefix = f"{path}: {field}: " if field else f"{path}: "
    assert line.startswith(prefix), line
    assert phrase in line, line
    assert str(info.value) == line


def test_catalogue_is_large_and_unique() -> None:
    assert len(BAD) >= 30
    assert len({c[0] for c in BAD}) == len(BAD)


@pytest.mark.parametrize(
    ("spec", "phrase"),
    [
        ("missing.toml", "cannot read spec file: No such file or directory"),
        (".", "cannot read spec file"),
    ],
)
def test_unreadable_files(tmp_path: Path, spec: str, phrase: str) -> None:
    path = str(tmp_path / spec)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.line().startswith(path + ": ")
    assert phrase in info.value.line()


def test_file_name_with_newline_stays_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "odd\nname.toml"
    path.write_text(GOOD.replace('"mse"', '"nope"'), encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(str(path))
    assert "\n" not in info.value.line()
    assert "unknown loss 'nope'" in info.value.line()


def test_expressions_are_never_evaluated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("eval/exec called")

    sympify = sp.sympify

    def sympify_no_strings(arg: object, *args: object, **kwargs: object) -> object:
        if isinstance(arg, str):
            raise AssertionError("sympify called on a string")
        return sympify(arg, *args, **kwargs)

    # Python's import machinery runs a module's code with ``exec``: load once unpatched so
    # that every lazy import (SymPy's, the encodings') has happened; the front end keeps no
    # cache, so the second load below parses every expression again under the patch.
    load_spec(str(EXAMPLES / "custom.toml"))
    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    monkeypatch.setattr(builtins, "compile", forbidden)
    monkeypatch.setattr(sp, "sympify", sympify_no_strings)
    monkeypatch.setattr(sp, "parse_expr", forbidden, raising=False)
    net = load_spec(str(EXAMPLES / "custom.toml"))
    assert net.loss.name == "logcosh"


# -- property: any TOML-ish document gives a Network or a SpecError ---------------------

_KEYS = [
    "name",
    "input",
    "loss",
    "layer",
    "units",
    "activation",
    "bias",
    "type",
    "expr",
    "activaton",
    "nme",
    "x",
    "__class__",
    "import os",
]
_STRINGS = [
    "net",
    "seed_net",
    "class",
    "_x",
    "x; import os",
    "sigmoid",
    "softmax",
    "tanh",
    "relu",
    "mse",
    "bce",
    "cross_entropy",
    "logcosh",
    "dense",
    "map",
    "conv",
    "a[i]",
    "a[q]",
    "x/(1 + abs(x))",
    "log(cosh(yhat - y))",
    "a[i] / sqrt(sum(a[j]**2, j) + 1e-6)",
    "__import__('os').system('true')",
    "x.__class__",
    "sum(a[j], j)",
    "",
    "yhat - y",
    "x**2",
    "(((x",
    "1e999",
    "max(x, 0)",
]


def _toml_value(depth: int = 0) -> st.SearchStrategy[str]:
    scalar = st.one_of(
        st.integers(-3, 2_000_000).map(str),
        st.sampled_from(["true", "false", "2.5", "-0.0", "nan", "inf", "1979-05-27"]),
        st.sampled_from(_STRINGS).map(json.dumps),
        st.text(max_size=12).map(json.dumps),
    )
    if depth >= 2:
        return scalar
    inner = _toml_value(depth + 1)
    table = st.lists(st.tuples(st.sampled_from(_KEYS), inner), max_size=3).map(
        lambda kv: "{ " + ", ".join(f"{json.dumps(k)} = {v}" for k, v in kv) + " }"
    )
    array = st.lists(inner, max_size=3).map(lambda vs: "[" + ", ".join(vs) + "]")
    return st.one_of(scalar, table, array)


_LINE = st.one_of(
    st.tuples(st.sampled_from(_KEYS), _toml_value()).map(
        lambda kv: f"{json.dumps(kv[0])} = {kv[1]}"
    ),
    st.just("[[layer]]"),
    st.just("[layer]"),
    st.sampled_from(['name = "net"', "input = 3", 'loss = "mse"', "units = 2"]),
    st.sampled_from(['activation = "sigmoid"', 'type = "map"', 'expr = "a[i]"', "bias = false"]),
    st.text(max_size=20),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_LINE, max_size=14))
def test_random_documents_give_a_network_or_a_spec_error(lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "random.toml")
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write(text)
        try:
            net = load_spec(path)
        except SpecError as exc:
            assert "\n" not in exc.line()
            assert exc.line().startswith(f"{path}: ")
        else:
            assert isinstance(net, Network)


@settings(max_examples=60, deadline=None)
@given(
    units=st.lists(st.integers(1, 50), min_size=1, max_size=5),
    acts=st.lists(st.sampled_from(symgrad.ACTIVATION_NAMES), min_size=5, max_size=5),
    bias=st.lists(st.booleans(), min_size=5, max_size=5),
)
def test_random_valid_dense_networks(units: list[int], acts: list[str], bias: list[bool]) -> None:
    body = "".join(
        f'[[layer]]\nunits = {u}\nactivation = "{a}"\nbias = {str(b).lower()}\n'
        for u, a, b in zip(units, acts, bias, strict=False)
    )
    net = loads_spec(f'name = "r"\ninput = 2\nloss = "mse"\n{body}')
    expected = build(
        "r", 2, [Dense(u, a, b) for u, a, b in zip(units, acts, bias, strict=False)], "mse"
    )
    assert net.stages == expected.stages


def _toml(value: object) -> str:
    """A tiny TOML writer for the structured property test."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(value)


def _often(
    key: str, good: st.SearchStrategy[object], bad: st.SearchStrategy[object]
) -> st.SearchStrategy[dict[str, object]]:
    """Mostly ``{key: good}``, sometimes a bad value or no key at all."""
    choice = {"good": good.map(lambda v: {key: v}), "bad": bad.map(lambda v: {key: v})}
    choice["absent"] = st.just({})
    tags = ["good"] * 8 + ["bad", "absent"]
    return st.sampled_from(tags).flatmap(choice.__getitem__)


def _rarely(key: str, values: st.SearchStrategy[object]) -> st.SearchStrategy[dict[str, object]]:
    """Usually no key, sometimes ``{key: value}``."""
    present = values.map(lambda v: {key: v})
    return st.sampled_from([False] * 12 + [True]).flatmap(lambda on: present if on else st.just({}))


_NAMES = st.sampled_from(["net", "seed_net", "softsign", "l2", "logcosh"])
_BAD_NAMES = st.sampled_from(["class", "_x", "a.b", "", "x y", "relu", "mse", "x; import os"])
_ACT_EXPRS = st.sampled_from(["x/(1 + abs(x))", "tanh(x)", "max(x, 0.1*x)", "x**2/2"])
_MAP_EXPRS = st.sampled_from(
    [
        "a[i]",
        "a[i] / sqrt(sum(a[j]**2, j) + 1e-6)",
        "exp(a[i]) / sum(exp(a[k]), k)",
        "a[i] * sum(a[k] * a[k], k)",
        "sum(sum(a[j]*a[k], k), j) - a[i]",
    ]
)
_LOSS_EXPRS = st.sampled_from(["log(cosh(yhat - y))", "(yhat - y)**2", "abs(yhat - y)"])
_BAD_EXPRS = st.sampled_from(
    [
        "a[q]",
        "x.__class__",
        "__import__('os')",
        "1/0",
        "a[i]**yhat",
        "sum(a[j], i)",
        "((",
        "",
        "x",
        "a[i]",
        "yhat",
    ]
)


def _custom(exprs: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, object]]:
    return _merged(
        _often("name", _NAMES, _BAD_NAMES),
        _often("expr", exprs, _BAD_EXPRS),
        _rarely("extra", st.just(1)),
    )


def _merged(*parts: st.SearchStrategy[dict[str, object]]) -> st.SearchStrategy[dict[str, object]]:
    return st.tuples(*parts).map(lambda ds: {k: v for d in ds for k, v in d.items()})


_INTS = st.integers(1, 6)
_BAD_INTS = st.sampled_from([-1, 0, 10**7, 2.5, True, "3", [3]])
_ACTS = st.one_of(
    st.sampled_from(["sigmoid", "softmax", "relu", "tanh", "identity", "elu"]), _custom(_ACT_EXPRS)
)
_DENSE = _merged(
    _rarely("type", st.sampled_from(["dense", "conv", 1])),
    _often("units", _INTS, _BAD_INTS),
    _often("activation", _ACTS, st.sampled_from(["sigmod", 3])),
    _rarely("bias", st.sampled_from([True, False, 0])),
    _rarely("expr", _MAP_EXPRS),
)
_MAP = _merged(
    st.just({"type": "map"}),
    _often("expr", _MAP_EXPRS, _BAD_EXPRS),
    _rarely("name", st.one_of(_NAMES, _BAD_NAMES)),
    _rarely("units", _INTS),
    _rarely("activation", _ACTS),
)
_LAYER = st.sampled_from([_DENSE] * 3 + [_MAP]).flatmap(lambda s: s)
_DOC = _merged(
    _often("name", _NAMES, _BAD_NAMES),
    _often("input", _INTS, _BAD_INTS),
    _often(
        "loss",
        st.one_of(st.sampled_from(["mse", "bce", "cross_entropy"]), _custom(_LOSS_EXPRS)),
        st.sampled_from(["mae", 3]),
    ),
    _often("layer", st.lists(_LAYER, min_size=1, max_size=4), st.just([])),
    _rarely("inputs", st.just(3)),
)


def _document(doc: dict[str, object]) -> str:
    layers = doc.pop("layer", None)
    text = "".join(f"{k} = {_toml(v)}\n" for k, v in doc.items())
    if isinstance(layers, list) and layers:
        for layer in layers:
            text += "\n[[layer]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in layer.items())
    elif layers is not None:
        text += "layer = []\n"
    return text


@settings(max_examples=200, deadline=None)
@given(_DOC)
def test_structured_random_documents(doc: dict[str, object]) -> None:
    text = _document(dict(doc))
    try:
        net = loads_spec(text, file="s.toml")
    except SpecError as exc:
        assert "\n" not in exc.line()
        assert exc.line().startswith("s.toml: ")
    else:
        assert isinstance(net, Network)
        assert len(net.param_names) >= 0


# -- TOML parity with the Python API (#12): sizes, map params and units, skip connections,
#    norm layers, penalties -------------------------------------------------------------

PARITY = """\
name = "parity"
input = 3
loss = "mse"
sizes = { h = 6, w2 = 2 }
penalty = "1e-4 * W1[p, q]**2 + 2e-4 * V4[p, q]**2 + 0.5 * T3**2"

[[layer]]
units = "h"
activation = "tanh"

[[layer]]
type = "layernorm"

[[layer]]
type = "map"
expr = "g[i] * a[i] / T + a1[i] + z1[i] - max(a[j], j) / h"
params = { g = ["n"], T = [] }

[[layer]]
type = "map"
units = "w2"
expr = "sum(V[i, j] * a[j], j) + min(a[k], k)"
params = { V = ["w2", "n"] }

[[layer]]
type = "rmsnorm"
"""


def test_parity_spec_builds_the_python_api_network(tmp_path: Path) -> None:
    net = load_spec(write(tmp_path, PARITY))
    h = sp.Symbol("h", integer=True, positive=True)
    r = sp.Symbol("w2", integer=True, positive=True)
    assert net.sizes[h] == 6 and net.sizes[r] == 2
    assert net.param_names == ("W1", "b1", "gamma2", "beta2", "g3", "T3", "V4", "gamma5")
    shapes = {p.name: net.shape(p) for p in net.params}
    assert shapes["W1"] == (6, 3) and shapes["g3"] == (6,) and shapes["T3"] == ()
    assert shapes["V4"] == (2, 6) and shapes["gamma5"] == (2,)
    inits = {p.name: p.init for p in net.params}
    assert inits["gamma2"] == "ones" and inits["beta2"] == "zeros" and inits["g3"] == "ones"
    res = next(s for s in net.stages if s.label == "map" and s.layer == 3)
    assert {str(b) for b, _ in res.extra} == {"a1", "z1"}  # skip connections
    assert isinstance(next(p for p in net.params if p.name == "T3").base, sp.Symbol)
    # the penalty: each term summed over its own free indices (axes of different sizes)
    pen = net.penalty
    assert pen is not None and not (pen.free_symbols & {sp.Symbol("p", integer=True)})
    assert len(pen.atoms(sp.Sum)) == 2  # W1 over (h, 3), V4 over (w2, h); T3 has no index
    assert sp.Symbol("T3", real=True) in pen.free_symbols


def test_parity_spec_verifies(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from symgrad.verify.verify import verify_network

    net = load_spec(write(tmp_path, PARITY))
    report = verify_network(net)
    assert report.ok, report


def test_max_reduction_versus_elementwise_max(tmp_path: Path) -> None:
    from symgrad.ir.reductions import ReduceMax

    red = load_spec(write(tmp_path, with_map('expr = "a[i] - max(a[j], j)"')))
    assert red.stages[-1].body.atoms(ReduceMax)
    ew = load_spec(write(tmp_path, with_map('expr = "max(a[i], 0)"'), "ew.toml"))
    assert not ew.stages[-1].body.atoms(ReduceMax) and ew.stages[-1].body.atoms(sp.Max)
