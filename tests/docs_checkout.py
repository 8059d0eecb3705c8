"""A fresh copy of this checkout to run documented commands in (used by the docs and
examples tests): its tracked files, committed in a new git repository, and an environment
with ``symgrad`` first on the PATH."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def checkout_copy(dest: Path) -> Path:
    """The tracked files of this checkout (as they are now), committed in a new repository."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        rel = name.decode()
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    git = ["git", "-c", "user.name=docs", "-c", "user.email=docs@example.invalid"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "copy"]):
        subprocess.run([*git, *args], cwd=dest, check=True, capture_output=True)
    return dest


def porcelain(repo: Path) -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def environment(repo: Path, bin_dir: Path) -> dict[str, str]:
    """``symgrad`` (this interpreter's ``python -m symgrad``) first on the PATH."""
    bin_dir.mkdir()
    shim = bin_dir / "symgrad"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m symgrad "$@"\n')
    shim.chmod(0o755)
    python = bin_dir / "python"
    python.symlink_to(sys.executable)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(repo)
    env["COLUMNS"] = "100"
    env["MPLBACKEND"] = "Agg"
    return env
