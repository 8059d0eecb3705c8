"""The wheel carries templates/ (as the package symgrad.templates) and can generate code."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_ships_the_templates(tmp_path):
    pytest.importorskip("setuptools")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-v",  # the build backend's warnings are shown with -v only
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {r.stderr.strip().splitlines()[-1:]}")
    wheel = next(tmp_path.glob("symgrad-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "symgrad/templates/module.py.j2" in names
    assert "symgrad/templates/optimizer.py.j2" in names
    assert any(n.startswith("symgrad/templates/derivation") for n in names)
    # the HTML page's KaTeX (script, style, licence and fonts), shipped beside the templates
    html = "symgrad/templates/html/"
    for name in ("katex.min.js", "katex.min.css", "KATEX_LICENSE"):
        assert html + name in names, name
    fonts = [n for n in names if n.startswith(html + "fonts/") and n.endswith(".woff2")]
    shipped = {p.name for p in (ROOT / "templates" / "html" / "fonts").glob("*.woff2")}
    assert {Path(n).name for n in fonts} == shipped and shipped
    # every data folder is configured: setuptools warns of none left out of `packages`
    assert "absent from the `packages` configuration" not in r.stdout + r.stderr


def test_optional_dependencies_are_declared_as_ranges():
    """`pip install -e '.[docs]'` (and .[test], .[examples]) work, with ranges, not pins."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    names = {
        extra: {req.split("[")[0].split(">")[0].split("<")[0].split("=")[0] for req in reqs}
        for extra, reqs in extras.items()
    }
    assert {"mkdocs", "mkdocs-material", "mkdocstrings"} <= names["docs"]
    assert {"pytest", "pytest-xdist", "sybil", "hypothesis"} <= names["test"]
    assert {"scikit-learn", "matplotlib", "torch"} <= names["examples"]
    for extra, reqs in extras.items():
        for req in reqs:
            assert "==" not in req, f"{extra}: {req} is pinned; declare a range"


def test_default_test_run_is_parallel_and_skips_slow_cases():
    import tomllib

    ini = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    addopts = ini["tool"]["pytest"]["ini_options"]["addopts"]
    assert '-m "not slow"' in addopts and "-n auto" in addopts


def test_every_subpackage_is_listed_for_the_wheel():
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    listed = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(root).parts) for p in (root / "symgrad").rglob("__init__.py")
    }
    assert found <= listed, sorted(found - listed)
