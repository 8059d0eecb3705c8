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
