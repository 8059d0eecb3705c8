"""Names from the Python API are validated like a spec's, and every output escapes them
anyway (defence in depth).

The first half: each hostile name (a parameter, a symbol, an array, a layer, a loss, a
custom function) is refused by ``symgrad.build`` with a ValueError of one line, and by the
command line's ``file.py:NAME`` with one line and exit code 2. The second half builds the
same networks with the validation switched off and renders them: the HTML page in headless
Chromium (no script may run), the LaTeX with ``pdflatex -no-shell-escape`` (no file may
be read), Markdown (no raw HTML or TeX), and the generated module (refused: names pasted
into code must be identifiers).
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import sympy as sp

import symgrad as S
from symgrad import Dense, Map, a, i, n, names
from symgrad.cli import main

SCRIPT = '</title></script><script>document.title="PWNED"</script><title>'
LATEX = "s}\\input{SECRET}\\mathrm{"
CODE = "0;__import__('os').system('touch X');g"
NEWLINE_QUOTE = "a\n'b"


def _map_param(name: str) -> S.Network:
    g = sp.IndexedBase(name)
    return S.build("net", 3, [Dense(4, "tanh"), Map(g[i] * a[i], params={g: (n,)})], "mse")


def _loss_symbol(name: str) -> S.Network:
    return S.build("net", 3, [Dense(2, "tanh")], ("l", (S.yhat_s - S.y_s) ** 2 * sp.Symbol(name)))


def _activation_symbol(name: str) -> S.Network:
    return S.build("net", 3, [Dense(2, sp.Symbol(name) * S.x)], "mse")


CASES: dict[str, Callable[[], S.Network]] = {
    "map-parameter-script": lambda: _map_param(SCRIPT),
    "loss-symbol-input": lambda: _loss_symbol(LATEX),
    "activation-symbol-code": lambda: _activation_symbol(CODE),
    "loss-name-newline-quote": lambda: S.build(
        "net", 3, [Dense(2, "tanh")], (NEWLINE_QUOTE, (S.yhat_s - S.y_s) ** 2)
    ),
    "function-name": lambda: S.build("net", 3, [Map(sp.Function("f(x)")(a[i]))], "mse"),
    "map-layer-name": lambda: S.build("net", 3, [Map(a[i], name="<b>map</b>")], "mse"),
    "activation-name": lambda: S.build(
        "net", 3, [Dense(2, S.Activation("\\input{x}", S.x**2))], "mse"
    ),
    "network-name": lambda: S.build("net<script>", 3, [Dense(2)], "mse"),
    "keyword-network-name": lambda: S.build("lambda", 3, [Dense(2)], "mse"),
    "reserved-parameter": lambda: _map_param("x"),
    "size-name": lambda: S.build("net", 3, [Dense(2)], "mse", sizes={"i": 3}),
    "unicode-name": lambda: _map_param("gämma"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_api_names_are_refused_with_one_line(case: str) -> None:
    with pytest.raises(ValueError) as info:
        CASES[case]()
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert any(w in message for w in ("identifier", "keyword", "reserved")), message


def test_good_api_names_are_accepted() -> None:
    net = _map_param("gamma")
    assert "gamma2" in net.param_names
    assert names.check_network(net) is net


@pytest.mark.parametrize("case", ["map-parameter-script", "loss-symbol-input"])
def test_the_command_line_refuses_them_in_one_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = SCRIPT if case == "map-parameter-script" else LATEX
    src = tmp_path / "nets.py"
    src.write_text(
        "import sympy as sp\nimport symgrad as S\nfrom symgrad import Dense, Map, a, i, n\n"
        f"g = sp.IndexedBase({name!r})\n"
        "net = S.build('net', 3, [Dense(4, 'tanh'), Map(g[i] * a[i], params={g: (n,)})], 'mse')\n"
    )
    code = main(["derive", f"{src}:net", "--to", "html", "-o", str(tmp_path / "page.html")])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("symgrad: error: "), err
    assert not (tmp_path / "page.html").exists()


def test_a_network_built_around_the_checks_is_refused_by_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "nets.py"
    src.write_text(
        "import dataclasses\nimport symgrad as S\n"
        "good = S.build('net', 3, [S.Dense(2)], 'mse')\n"
        f"net = dataclasses.replace(good, name={SCRIPT!r})\n"
    )
    assert main(["codegen", f"{src}:net", "-o", str(tmp_path / "m.py")]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1
    assert not (tmp_path / "m.py").exists()


# -- defence in depth: the outputs, with the validation switched off ------------------------


@pytest.fixture
def unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    """``symgrad.build`` without the name checks (the outputs must still be safe)."""
    import symgrad.ir.layers as layers

    class NoChecks:
        @staticmethod
        def check_network(net: S.Network) -> S.Network:
            return net

        @staticmethod
        def check_name(*args: object, **kwargs: object) -> None:
            return None

        @staticmethod
        def check_sizes(*args: object) -> None:
            return None

    monkeypatch.setattr(layers, "names", NoChecks)


def _hostile(secret: Path) -> S.Network:
    """A map parameter with a script in its name, a loss symbol with a live ``\\input``."""
    g = sp.IndexedBase(SCRIPT)
    loss = (S.yhat_s - S.y_s) ** 2 * sp.Symbol(LATEX.replace("SECRET", str(secret)))
    return S.build("net", 3, [Dense(4, "tanh"), Map(g[i] * a[i], params={g: (n,)})], ("l", loss))


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text("TOPSECRETTOKEN\n")
    return path


def test_html_page_runs_no_injected_script(unchecked: None, secret: Path, tmp_path: Path) -> None:
    from symgrad.documents.html import render_html

    page = render_html(S.derive(_hostile(secret)), code="# no code\n")
    assert SCRIPT not in page and "<script>document.title" not in page
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed")
    path = tmp_path / "page.html"
    path.write_text(page, encoding="utf-8")
    proc = subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=3000",
            "--dump-dom",
            path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    dom = proc.stdout
    if "<html" not in dom:
        pytest.skip(f"chromium did not run here: {proc.stderr.strip()[-200:]}")
    title = dom.split("<title>", 1)[1].split("</title>", 1)[0] if "<title>" in dom else ""
    assert "PWNED" not in title
    assert "Backpropagation for" in title


def test_latex_reads_no_file(unchecked: None, secret: Path, tmp_path: Path) -> None:
    tex = S.compile(_hostile(secret)).document(to="latex", form="both")
    assert "\\input{" not in tex and "</script>" not in tex
    exe = shutil.which("pdflatex")
    if exe is None:
        pytest.skip("pdflatex is not installed")
    (tmp_path / "doc.tex").write_text(tex, encoding="utf-8")
    proc = subprocess.run(
        [exe, "-no-shell-escape", "-recorder", "-interaction=nonstopmode", "doc.tex"],
        cwd=tmp_path,
        capture_output=True,
        timeout=180,
        check=False,
    )
    log = (tmp_path / "doc.log").read_text(encoding="utf-8", errors="replace")
    assert proc.returncode == 0, log[-2000:]
    recorded = (tmp_path / "doc.fls").read_text(encoding="utf-8", errors="replace")
    assert str(secret) not in recorded and "secret.txt" not in recorded
    if shutil.which("pdftotext"):
        subprocess.run(["pdftotext", "doc.pdf", "doc.txt"], cwd=tmp_path, check=True, timeout=60)
        assert "TOPSECRETTOKEN" not in (tmp_path / "doc.txt").read_text(errors="replace")


def test_markdown_has_no_raw_html_or_tex(unchecked: None, secret: Path) -> None:
    md = S.compile(_hostile(secret)).document(to="markdown", form="both")
    assert "<script>" not in md and "</title>" not in md
    assert "\\input{" not in md


def test_generated_code_refuses_names_that_are_not_identifiers(
    unchecked: None, secret: Path
) -> None:
    net = _hostile(secret)
    with pytest.raises(ValueError, match="identifier"):
        S.generate(net)
    quoted = dataclasses.replace(S.build("ok", 3, [Dense(2)], "mse"), name=NEWLINE_QUOTE)
    with pytest.raises(ValueError, match="identifier"):
        S.generate(quoted)
