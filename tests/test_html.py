"""Printing: derivation -> one self-contained HTML page (KaTeX inlined, graph, linked code).

The page is checked as text (self-contained, collapsible steps, two-way links) and, when
Debian's ``chromium`` is installed, in a real headless browser: the DOM after the page's
script ran has KaTeX output and no ``.katex-error``, and a screenshot is written.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sympy as sp
from catalogue import catalogue

from symgrad import Dense, Map, a, build, derive, i
from symgrad.documents.html import katex_css, render_html

ROOT = Path(__file__).resolve().parent.parent


def seed_net():
    return build("seed_net", 3, [Dense(4, "sigmoid"), Dense(2, "sigmoid")], "mse")


def softmax_ce():
    return build("softmax_ce", 4, [Dense(5, "tanh"), Dense(3, "softmax")], "cross_entropy")


@pytest.fixture(scope="module")
def seed_page() -> str:
    return render_html(derive(seed_net()))


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    return None


def _chromium(args: list[str], url: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    exe = _browser()
    if exe is None:
        pytest.skip("chromium is not installed")
    return subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={cwd / 'profile'}",
            "--virtual-time-budget=5000",
            *args,
            url,
        ],
        cwd=cwd,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_page_is_self_contained(seed_page):
    assert seed_page.startswith("<!DOCTYPE html>")
    assert '<meta name="generator" content="symgrad' in seed_page
    # nothing is loaded from elsewhere: no src/href/url() pointing outside the page
    # (the markup and the styles; KaTeX's own code holds such strings as literals)
    markup = re.sub(r"<script>.*?</script>", "", seed_page, flags=re.S)
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!#|data:)""", markup)
    assert not re.search(r"url\((?!data:)", markup)
    assert "<script src" not in seed_page and "<link" not in seed_page
    assert "@import" not in seed_page
    # KaTeX's code and every font it uses are inlined
    assert "katex.render" in seed_page and "renderToString" in seed_page
    assert seed_page.count("data:font/woff2;base64,") >= 15
    assert "fonts/KaTeX" not in katex_css()


def test_steps_collapsible_graph_inline_and_math_marked(seed_page):
    d = derive(seed_net())
    for st in d.steps:
        assert f'<details class="step" open id="step-{st.grad}">' in seed_page
    if shutil.which("dot"):
        assert "<svg" in seed_page and "δ⁽²⁾" in seed_page
    else:  # pragma: no cover - graphviz is installed in CI
        assert "not drawn" in seed_page
    assert '<div class="math display">' in seed_page
    assert "BP1" in seed_page and "BP4" in seed_page
    # TeX is escaped for HTML: no raw "<" from the math leaks into the markup
    for m in re.finditer(r'<span class="math">(.*?)</span>', seed_page):
        assert "<" not in m.group(1)


def test_two_way_links_between_code_and_steps(seed_page):
    d = derive(seed_net())
    for st in d.steps:
        if not st.needed:
            continue
        # the step links to its first code line, and that line links back to the step
        m = re.search(rf'id="step-{st.grad}">\s*<summary>.*?href="#(code-L\d+)"', seed_page)
        assert m, st.grad
        line = re.search(rf'<a class="[^"]*" id="{m.group(1)}" href="#step-{st.grad}">', seed_page)
        assert line, (st.grad, m.group(1))
    # every statement of the backward pass links to its step
    for name in ("delta2", "dW2", "db2", "da1", "delta1", "dW1", "db1"):
        stmt = re.search(rf'href="#step-{name}">\s*{name} (?:[-+*/@]?=)', seed_page)
        assert stmt, name
    # parameter gradients are red, adjoints passed back blue (as in the graph)
    assert re.search(r'<a class="ln param" id="code-L\d+" href="#step-dW1">', seed_page)
    assert re.search(r'<a class="ln back" id="code-L\d+" href="#step-delta1">', seed_page)


def test_cli_writes_the_page(tmp_path):
    out = tmp_path / "page.html"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "symgrad",
            "derive",
            str(ROOT / "examples" / "seed_net.toml"),
            "--to",
            "html",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert r.returncode == 0, r.stderr
    page = out.read_text(encoding="utf-8")
    first, second, third = page.splitlines()[:3]
    assert first == "<!-- symgrad:generated v1; do not edit -->"  # the file's marker line
    assert "examples/seed_net.toml" in second and third == "<!DOCTYPE html>"


def test_parameter_free_network_page():
    net = build("scalar_fn", 1, [Map(sp.sin(a[i]) * sp.pi + a[i] ** 2, name="f")], "mse")
    page = render_html(derive(net))
    assert "no parameters" in page and r"\pi" in page


@pytest.mark.parametrize(
    "net",
    [seed_net, pytest.param(softmax_ce, marks=pytest.mark.slow)],
    ids=lambda f: f.__name__,
)
def test_katex_renders_without_errors_in_chromium(net, tmp_path):
    """The page in a real browser: KaTeX ran, rendered every piece of math, no errors."""
    page = render_html(derive(net()))
    path = tmp_path / "page.html"
    path.write_text(page, encoding="utf-8")
    proc = _chromium(["--dump-dom"], path.as_uri(), tmp_path)
    dom = proc.stdout.decode("utf-8", errors="replace")
    assert 'data-katex="done"' in dom, proc.stderr.decode(errors="replace")[-2000:]
    assert 'class="katex-error"' not in dom, re.findall(r'katex-error"[^>]*title="([^"]*)', dom)
    n_math = page.count('class="math')  # inline and display
    assert dom.count('class="katex"') >= n_math > 50


def test_screenshot_in_chromium(tmp_path):
    page = render_html(derive(seed_net()))
    path = tmp_path / "page.html"
    path.write_text(page, encoding="utf-8")
    shot = tmp_path / "page.png"
    proc = _chromium(
        [f"--screenshot={shot}", "--window-size=1400,900"], path.as_uri() + "#step-delta1", tmp_path
    )
    assert shot.exists(), proc.stderr.decode(errors="replace")[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # not a blank page


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(catalogue()))
def test_katex_renders_every_catalogue_network(name, tmp_path):
    page = render_html(derive(catalogue()[name]))
    path = tmp_path / "page.html"
    path.write_text(page, encoding="utf-8")
    proc = _chromium(["--dump-dom"], path.as_uri(), tmp_path)
    dom = proc.stdout.decode("utf-8", errors="replace")
    assert 'data-katex="done"' in dom, name
    assert 'class="katex-error"' not in dom, re.findall(r'katex-error"[^>]*title="([^"]*)', dom)
