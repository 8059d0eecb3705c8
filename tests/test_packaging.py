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
