"""Hostile names in every output format: each escaper of
:mod:`symgrad.escape` x a list of hostile strings, then the real outputs (generated module,
LaTeX, Markdown, DOT) of specs whose *file names* are hostile. Each output must still
compile, import or parse, and show the payload as inert text."""

from __future__ import annotations

import ast
import html.parser
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from symgrad import escape
from symgrad.cli import main
from symgrad.files import is_generated

SEED_TOML = """\
name = "seed_net"
input = 3
loss = "mse"

[[layer]]
units = 2
activation = "tanh"
"""

HOSTILE = [
    "C:\\Users\\x\\net.toml",
    'a"""b',
    "a'''b",
    'ends with a quote"',
    "ends with a backslash\\",
    "--><img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "\\input{/etc/passwd}",
    "\\immediate\\write18{touch pwned}",
    "$x^2_3 & 50% #1 {a} ~b | <c>",
    "line\nbreak\rcarriage",
    "\\N{BULLET} \\x41 \\u0041",
    "tab\there \x00 nul \x1b[31m",
    "unicode \u2028 separator \u2029 \ufeff bom",
    "[link](javascript:alert(1)) *em* _u_ `code`",
    '"; os.system("rm -rf /") #',
    "}}}{{{ \\end{document}",
    "a\\\\b",
    "-- -->",
    "é π 日本",
]
IDS = [f"h{n}" for n in range(len(HOSTILE))]
# File names may hold anything but '/' and NUL.
FILE_NAMES = [h.replace("/", "_").replace("\x00", "0") for h in HOSTILE]


# -- each escaper ------------------------------------------------------------------------


@pytest.mark.parametrize("name", HOSTILE, ids=IDS)
def test_python_literal_round_trips(name: str) -> None:
    assert ast.literal_eval(escape.py_literal(name)) == name


@pytest.mark.parametrize("name", HOSTILE, ids=IDS)
def test_python_docstring_and_comment_stay_inert(name: str) -> None:
    src = f'# {escape.py_comment(name)}\n"""Doc {escape.py_docstring(name)} end."""\nX = 1\n'
    tree = ast.parse(src)
    assert len(tree.body) == 2  # the docstring and X = 1: nothing escaped into code
    doc = ast.get_docstring(tree, clean=False)
    assert doc is not None
    # Line breaks are shown as escapes; everything else is the name itself.
    assert doc == f"Doc {escape.one_line(name)} end." or doc == f"Doc {name} end."
    assert "\n" not in escape.py_comment(name) and "\r" not in escape.py_comment(name)


@pytest.mark.parametrize("name", HOSTILE, ids=IDS)
def test_latex_text_has_no_live_control_sequences(name: str) -> None:
    out = escape.latex_text(name)
    assert out.isascii() and "\n" not in out
    # Every backslash starts one of the escapes we emit, never a user's command.
    words = "textbackslash|textasciicircum|textasciitilde|textless|textgreater|textbar|textquotedbl"
    allowed = rf"\\({words})\{{\}}|\\[{{}}$&#_%]"
    assert "\\" not in re.sub(allowed, "", out)
    # Braces are all escaped: the group structure cannot be changed.
    assert not re.search(r"(?<!\\)[{}]", re.sub(allowed, "", out))
    assert "\n" not in escape.latex_comment(name)


@pytest.mark.parametrize("name", HOSTILE, ids=IDS)
def test_markdown_text_is_literal(name: str) -> None:
    out = escape.markdown_text(name)
    assert "<" not in out and ">" not in out and "\n" not in out
    # Every Markdown punctuation character is backslash-escaped.
    unescaped = re.sub(r"\\.", "", out)
    assert not re.search(r"[`*_\[\]()!#|~\\]", unescaped)


class _Collector(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.data: list[str] = []
        self.comments: list[str] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.data.append(data)

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)


@pytest.mark.parametrize("name", HOSTILE, ids=IDS)
def test_html_text_and_comment_are_inert(name: str) -> None:
    p = _Collector()
    p.feed(f'<p title="{escape.html_text(name)}">{escape.html_text(name)}</p>')
    p.feed(f"<!-- {escape.html_comment(name)} -->")
    p.close()
    assert p.tags == ["p"]
    assert "".join(p.data) == name
    assert len(p.comments) == 1
    assert "-->" not in escape.html_comment(name) and "--" not in escape.html_comment(name)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_dot_strings_are_literal_labels(tmp_path: Path) -> None:
    nodes = "\n".join(
        f"  n{k} [label={escape.dot_string(name)}];  // {escape.dot_comment(name)}"
        for k, name in enumerate(HOSTILE)
    )
    src = f"digraph {escape.dot_string(HOSTILE[1])} {{\n{nodes}\n}}\n"
    proc = subprocess.run(
        ["dot", "-Tsvg"], input=src.encode(), capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    root = ET.fromstring(proc.stdout)
    ns = "{http://www.w3.org/2000/svg}"
    nodes_found = [g for g in root.iter(f"{ns}g") if g.get("class") == "node"]
    assert len(nodes_found) == len(HOSTILE)  # no node or edge was injected
    texts = [" ".join(t.text or "" for t in g.iter(f"{ns}text")) for g in nodes_found]
    for name, text in zip(HOSTILE, texts, strict=True):
        first = name.replace("\r", "\n").split("\n")[0].strip().split(" ")[0]
        if first.isprintable() and first:
            assert first in text, (name, text)


@pytest.mark.parametrize("fmt", ["python", "text", "latex", "markdown", "html", "svg", "dot"])
def test_comment_dispatch_keeps_one_line(fmt: str) -> None:
    for name in HOSTILE:
        out = escape.comment(fmt, name)
        assert len(out.splitlines()) <= 1, (fmt, name)


# -- the real outputs for specs with hostile file names -----------------------------------


def _spec(folder: Path, stem: str) -> Path:
    path = folder / f"{stem}.toml"
    path.write_text(SEED_TOML)
    return path


@pytest.mark.parametrize("stem", FILE_NAMES, ids=IDS)
def test_generated_module_imports_whatever_the_spec_file_name(
    stem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec(tmp_path, stem)
    out = tmp_path / "mod.py"
    assert main(["codegen", str(spec), "-o", str(out)]) == 0, capsys.readouterr().err
    text = out.read_text()
    assert is_generated(out)
    tree = ast.parse(text)
    # Only the docstring, imports, constants and functions: no statement came from the name.
    kinds = {type(node).__name__ for node in tree.body}
    assert kinds <= {"Expr", "ImportFrom", "Import", "AnnAssign", "Assign", "FunctionDef"}
    doc = ast.get_docstring(tree, clean=False) or ""
    assert escape.one_line(str(spec)) in doc or str(spec) in doc
    loader = importlib.util.spec_from_file_location("hostile_mod", out)
    assert loader is not None and loader.loader is not None
    mod = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(mod)
    assert mod.PARAM_NAMES == ("W1", "b1")


@pytest.mark.parametrize("stem", FILE_NAMES, ids=IDS)
def test_markdown_and_dot_outputs_parse_whatever_the_spec_file_name(
    stem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec(tmp_path, stem)
    md, dot = tmp_path / "d.md", tmp_path / "g.dot"
    code = main(["derive", str(spec), "--to", "markdown", "-o", str(md), "--graph", str(dot)])
    assert code == 0, capsys.readouterr().err
    p = _Collector()
    p.feed(md.read_text())
    p.close()
    assert p.tags == []  # no HTML element came out of the file name
    assert len(p.comments) == 2  # the marker and the source line, both closed
    lines = dot.read_text().splitlines()
    assert lines[1].startswith("// from ") and lines[2].startswith("digraph ")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_output_compiles_whatever_the_spec_file_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One document per hostile file name, compiled with pdflatex (no shell escape) in one
    run each; no file named in the payload is read or written."""
    folder = tmp_path / "specs"
    folder.mkdir()
    for k, stem in enumerate(FILE_NAMES):
        spec = _spec(folder, stem)
        tex = tmp_path / f"d{k}.tex"
        assert main(["derive", str(spec), "--to", "latex", "-o", str(tex)]) == 0
        text = tex.read_text()
        assert text.splitlines()[1].startswith("% from ")
        proc = subprocess.run(
            [
                "pdflatex",
                "-interaction=nonstopmode",
                "-halt-on-error",
                "-no-shell-escape",
                tex.name,
            ],
            cwd=tmp_path,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, (stem, proc.stdout[-2000:])
        log = (tmp_path / f"d{k}.log").read_text(errors="replace")
        assert "/etc/passwd" not in log
    assert not (tmp_path / "pwned").exists()
    capsys.readouterr()


def test_network_and_loss_names_are_escaped_in_the_module() -> None:
    from symgrad import Dense, build
    from symgrad.backends.codegen import load_module
    from symgrad.pipeline import generate

    net = build("net", 2, [Dense(2, "tanh")], ("my_loss", sp_square()))
    code = generate(net, source='C:\\Users\\x\\"""net.toml')
    mod = load_module(code, "escaped_names")
    assert 'C:\\Users\\x\\"""net.toml' in (mod.__doc__ or "")


def sp_square():  # a custom loss expression (yhat - y)^2
    from symgrad import y_s, yhat_s

    return (yhat_s - y_s) ** 2


def test_os_environment_untouched_by_hostile_names() -> None:
    # A sanity check that none of the payloads above ran: no file 'pwned' in the cwd.
    assert not os.path.exists("pwned")
    assert sys.modules.get("hostile_mod") is None


@pytest.mark.parametrize("to", ["latex", "markdown", "html", "text", "dot", "python"])
def test_every_format_gets_its_own_marker_and_an_inert_source_line(to: str) -> None:
    from symgrad.cli import _with_marker
    from symgrad.files import marker_line

    fmt = "python" if to == "python" else to
    for source in HOSTILE:
        text = _with_marker("BODY\n", to, source)
        lines = text.split("\n")
        assert lines[0] == marker_line(fmt)
        assert lines[2] == "BODY"  # the source stayed on its one comment line
        if to in ("markdown", "html"):
            p = _Collector()
            p.feed(text)
            p.close()
            assert len(p.comments) == 2 and p.tags == []
