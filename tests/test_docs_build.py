"""The documentation site builds with ``mkdocs build --strict`` (broken links are errors)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("mkdocs", reason="the site needs MkDocs: pip install -e '.[docs]'")


def test_site_builds_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    # the pages the README links to, the API generated from docstrings, and the seed
    # network's HTML derivation page published with the site
    for page in ("tutorial", "reference/cli", "reference/api", "explanation/performance"):
        assert (site / page / "index.html").is_file(), page
    api = (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    assert "check_formula" in api and "Stages 3-4" in api
    assert (site / "examples" / "seed_net" / "page.html").is_file()


def test_readme_links_to_the_site_pages() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in (
        "tutorial",
        "how-to/custom-layer",
        "reference/spec",
        "reference/cli",
        "reference/api",
        "explanation/derivation",
        "explanation/performance",
    ):
        assert f"docs/{page}.md" in readme, page
        assert (ROOT / "docs" / f"{page}.md").is_file(), page
    assert len(readme.splitlines()) <= 250
