"""Regenerate the example outputs committed in ``examples/``, or check that they are current.

    python examples/regenerate.py             # rewrite every committed output
    python examples/regenerate.py --check     # compare only; exit 1 and list what differs
    python examples/regenerate.py --plots     # also retrain the digits examples for their plots

Each output is written by the symgrad command line, run from the folder whose relative spec
path its header names, exactly as a user would run it. ``--check`` writes into a temporary
folder and compares the text outputs with the committed ones (an HTML page with its inline
SVG graph left out, since that comes from the installed Graphviz). Images and the PDF are
rewritten when the tool that draws them is installed (Graphviz, pdflatex, chromium) and are
not compared.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
ROOT = EXAMPLES.parent
if str(ROOT) not in sys.path:  # a checkout that is not pip-installed
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Job:
    """One symgrad command: run in ``cwd`` (relative to the repository), writing ``outputs``
    (file names in ``folder``, relative to the repository); ``{out}`` in ``argv`` is the
    folder the outputs go to."""

    folder: str
    cwd: str
    argv: tuple[str, ...]
    outputs: tuple[str, ...]


SEED = "examples/seed_net"
JOBS = (
    Job(SEED, SEED, ("derive", "../seed_net.toml", "--to", "markdown", "-o", "{out}/derivation.md"),
        ("derivation.md",)),
    Job(SEED, SEED, ("derive", "../seed_net.toml", "--to", "latex", "-o", "{out}/derivation.tex",
                     "--graph", "{out}/graph.svg"), ("derivation.tex", "graph.dot")),
    Job(SEED, SEED, ("derive", "../seed_net.toml", "--to", "html", "-o", "{out}/page.html"),
        ("page.html",)),
    Job("examples/custom_layer", "examples/custom_layer",
        ("derive", "custom_layer.toml", "--form", "both", "--to", "markdown",
         "-o", "{out}/derivation.md"), ("derivation.md",)),
    Job("examples/custom_layer", "examples/custom_layer",
        ("codegen", "custom_layer.toml", "-o", "{out}/custom_layer_net.py"),
        ("custom_layer_net.py",)),
    Job("examples/digits", ".", ("codegen", "examples/digits/digits.toml", "--optimizer", "adam",
                                 "-o", "{out}/digits_net.py"), ("digits_net.py",)),
    Job("examples/ddp", ".", ("codegen", "examples/ddp/mlp.toml", "--target", "torch",
                              "-o", "{out}/mlp_torch.py"), ("mlp_torch.py",)),
    Job("examples/c", "examples/c", ("codegen", "circle.toml", "--target", "c", "-o",
                                     "{out}/circle.c", "--optimizer", "adam"),
        ("circle.c", "circle.h")),
    Job("examples/scalar", ".", ("scalar", "a*b + c", "--at", "a=2,b=-3,c=10",
                                 "--graph", "{out}/graph.svg"), ("graph.dot",)),
)  # fmt: skip


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The command line's own output (a derivation, "wrote FILE" notes) is not shown."""
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), \
            contextlib.redirect_stderr(null):  # fmt: skip
        yield


def run(job: Job, out: Path, force: bool = False) -> None:
    """Run ``job`` with its outputs going to ``out``; raise on a failure."""
    from symgrad.cli import main

    argv = [a.replace("{out}", str(out)) for a in job.argv] + (["--force"] if force else [])
    with _cwd(ROOT / job.cwd), _quiet():
        code = main(argv)
    if code != 0:
        raise SystemExit(f"regenerate: symgrad {' '.join(argv)} exited {code}")


def _comparable(name: str, text: str) -> str:
    if name.endswith(".html"):  # the inline graph comes from the installed Graphviz
        text = re.sub(r"<svg\b.*?</svg>", "<svg/>", text, flags=re.S)
    return text


def differences(jobs: Sequence[Job] = JOBS) -> list[str]:
    """Unified diffs of every committed output that differs from a fresh one (empty: current)."""
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, job in enumerate(jobs):
            out = Path(tmp) / str(n)
            out.mkdir()
            run(job, out)
            for name in job.outputs:
                committed = ROOT / job.folder / name
                new = _comparable(name, (out / name).read_text(encoding="utf-8"))
                old = (
                    _comparable(name, committed.read_text(encoding="utf-8"))
                    if committed.is_file()
                    else ""
                )
                if new != old:
                    diff = difflib.unified_diff(
                        old.splitlines(),
                        new.splitlines(),
                        f"{job.folder}/{name}",
                        "now",
                        lineterm="",
                    )
                    found.append("\n".join(list(diff)[:40]))
    return found


def regenerate(plots: bool = False) -> None:
    """Rewrite every committed output in place (and the images the installed tools draw)."""
    for job in JOBS:
        run(job, ROOT / job.folder, force=True)
    scalar = ROOT / "examples" / "scalar"
    if shutil.which("dot"):
        from symgrad.cli import main

        with _cwd(ROOT), _quiet():
            main(["scalar", "a*b + c", "--at", "a=2,b=-3,c=10", "--graph",
                  str(scalar / "graph.png"), "--force"])  # fmt: skip
    _pdf(ROOT / SEED)
    _screenshot(ROOT / SEED)
    if plots:
        _plots()


def _pdf(folder: Path) -> None:
    if not shutil.which("pdflatex"):
        print("regenerate: pdflatex not found, derivation.pdf left as it is", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(folder / "derivation.tex", tmp)
        env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000", "FORCE_SOURCE_DATE": "1"}
        subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "derivation.tex"],
            cwd=tmp, env=env, check=True, capture_output=True,
        )  # fmt: skip
        shutil.copy(Path(tmp) / "derivation.pdf", folder / "derivation.pdf")


def _screenshot(folder: Path) -> None:
    browser = shutil.which("chromium")
    if not browser:
        print("regenerate: chromium not found, page.png left as it is", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp}", "--virtual-time-budget=5000", "--window-size=1400,900",
             f"--screenshot={folder / 'page.png'}", f"file://{folder / 'page.html'}#step-delta2"],
            check=False, capture_output=True,
        )  # fmt: skip


def _plots() -> None:
    """Retrain both digits examples and keep their training.png (the modules they write are
    the ones regenerated above)."""
    for name in ("digits", "digits_cnn"):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [sys.executable, str(EXAMPLES / name / "train.py"), "--out", tmp, "--no-progress"],
                check=True,
            )
            shutil.copy(Path(tmp) / "training.png", EXAMPLES / name / "training.png")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="compare only; exit 1 if any differs")
    p.add_argument("--plots", action="store_true", help="also retrain the digits examples")
    args = p.parse_args(argv)
    if args.check:
        found = differences()
        for diff in found:
            print(diff)
        print(
            f"{len(found)} committed output(s) differ"
            if found
            else "all committed outputs are current"
        )
        return 1 if found else 0
    regenerate(plots=args.plots)
    return 0


if __name__ == "__main__":
    sys.exit(main())
