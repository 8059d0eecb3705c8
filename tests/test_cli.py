"""Tests of the command line (in-process via main() and as ``python -m symgrad``) and of
the atomic output files it writes."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import symgrad
from symgrad import DerivationError
from symgrad.calculus import reverse
from symgrad.cli import main
from symgrad.errors import SpecError
from symgrad.files import MARKER, atomic_write, is_generated

ROOT = Path(__file__).resolve().parent.parent
SPECS = Path(__file__).resolve().parent / "specs"
SEED = str(SPECS / "seed_net.toml")
BAD_SPEC = str(SPECS / "bad_activation_typo.toml")


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_sub(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "symgrad", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_error_line(err: str, phrase: str = "") -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("symgrad: error: "), err
    assert "Traceback" not in err
    assert phrase in lines[0], err


# -- help and version -------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["--version"], capsys)
    assert code == 0
    assert out.strip() == f"symgrad {symgrad.__version__}"


@pytest.mark.parametrize("command", [[], ["derive"], ["codegen"], ["verify"], ["check"]])
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main([*command, "--help"], capsys)
    assert code == 0
    assert err == ""
    assert out.startswith("usage: symgrad")
    assert "examples:" in out
    if command:
        assert "SPEC" in out and ".toml" in out


def test_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    options = {
        "derive": ["--form", "--to", "-o", "--fragment", "--graph"],
        "codegen": ["-o", "--force", "--optimizer"],
        "verify": ["--module", "--dtype", "--against", "--symbolic", "--seed", "--batch"],
        "check": ["--grad", "--formula"],
    }
    for command, names in options.items():
        _, out, _ = run_main([command, "--help"], capsys)
        for name in names:
            assert name in out, (command, name)


def test_help_and_version_as_a_subprocess(tmp_path: Path) -> None:
    proc = run_sub(["--version"], tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"symgrad {symgrad.__version__}"
    proc = run_sub(["derive", "--help"], tmp_path)
    assert proc.returncode == 0 and "examples:" in proc.stdout


# -- bad input: exit 2, one line, no traceback ----------------------------------------------

BAD_ARGS: list[tuple[str, list[str], str]] = [
    ("no-command", [], "required: COMMAND"),
    ("unknown-command", ["frobnicate"], "invalid choice"),
    ("unknown-option", ["derive", SEED, "--bogus"], "unrecognized arguments: --bogus"),
    ("bad-spec", ["derive", BAD_SPEC], "layer[1].activaton: unknown key 'activaton'"),
    ("bad-spec-codegen", ["codegen", BAD_SPEC, "-o", "{tmp}/m.py"], "did you mean 'activation'"),
    ("bad-spec-verify", ["verify", BAD_SPEC], "layer[1].activaton"),
    ("bad-spec-check", ["check", BAD_SPEC, "--grad", "W1", "--formula", "0"], "activaton"),
    ("missing-spec", ["derive", "{tmp}/missing.toml"], "cannot read spec file"),
    ("directory-spec", ["derive", "{tmp}"], "cannot read spec file"),
    ("python-spec-raises", ["derive", str(SPECS / "pynet_raises.py") + ":net"], "RuntimeError"),
    ("python-spec-not-net", ["derive", str(SPECS / "pynet.py") + ":not_a_network"], "not a"),
    ("bad-to", ["derive", SEED, "--to", "pdf"], "argument --to: invalid choice: 'pdf'"),
    ("bad-form", ["derive", SEED, "--form", "tensor"], "argument --form"),
    ("bad-graph", ["derive", SEED, "--graph", "{tmp}/g.pdf"], "--graph"),
    ("codegen-no-output", ["codegen", SEED], "required: -o/--output"),
    ("bad-optimizer", ["codegen", SEED, "-o", "{tmp}/m.py", "--optimizer", "rmsprop"], "rmsprop"),
    ("bad-against", ["verify", SEED, "--against", "fd,tf"], "unknown reference 'tf'"),
    ("empty-against", ["verify", SEED, "--against", ","], "--against"),
    ("bad-batch", ["verify", SEED, "--batch", "0"], "positive integer"),
    ("bad-seed", ["verify", SEED, "--seed", "x"], "--seed"),
    ("bad-dtype", ["verify", SEED, "--dtype", "float16"], "--dtype"),
    ("missing-module", ["verify", SEED, "--module", "{tmp}/none.py"], "none.py: --module"),
    ("check-no-formula", ["check", SEED, "--grad", "W1"], "required: --formula"),
    ("output-dir-missing", ["derive", SEED, "-o", "{tmp}/no/such/dir/d.md"], "does not exist"),
    ("output-is-dir", ["derive", SEED, "-o", "{tmp}"], "is a directory"),
]


def _fill(argv: list[str], tmp_path: Path) -> list[str]:
    return [a.replace("{tmp}", str(tmp_path)) for a in argv]


@pytest.mark.parametrize(
    ("argv", "phrase"), [c[1:] for c in BAD_ARGS], ids=[c[0] for c in BAD_ARGS]
)
def test_bad_input_exits_2_with_one_line(
    argv: list[str], phrase: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(os.listdir(tmp_path))
    code, out, err = run_main(_fill(argv, tmp_path), capsys)
    assert code == 2
    assert_one_error_line(err, phrase)
    assert out == ""
    assert sorted(os.listdir(tmp_path)) == before  # nothing written, no temporary files


@pytest.mark.parametrize(
    "name",
    ["no-command", "bad-spec", "bad-to", "missing-spec", "python-spec-raises", "bad-against"],
)
def test_bad_input_as_a_subprocess(name: str, tmp_path: Path) -> None:
    argv, phrase = next((c[1], c[2]) for c in BAD_ARGS if c[0] == name)
    proc = run_sub(_fill(argv, tmp_path), tmp_path)
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr, phrase)
    assert proc.stdout == ""


def test_bad_spec_fixture_line_names_file_and_field(capsys: pytest.CaptureFixture[str]) -> None:
    _, _, err = run_main(["derive", BAD_SPEC], capsys)
    assert err.strip() == (
        f"symgrad: error: {BAD_SPEC}: layer[1].activaton: "
        "unknown key 'activaton' (did you mean 'activation'?)"
    )


def test_derivation_error_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(net: object) -> None:
        raise DerivationError("no derivative rule for node Foo(z1[i])")

    monkeypatch.setattr(reverse, "reverse_accumulate", broken)
    code, out, err = run_main(["derive", SEED], capsys)
    assert code == 2
    assert_one_error_line(err, "no derivative rule for node Foo(z1[i])")


def test_multiline_error_messages_are_joined(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(net: object) -> None:
        raise SpecError("first\nsecond", field="x")

    monkeypatch.setattr(reverse, "reverse_accumulate", broken)
    code, _, err = run_main(["derive", SEED], capsys)
    assert code == 2
    assert_one_error_line(err, "x: first second")


# -- derive ---------------------------------------------------------------------------


def fake_render_doc(monkeypatch: pytest.MonkeyPatch, calls: list[dict[str, object]]) -> None:
    module = types.ModuleType("symgrad.documents.render")

    def render(d: object, to: str = "text", form: str = "both", standalone: bool = True) -> str:
        assert isinstance(d, symgrad.Derivation)
        calls.append({"to": to, "form": form, "standalone": standalone})
        return f"doc to={to} form={form} standalone={standalone}\n"

    module.render = render  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "symgrad.documents.render", module)


def fake_graph(monkeypatch: pytest.MonkeyPatch, rendered: bool) -> list[tuple[str, str, str]]:
    module = types.ModuleType("symgrad.documents.graph")
    calls: list[tuple[str, str, str]] = []

    def to_dot(d: object) -> str:
        return "digraph G { x -> z1 }\n"

    def render_graph(dot: str, path: str, fmt: str, force: bool = False) -> bool:
        calls.append((dot, path, fmt))
        if rendered:
            Path(path).write_text("<svg/>")
        return rendered

    module.to_dot = to_dot  # type: ignore[attr-defined]
    module.render_graph = render_graph  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "symgrad.documents.graph", module)
    return calls


def test_derive_passes_options_to_render(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[dict[str, object]] = []
    fake_render_doc(monkeypatch, calls)
    code, out, err = run_main(["derive", SEED], capsys)
    assert (code, err) == (0, "")
    assert out == "doc to=text form=both standalone=True\n"
    code, out, _ = run_main(
        ["derive", SEED, "--to", "latex", "--form", "matrix", "--fragment"], capsys
    )
    assert code == 0
    assert calls[-1] == {"to": "latex", "form": "matrix", "standalone": False}


@pytest.mark.parametrize(
    ("to", "first"),
    [
        ("latex", f"% {MARKER}; do not edit\n% from"),
        ("markdown", f"<!-- {MARKER}; do not edit -->\n<!-- from"),
        ("text", f"# {MARKER}; do not edit\n# from"),
    ],
)
def test_derive_output_file_is_marked_and_protected(
    to: str,
    first: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake_render_doc(monkeypatch, [])
    target = tmp_path / "out.doc"
    code, out, _ = run_main(["derive", SEED, "--to", to, "-o", str(target)], capsys)
    assert (code, out) == (0, "")
    text = target.read_text()
    assert text.startswith(first)
    assert f"doc to={to}" in text
    # A file symgrad wrote may be regenerated ...
    assert run_main(["derive", SEED, "--to", to, "-o", str(target)], capsys)[0] == 0
    # ... one it did not write is left alone.
    target.write_text("my own notes\n")
    code, _, err = run_main(["derive", SEED, "--to", to, "-o", str(target)], capsys)
    assert code == 2
    assert_one_error_line(err, "refusing to overwrite")
    assert target.read_text() == "my own notes\n"
    assert sorted(os.listdir(tmp_path)) == ["out.doc"]


@pytest.mark.parametrize("rendered", [True, False])
def test_derive_graph(
    rendered: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake_render_doc(monkeypatch, [])
    calls = fake_graph(monkeypatch, rendered)
    svg = tmp_path / "g.svg"
    code, out, err = run_main(["derive", SEED, "--graph", str(svg)], capsys)
    assert code == 0
    assert out == ""  # --graph alone writes the graph, it does not also print the derivation
    dot = tmp_path / "g.dot"
    assert MARKER in dot.read_text().splitlines()[0]
    assert "digraph G" in dot.read_text()
    assert calls == [("digraph G { x -> z1 }\n", str(svg), "svg")]
    assert svg.exists() == rendered
    assert ("Graphviz 'dot' was not found" in err) == (not rendered)


def test_derive_graph_with_to_also_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_render_doc(monkeypatch, [])
    fake_graph(monkeypatch, True)
    code, out, _ = run_main(
        ["derive", SEED, "--to", "text", "--graph", str(tmp_path / "g.dot")], capsys
    )
    assert code == 0
    assert out.startswith("doc to=text")


def test_derive_graph_dot_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_render_doc(monkeypatch, [])
    calls = fake_graph(monkeypatch, True)
    code, _, _ = run_main(["derive", SEED, "--graph", str(tmp_path / "g.dot")], capsys)
    assert code == 0
    assert calls == []
    assert os.listdir(tmp_path) == ["g.dot"]


@pytest.mark.parametrize("to", ["text", "markdown", "latex"])
def test_derive_real_renderer(to: str, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("symgrad.documents.render")
    code, out, err = run_main(["derive", SEED, "--to", to], capsys)
    assert code == 0, err
    assert "W1" in out or "W_1" in out or "W^{" in out or "W_{1}" in out
    assert out.strip()


def test_derive_examples_real_renderer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("symgrad.documents.render")
    for spec in sorted((ROOT / "examples").glob("*.toml")):
        for form in ("component", "matrix", "both"):
            code, _, err = run_main(
                ["derive", str(spec), "--to", "markdown", "--form", form], capsys
            )
            assert code == 0, (spec, form, err)
    target = tmp_path / "d.tex"
    code, _, _ = run_main(["derive", SEED, "--to", "latex", "-o", str(target)], capsys)
    assert code == 0
    assert is_generated(target)


def test_derive_as_a_subprocess(tmp_path: Path) -> None:
    pytest.importorskip("symgrad.documents.render")
    proc = run_sub(["derive", SEED, "--to", "markdown"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert "Traceback" not in proc.stderr


def test_derive_python_spec(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_render_doc(monkeypatch, [])
    code, out, err = run_main(["derive", str(SPECS / "pynet.py") + ":net"], capsys)
    assert code == 0, err
    assert out.startswith("doc to=text")


# -- codegen --------------------------------------------------------------------------


def test_codegen_writes_a_module(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("symgrad.backends.codegen")
    target = tmp_path / "seed_mod.py"
    code, out, err = run_main(["codegen", SEED, "-o", str(target)], capsys)
    assert code == 0, err
    assert is_generated(target)
    namespace: dict[str, object] = {}
    exec(compile(target.read_text(), str(target), "exec"), namespace)  # our own generated code
    assert namespace["PARAM_NAMES"] == ("W1", "b1", "W2", "b2")
    # Regenerating over a generated file needs no --force.
    assert run_main(["codegen", SEED, "-o", str(target)], capsys)[0] == 0
    assert sorted(os.listdir(tmp_path)) == ["seed_mod.py"]


def test_codegen_refuses_to_overwrite_a_foreign_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "mine.py"
    target.write_text("# my hand-written backprop\nx = 1\n")
    code, out, err = run_main(["codegen", SEED, "-o", str(target)], capsys)
    assert code == 2
    assert_one_error_line(err, f"refusing to overwrite {target}: not generated by symgrad")
    assert "--force" in err
    assert target.read_text() == "# my hand-written backprop\nx = 1\n"
    assert os.listdir(tmp_path) == ["mine.py"]  # no temporary files left


def test_codegen_force_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("symgrad.backends.codegen")
    target = tmp_path / "mine.py"
    target.write_text("x = 1\n")
    code, _, err = run_main(["codegen", SEED, "-o", str(target), "--force"], capsys)
    assert code == 0, err
    assert is_generated(target)
    assert os.listdir(tmp_path) == ["mine.py"]


def test_codegen_failure_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = types.ModuleType("symgrad.backends.emit")

    def generate(net: object, *, optimizer: str | None = None, **_: object) -> str:
        raise DerivationError("cannot generate code for node Bar")

    module.generate = generate  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "symgrad.backends.emit", module)
    code, _, err = run_main(["codegen", SEED, "-o", str(tmp_path / "m.py")], capsys)
    assert code == 2
    assert_one_error_line(err, "cannot generate code for node Bar")
    assert os.listdir(tmp_path) == []


def test_codegen_passes_the_optimizer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = types.ModuleType("symgrad.backends.emit")
    seen: list[str | None] = []

    def generate(net: object, *, optimizer: str | None = None, **_: object) -> str:
        seen.append(optimizer)
        return f"# {MARKER}; do not edit\n"

    module.generate = generate  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "symgrad.backends.emit", module)
    for opt in ("sgd", "momentum", "adam"):
        assert (
            run_main(["codegen", SEED, "-o", str(tmp_path / "m.py"), "--optimizer", opt], capsys)[0]
            == 0
        )
    assert run_main(["codegen", SEED, "-o", str(tmp_path / "m.py")], capsys)[0] == 0
    assert seen == ["sgd", "momentum", "adam", None]
    assert (tmp_path / "m.py").read_text().startswith(f"# {MARKER}; do not edit\n")


def test_codegen_subprocess_refuses(tmp_path: Path) -> None:
    target = tmp_path / "mine.py"
    target.write_text("print('hi')\n")
    proc = run_sub(["codegen", SEED, "-o", str(target)], tmp_path)
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr, "refusing to overwrite")
    assert target.read_text() == "print('hi')\n"


# -- verify and check -------------------------------------------------------------------


class FakeReport:
    def __init__(self, ok: bool) -> None:
        self.ok = ok

    def format(self) -> str:
        return "W1  ok\nb1  " + ("ok" if self.ok else "MISMATCH max abs err 1.0")


@pytest.mark.parametrize(("ok", "expected"), [(True, 0), (False, 1)])
def test_verify_wiring(
    ok: bool,
    expected: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    module = types.ModuleType("symgrad.verify.verify")
    calls: list[dict[str, object]] = []

    def verify_network(net: symgrad.Network, **kwargs: object) -> FakeReport:
        assert net.name == "seed_net"
        calls.append(kwargs)
        return FakeReport(ok)

    module.verify_network = verify_network  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "symgrad.verify.verify", module)
    code, out, _ = run_main(["verify", SEED], capsys)
    assert code == expected
    assert out == FakeReport(ok).format() + "\n"
    assert callable(calls[-1].pop("progress"))  # progress lines go to stderr
    assert calls[-1] == {
        "module": None,
        "dtype": "float64",
        "against": ("fd", "torch", "jax"),
        "symbolic": False,
        "seed": 0,
        "batch": None,  # verify picks a size that is no width of the network
        "timeout": 60.0,
        "targets": None,
    }
    hand = tmp_path / "hand.py"
    hand.write_text("PARAM_NAMES = ()\n")
    argv = ["verify", SEED, "--module", str(hand), "--dtype", "float32", "--against", "fd,torch"]
    argv += ["--symbolic", "--seed", "7", "--batch", "3"]
    assert run_main(argv, capsys)[0] == expected
    calls[-1].pop("progress")
    assert calls[-1] == {
        "module": str(hand),
        "dtype": "float32",
        "against": ("fd", "torch"),
        "symbolic": True,
        "seed": 7,
        "batch": 3,
        "timeout": 60.0,
        "targets": None,
    }


def test_verify_real(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("symgrad.verify.verify")
    pytest.importorskip("symgrad.backends.codegen")
    code, out, err = run_main(["verify", SEED, "--against", "fd"], capsys)
    assert code == 0, out + err
    assert "W1" in out


def test_verify_real_detects_a_wrong_module(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("symgrad.verify.verify")
    pytest.importorskip("symgrad.backends.codegen")
    target = tmp_path / "mod.py"
    assert run_main(["codegen", SEED, "-o", str(target)], capsys)[0] == 0
    # Break the module: every gradient doubled.
    text = target.read_text() + (
        "\n_orig = loss_and_grads\n\n"
        "def loss_and_grads(params, X, Y, *args, **kwargs):\n"
        "    value, grads = _orig(params, X, Y, *args, **kwargs)[:2]\n"
        "    if isinstance(grads, dict):\n"
        "        grads = {k: 2 * g for k, g in grads.items()}\n"
        "    return value, grads\n"
    )
    target.write_text(text)
    code, out, err = run_main(["verify", SEED, "--module", str(target), "--against", "fd"], capsys)
    assert code == 1, out + err
    assert "W1" in out


@pytest.mark.parametrize(("ok", "expected"), [(True, 0), (False, 1)])
def test_check_wiring(
    ok: bool, expected: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = types.ModuleType("symgrad.verify.check")
    calls: list[tuple[str, str]] = []

    def check_formula(net: symgrad.Network, *, grad: str, formula: str) -> FakeReport:
        calls.append((grad, formula))
        return FakeReport(ok)

    module.check_formula = check_formula  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "symgrad.verify.check", module)
    code, out, _ = run_main(["check", SEED, "--grad", "b2", "--formula", "delta2[i]"], capsys)
    assert code == expected
    assert calls == [("b2", "delta2[i]")]
    assert out.endswith("\n")


def test_check_spec_error_from_formula(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = types.ModuleType("symgrad.verify.check")

    def check_formula(net: symgrad.Network, *, grad: str, formula: str) -> FakeReport:
        raise SpecError("unknown name 'q' at position 0", field="--formula")

    module.check_formula = check_formula  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "symgrad.verify.check", module)
    code, _, err = run_main(["check", SEED, "--grad", "b2", "--formula", "q"], capsys)
    assert code == 2
    assert_one_error_line(err, "--formula: unknown name 'q'")


def test_check_real(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("symgrad.verify.check")
    code, out, err = run_main(["check", SEED, "--grad", "W1", "--formula", "0"], capsys)
    assert code in (1, 2), out + err
    if code == 2:
        assert_one_error_line(err)


# -- atomic_write -------------------------------------------------------------------------


def test_atomic_write_creates_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    atomic_write(target, f"# {MARKER}; do not edit\none\n")
    assert target.read_text() == f"# {MARKER}; do not edit\none\n"
    atomic_write(target, f"# {MARKER}; do not edit\ntwo\n")
    assert target.read_text() == f"# {MARKER}; do not edit\ntwo\n"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_atomic_write_refuses_foreign_files(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("1\n# " + MARKER + "; do not edit\n")  # the marker only on line 2
    with pytest.raises(SpecError, match="refusing to overwrite .*f.txt: not generated by symgrad"):
        atomic_write(target, "new\n")
    assert target.read_text().startswith("1\n")
    atomic_write(target, "new\n", force=True)
    assert target.read_text() == "new\n"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_atomic_write_custom_marker(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("made by tool-x\n")
    atomic_write(target, "new\n", marker="made by tool-x")
    assert target.read_text() == "new\n"


def test_atomic_write_keeps_the_old_file_when_the_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f.txt"
    target.write_text(f"# {MARKER}; do not edit\nold\n")

    def fail(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(SpecError, match="cannot write .*f.txt: No space left on device"):
        atomic_write(target, f"# {MARKER}; do not edit\nnew\n")
    assert target.read_text() == f"# {MARKER}; do not edit\nold\n"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_atomic_write_cleans_up_when_writing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(SpecError, match="f.txt: Input/output error"):
        atomic_write(tmp_path / "f.txt", "x\n")
    assert os.listdir(tmp_path) == []


def test_atomic_write_keeps_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "run.py"
    target.write_text(f"# {MARKER}; do not edit\n")
    target.chmod(0o755)
    atomic_write(target, f"# {MARKER}; do not edit\nprint(1)\n")
    assert target.stat().st_mode & 0o777 == 0o755
    fresh = tmp_path / "new.txt"
    atomic_write(fresh, "x\n")
    assert fresh.stat().st_mode & 0o777 == 0o644


def test_atomic_write_rejects_directories(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="is a directory"):
        atomic_write(tmp_path, "x")


def test_derive_html_without_graphviz_says_the_graph_was_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    real_which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name, *a, **k: None if name == "dot" else real_which(name, *a, **k)
    )
    page = tmp_path / "page.html"
    code, out, err = run_main(["derive", SEED, "--to", "html", "-o", str(page)], capsys)
    assert code == 0 and page.is_file() and out == ""
    assert "Graphviz 'dot' was not found, so the page has no graph" in err


def test_verify_against_a_reference_that_is_not_installed_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    code, out, err = run_main(["verify", SEED, "--against", "fd,torch"], capsys)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "symgrad: error: --against: torch is not installed: pip install -e '.[torch]', "
        "or leave it out"
    ]
