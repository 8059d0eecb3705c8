"""``symgrad check SPEC --steps FILE``: a whole hand-written backward pass, line by line.

Every file under ``tests/steps/`` says in its header which catalogue network it is for and
what the checker must answer: ``# expect: right``, or ``# expect: wrong LINE SLIP`` (the
first wrong step starts at LINE and the likely slip named contains SLIP). The references
are the derivation evaluated on random batches; the slips were written by hand.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from catalogue import catalogue
from hypothesis import given, settings
from hypothesis import strategies as st

from symgrad import Dense, build
from symgrad.cli import main
from symgrad.errors import SpecError
from symgrad.frontend.spec import load_spec
from symgrad.learn.steps import check_steps, parse_steps, unparse
from symgrad.verify.check import check_formula

NETS = catalogue()
NETS["square"] = build("square", 3, [Dense(3, "sigmoid"), Dense(3, "sigmoid")], "mse")
HERE = Path(__file__).parent / "steps"
#: The backprop-ninja network (linear, batch norm, tanh, linear, softmax + cross-entropy).
NETS["ninja"] = load_spec(str(HERE / "ninja.toml"))
#: A small conv net (channels and positions of different counts) for the conv slips.
NETS["cnn"] = load_spec(str(HERE / "cnn.toml"))
FILES = sorted(HERE.glob("*.py"))
EXAMPLES = Path(__file__).parent.parent / "examples"

#: Catalogue networks with component-form fallback steps (DAG, max reductions, norms).
FALLBACK_NETS = {"maxshift", "residual", "rmsnorm_pairwise"}


def _header(path: Path) -> tuple[str, str]:
    text = path.read_text()
    net = re.search(r"^# net: (\w+)$", text, re.M)
    expect = re.search(r"^# expect: (.+)$", text, re.M)
    assert net and expect, f"{path.name}: header lines '# net:' and '# expect:' missing"
    return net.group(1), expect.group(1).strip()


def test_the_collection_is_big_enough():
    kinds = [_header(p)[1].split()[0] for p in FILES]
    assert kinds.count("right") >= 24 and kinds.count("wrong") >= 42
    styles = {_header(p)[0] for p in FILES if p.stem >= "w22"}
    assert {"ninja", "seed", "bce"} <= styles  # batched rows, the notebook's, columns


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_each_file_gets_its_verdict(path):
    net_name, expect = _header(path)
    report = check_steps(NETS[net_name], path.read_text(), file=path.name)
    text = report.format()
    if expect.startswith("right"):
        assert report.ok, text
        assert text.splitlines()[-1].startswith("OK: all")
        assert expect[len("right") :].strip() in text  # a convention, where one is named
        return
    _, line, slip = expect.split(" ", 2)
    first = report.first_wrong
    assert first is not None, text
    assert first.lines[0] == int(line), text
    assert first.slip is not None and slip in first.slip, text
    assert first.should_be, text
    assert f"WRONG: {first.where} " in text.splitlines()[-1]
    # the steps before the first wrong one are all judged right (or the learner's own)
    for v in report.verdicts[: report.verdicts.index(first)]:
        assert v.status != "wrong"
    if path.stem >= "w22":  # one slip each: every later line is right, at the learner's scale
        assert [v for v in report.verdicts if v.status == "wrong"] == [first], text
    assert len(first.should_be) <= 200, text


def test_equivalent_forms_say_so():
    report = check_steps(NETS["seed"], (HERE / "r10_transposed_forms.py").read_text())
    statuses = {v.name: v.status for v in report.verdicts}
    assert statuses["dW2"] == "right (equivalent)"
    head = "delta2 = (a2 - Y) * a2 * (1 - a2) / N\n"
    assert check_steps(NETS["seed"], head + "dW2 = delta2.T @ a1\n").verdicts[1].status == "right"
    keep = check_steps(NETS["seed"], head + "db2 = np.sum(delta2, axis=0, keepdims=True)\n")
    assert "kept axis" in keep.verdicts[1].status


def test_per_sample_scale_is_named():
    report = check_steps(NETS["seed"], (HERE / "r02_per_sample_scale.py").read_text())
    first = next(v for v in report.verdicts if v.name == "delta2")
    assert first.status.startswith("right (per-sample scale")


def test_a_wrong_line_shows_counterexample_and_fix():
    report = check_steps(NETS["seed"], (HERE / "w03_z_for_a.py").read_text())
    text = report.format()
    should = next(t.strip() for t in text.splitlines() if "should be: delta1 = " in t)
    assert "da1" in should and "(1 - a1)" in should and "z1" not in should
    assert "with that fixed: delta1 = da1 * a1 * (1 - a1)" in text
    assert re.search(r"counterexample: random batch \d, entry \[\d, \d\]: yours = ", text)
    # the line after it is judged with the right delta1 in place of the learner's
    assert report.verdicts[-1].name == "dW1" and report.verdicts[-1].status == "right"


def test_notebook_display():
    report = check_steps(NETS["seed"], (HERE / "w05_sign.py").read_text())
    assert (
        report._repr_markdown_().startswith("```\n") and "likely slip" in report._repr_markdown_()
    )
    res = check_formula(NETS["seed"], "db2", "diag(delta2)")
    assert res._repr_markdown_().startswith("**WRONG**")


def test_missing_gradients_are_listed():
    text = "delta2 = (a2 - Y) * a2 * (1 - a2) / N\ndW2 = delta2.T @ a1\n"
    report = check_steps(NETS["seed"], text)
    assert report.ok and set(report.missing) == {"db2", "dW1", "db1"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("import os\n", "only 'import numpy as np' is read"),
        ("for l in range(2):\n    dW2 = a1\n", "loops are not read: unroll the loop"),
        ("class Net:\n    pass\n", "classes are not read"),
        ("dW2, db2 = a1, a1\n", "assign one name per line"),
        ("dW2 = __import__('os')\n", "function '__import__' is not allowed"),
        ("dW2 = a1 * 'os'\n", "a quoted string is allowed only as einsum's subscripts"),
        ("dW2 = einsum(a1, 'i->i')\n", "einsum takes its subscripts first"),
        ("dW2 = a1.reshape(N, out=1)\n", "keyword argument out= is not allowed"),
        ("dW2 = sum(a1, out=a1)\n", "keyword argument out= is not allowed"),
        ("dW2 = delta2.T @ a1; x = 1\n", "unexpected character ';'"),
        ("dW2 = eval('1')\n", "unexpected character"),
        ("dW2 = open(a1)\n", "function 'open' is not allowed"),
        ("dW2 = np.linalg.inv(W2)\n", "np.linalg is not allowed"),
        ("dW2 = a1.__class__\n", "attribute .__class__ is not allowed"),
        ("dW2 = a1[[a1]]\n", "lists are not read"),
        ("dW2 = lambda: 1\n", "unexpected ':'"),
        ("dW2 = delta9.T @ a1\n", "'delta9' is not defined"),
        ("# nothing\n", "no assignments found"),
        ("dW2 = a1 ** a1\n", "an exponent must be a number"),
        ("dW2 = (a1\n", "expected ')'"),
    ],
)
def test_bad_files_are_one_line_errors(text, message):
    with pytest.raises(SpecError) as info:
        check_steps(NETS["seed"], text, file="mine.py")
    line = info.value.line()
    assert "\n" not in line and line.startswith("mine.py: ")
    assert message in line


def test_parse_and_unparse_round_trip():
    text = "d = -(a - b) * c.T @ np.exp(x).sum(axis=0, keepdims=True) / (n * m) ** 2\n"
    (stmt,) = parse_steps(text)
    again = parse_steps(f"d = {unparse(stmt.expr)}\n")[0]
    assert again.expr == stmt.expr


@pytest.mark.parametrize(
    "expr",
    [
        'sum(-einsum("ab,ab->a", a3, da3)/T3, axis=0)',
        "da2 - share_max(a1, axis=1)*sum(da2[:, None, :], axis=2)",
        "np.lib.stride_tricks.sliding_window_view(X, (3, 3), axis=(2, 3))[..., ::-1, 0]",
        "np.pad(d, ((0, 0), (0, 0), (2, 2), (2, 2))).reshape(N, -1).max(axis=(0, 1))",
        "_windows(x, (3,), (1,), (0,), -np.inf, dilation=(2,))",
    ],
)
def test_fallback_and_conv_syntax_round_trips(expr):
    (stmt,) = parse_steps(f"d = {expr}\n")
    again = parse_steps(f"d = {unparse(stmt.expr)}\n")[0]
    assert again.expr == stmt.expr


def test_cli_exit_codes(tmp_path, capsys):
    spec = str(EXAMPLES / "seed_net.toml")
    right = str(HERE / "r01_generated_form.py")
    wrong = str(HERE / "w03_z_for_a.py")
    assert main(["check", spec, "--steps", right]) == 0
    assert "OK: all 7 checked steps are right" in capsys.readouterr().out
    assert main(["check", spec, "--steps", wrong]) == 1
    out = capsys.readouterr().out
    assert "likely slip: z1 where a1 = f(z1) belongs" in out
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nos.system('ls')\n")
    assert main(["check", spec, "--steps", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("symgrad: error: ") and err.count("\n") == 1
    assert main(["check", spec, "--steps", str(tmp_path / "none.py")]) == 2
    assert main(["check", spec, "--steps", right, "--grad", "dW2"]) == 2
    assert main(["check", spec]) == 2
    assert "--grad NAME and --formula TEXT" in capsys.readouterr().err


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [*"aXWN()+-*/@.,=<>[]0123 \n#", "delta2", "np", ".T", ".sum", "axis", "**", "exp"]
        ),
        max_size=40,
    ).map("".join)
    | st.text(max_size=80)
)
def test_the_reader_never_runs_anything_and_fails_cleanly(text):
    try:
        stmts = parse_steps(text)
    except SpecError as exc:
        assert "\n" not in exc.line()
    else:
        assert all(isinstance(s.expr, tuple) for s in stmts)


LINES = st.sampled_from(
    [
        "delta2 = (a2 - Y) * a2 * (1 - a2) / N",
        "dW2 = delta2.T @ a1",
        "db2 = delta2.sum(axis=0)",
        "db2 = delta2.sum(axis=1, keepdims=True)",
        "da1 = delta2 @ W2",
        "da1 = delta2 @ W2.T",
        "delta1 = np.where(z1 > 0, da1, 0)",
        "delta1 = np.where(X > 0, da1, b1)",
        "delta1 = da1 * a1 * (1 - a1)",
        "dW1 = np.outer(delta1, X)",
        "dW1 = delta1.T @ X / len(b1)",
        "t = X.shape[3]",
        "t = np.log(-a1) / 0",
        "db1 = np.maximum(delta1, W1).mean(axis=5)",
        "delta1 *= W1",
        "dx = delta1 @ W1",
        "dyhat = 2 * (yhat - Y) / (N * n_2) ** -2",
        'dW1 = np.einsum("ni,nj->ij", delta1, X)',
        'db1 = einsum("ni->i", delta1)',
        "t = a1[:, None, :] * a1[:, :, None]",
        "da1 = sum(t, axis=2)",
        "t = a1.reshape(N, -1)[::-1, 1:]",
        "t = np.repeat(a1, 2, axis=0)",
        "db2 = share_max(delta2, axis=1).max(axis=(0, 1))",
        "t = broadcast_to(b1, (N, 4))",
    ]
)


@settings(max_examples=60, deadline=None)
@given(st.lists(LINES, min_size=1, max_size=6))
def test_any_mix_of_lines_gets_a_report_or_one_clean_error(lines):
    try:
        report = check_steps(NETS["seed"], "\n".join(lines) + "\n")
    except SpecError as exc:
        assert "\n" not in exc.line()
    else:
        assert report.format()


@pytest.mark.parametrize("name", sorted(NETS))
def test_the_derivations_own_batched_formulas_pass(name):
    """symgrad's batched formulas (as ``derive --form matrix`` prints them), written as a
    steps file, are right for every catalogue network: the checker and the derivation agree."""
    from symgrad.learn.steps import _should_be
    from symgrad.pipeline import derive

    d = derive(NETS[name])
    text = "".join(f"{st.grad} = {_should_be(st)}\n" for st in d.steps if st.needed)
    report = check_steps(NETS[name], text)
    assert report.ok, report.format()
    assert all(v.status == "right" for v in report.verdicts), report.format()


def test_the_column_layout_is_detected_or_declared():
    text = (HERE / "r14_nielsen_column.py").read_text()
    auto = check_steps(NETS["seed"], text)
    assert auto.ok and auto.layout == "column"
    assert "one sample, column vectors" in auto.format().splitlines()[0]
    assert check_steps(NETS["seed"], text, layout="column").ok
    assert not check_steps(NETS["seed"], text, layout="rows").ok
    with pytest.raises(SpecError, match="layout must be one of rows, column"):
        check_steps(NETS["seed"], text, layout="columns")
    batched = (HERE / "r04_intermediates.py").read_text()
    assert check_steps(NETS["seed"], batched).layout == "rows"


def test_a_byte_order_mark_is_accepted():
    text = "\ufeff" + (HERE / "r03_in_place.py").read_text()
    assert check_steps(NETS["seed"], text).ok


def test_the_arrays_a_file_makes_have_a_total_budget():
    line = "r{} = np.repeat(delta2, 700000, axis=0)\n"
    text = "delta2 = (a2 - Y) * a2 * (1 - a2) / N\n" + "".join(line.format(k) for k in range(9))
    with pytest.raises(SpecError) as info:
        check_steps(NETS["seed"], text, file="big.py")
    message = info.value.line()
    assert "\n" not in message and "40000000 numbers" in message and "budget" in message


def test_an_internal_error_is_a_bug_report_not_a_verdict(monkeypatch):
    from symgrad.learn.steps import grade

    def broken(*args, **kwargs):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(grade, "_diagnose", broken)
    with pytest.raises(SpecError, match="bug in symgrad, please report it"):
        check_steps(NETS["seed"], (HERE / "w05_sign.py").read_text())


def test_a_positional_transpose_of_the_wrong_rank_is_the_learners_error():
    text = "delta2 = (a2 - Y) * a2 * (1 - a2) / N\ndW2 = delta2.T.transpose(0, 1, 2, 3) @ a1\n"
    report = check_steps(NETS["seed"], text)
    wrong = report.first_wrong
    assert wrong is not None and wrong.problem and "axes don't match" in wrong.problem
    assert "<lambda>" not in report.format()


def test_a_gradient_is_graded_when_the_learner_has_finished_with_it():
    head = "delta2 = (a2 - Y) * a2 * (1 - a2) / N\n"
    text = head + "dW2 = delta2.T @ a1 / 2\nunrelated = a1 * 2\ndW2 += delta2.T @ a1 / 2\n"
    report = check_steps(NETS["seed"], text)
    assert report.ok, report.format()
    (dw2,) = [v for v in report.verdicts if v.name == "dW2"]
    assert dw2.lines == (2, 4)


def test_the_slips_in_intermediates_are_named_on_their_own_line():
    """The ninja file with the sign of dlogprobs flipped: the first wrong step is that line,
    not a parameter gradient many lines later."""
    report = check_steps(NETS["ninja"], (HERE / "w22_ninja_dlogprobs_sign.py").read_text())
    first = report.first_wrong
    assert first is not None and first.name == "dlogprobs" and first.grad == "dL/dlogprobs"
    assert "line 34 (loss = -logprobs[range(n), Yb].mean())" in (first.should_be or "")


def test_the_command_line_takes_the_layout(tmp_path, capsys):
    spec = Path(__file__).parent / "specs" / "seed_net.toml"
    mine = tmp_path / "nielsen.py"
    mine.write_text("\ufeff" + (HERE / "r14_nielsen_column.py").read_text(), encoding="utf-8")
    assert main(["check", str(spec), "--steps", str(mine), "--layout", "column"]) == 0
    assert "one sample, column vectors" in capsys.readouterr().out
    assert main(["check", str(spec), "--steps", str(mine), "--layout", "rows"]) == 1


@pytest.mark.parametrize("stem", ["w34_nielsen_wrong_layer_weights", "w35_nielsen_missing_prime"])
def test_column_should_be_reads_only_the_learners_names(stem):
    """Nielsen's code goes from delta2 to delta1 in one line: the adjoint da1 it never
    writes is shown by its own formula, and the left side is the learner's name."""
    report = check_steps(NETS["seed"], (HERE / f"{stem}.py").read_text())
    first = report.first_wrong
    assert report.layout == "column" and first is not None and first.should_be
    assert "da1" not in first.should_be and "(W2.T @ delta2)" in first.should_be
    assert f"should be: {first.name} = (W2.T @ delta2)" in report.format()
    w33 = check_steps(NETS["seed"], (HERE / "w33_nielsen_missing_transpose.py").read_text())
    assert "should be: nabla_w2 = delta2 @ a1.T" in w33.format()


def _redraw(net, seed: int) -> list[dict]:
    """The random values drawn again from the report's own description of them."""
    import numpy as np

    from symgrad.learn.steps.targets import BATCH, POINTS
    from symgrad.verify.verify import target_domain

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(POINTS):
        vals = {p.name: rng.uniform(-1.0, 1.0, net.shape(p)) for p in net.params}
        x = rng.normal(0.0, 1.0, (BATCH, net.size(net.input_width)))
        vals["x"] = x.reshape(BATCH, *net.input_shape) if len(net.input_shape) > 1 else x
        C = net.size(net.output_width)
        if target_domain(net) == "probabilities":  # drawn as class labels, one-hot
            vals["y"] = np.eye(C)[rng.integers(0, C, BATCH)]
        else:
            vals["y"] = rng.normal(0.0, 1.0, (BATCH, C))
        out.append(vals)
    return out


@pytest.mark.parametrize("net_name", ["seed", "ninja", "cnn"])
def test_the_random_values_are_described_well_enough_to_draw_them_again(net_name):
    import numpy as np

    from symgrad.learn.steps.targets import points
    from symgrad.verify.check import _derivation

    net = NETS[net_name]
    report = check_steps(net, "db1 = b1 + 1\n")  # wrong: a counterexample, the draws shown
    text = report.format()
    assert "counterexample: random batch 1, entry" in text
    line = next(t for t in text.splitlines() if "the random values:" in t)
    assert "rng = np.random.default_rng(0)" in line and "N = 7" in line
    assert ", ".join(f"{p.name} {tuple(net.shape(p))}" for p in net.params) in line
    net, d = _derivation(net, 0)
    for want, got in zip(_redraw(net, 0), points(net, d, 0), strict=True):
        for k, v in want.items():
            np.testing.assert_array_equal(got.env[k], v)


def test_a_column_counterexample_names_the_sample():
    report = check_steps(NETS["seed"], (HERE / "w35_nielsen_missing_prime.py").read_text())
    text = report.format()
    assert "counterexample: random sample 1, entry [" in text
    assert "sample k is row k of batch k" in text


def test_batch_norm_in_the_column_layout_is_the_batch_transposed():
    """Batch norm couples a batch's samples, so one sample alone has no gradient: the
    column layout of such a network is the whole batch with its samples as columns."""
    text = (HERE / "r27_ninja_columns_backward_only.py").read_text()
    report = check_steps(NETS["ninja"], text, layout="column")
    assert report.ok, report.format()
    assert "(batched, columns are samples)" in report.format().splitlines()[0]
    assert not check_steps(NETS["ninja"], text, layout="rows").ok  # as rows it is wrong
    assert check_steps(NETS["ninja"], text).layout == "column"  # found from the shapes
    wrong = check_steps(
        NETS["ninja"], text.replace("m * da2 - da2.sum(axis=1", "m * da2 - da2.sum(axis=0")
    )
    assert wrong.first_wrong is not None and wrong.first_wrong.name == "delta1"
    assert "random batch 1, entry [" in wrong.format()  # a batch, not one sample
    assert "each batch transposed, its samples as columns" in wrong.format()


def test_should_be_uses_the_learners_forward_names():
    """Where the learner's own forward pass names a value (h for a3, logits for z4), the
    right formula is shown with those names (and dlogits for the adjoint delta4)."""
    report = check_steps(
        NETS["ninja"], (HERE / "w50_ninja_columns_missing_transpose.py").read_text()
    )
    assert report.first_wrong is not None and report.first_wrong.should_be == "dlogits @ h.T"
