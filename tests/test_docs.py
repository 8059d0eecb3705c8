"""The code blocks of the README and the documentation run, and show what they print.

Blocks are collected and evaluated by Sybil (https://sybil.readthedocs.io), a maintained
collector for code in documentation. A fenced block runs when an HTML comment
``<!-- run -->`` (invisible on GitHub and on the site) stands right above it:

- ```` ```python ````: run in one namespace per page; a block of ``>>>`` lines is a doctest,
  its outputs compared (ELLIPSIS and NORMALIZE_WHITESPACE on);
- ```` ```bash ````: a script, run with ``bash -e -o pipefail``; it must exit 0;
- ```` ```console ````: ``$ command`` lines followed by what the page shows them printing
  (stdout and stderr, as on a terminal); the output is compared, ``...`` matching anything.

Each page runs in a fresh copy of the checkout (its tracked files, committed in a new git
repository) with ``symgrad`` on the PATH, as a user on a fresh clone would; after the last
block ``git status --porcelain`` must be empty: the documented commands leave nothing behind.
"""

from __future__ import annotations

import doctest
import re
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

sybil = pytest.importorskip("sybil", reason="the documentation tests need sybil (.[test])")

from docs_checkout import checkout_copy, environment, porcelain  # noqa: E402
from sybil import Document, Example, Region, Sybil  # noqa: E402
from sybil.evaluators.doctest import DocTestEvaluator  # noqa: E402
from sybil.evaluators.python import PythonEvaluator  # noqa: E402
from sybil.parsers.abstract.doctest import DocTestStringParser  # noqa: E402
from sybil.parsers.markdown.lexers import FencedCodeBlockLexer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- run -->"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))]


class RunnableBlocks:
    """A Sybil parser: the python, bash and console blocks marked ``<!-- run -->``."""

    def __init__(self) -> None:
        self.lexer = FencedCodeBlockLexer(
            language=r"python|bash|console",
            mapping={"language": "language", "source": "source"},
        )
        self.doctests = DocTestStringParser(DocTestEvaluator(FLAGS))
        self.python = PythonEvaluator()

    def __call__(self, document: Document) -> Iterable[Region]:
        for region in self.lexer(document):
            if not document.text[: region.start].rstrip().endswith(MARK):
                continue
            source = region.lexemes["source"]
            language = region.lexemes["language"]
            if language == "python" and source.lstrip().startswith(">>>"):
                for test in self.doctests(source, document.path):
                    test.adjust(region, source)
                    yield test
                continue
            region.parsed = source
            region.evaluator = {"python": self.python, "bash": run_bash}.get(language, run_console)
            yield region


SYBIL = Sybil(parsers=[RunnableBlocks()])


# --------------------------------------------------------------------------- running


def _env(example: Example) -> dict[str, str]:
    return example.namespace["_env"]


def _run(command: str, example: Example) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", command],
        cwd=example.namespace["_cwd"],
        env=_env(example),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def run_bash(example: Example) -> str | None:
    proc = _run(str(example.parsed), example)
    if proc.returncode != 0:
        return (
            f"the block exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}"
            f"\n--- stderr\n{proc.stderr[-3000:]}"
        )
    return None


def console_commands(text: str) -> Iterator[tuple[str, str]]:
    """``(command, expected output)`` pairs of a console transcript (``\\`` continues)."""
    command: list[str] = []
    expected: list[str] = []
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith("$ "):
            if command:
                yield "\n".join(command), "\n".join(expected)
            command, expected = [line[2:]], []
            while command[-1].endswith("\\"):
                command.append(next(lines))
        else:
            expected.append(line)
    if command:
        yield "\n".join(command), "\n".join(expected)


def run_console(example: Example) -> str | None:
    checker = doctest.OutputChecker()
    for command, want in console_commands(str(example.parsed)):
        proc = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command + " 2>&1"],
            cwd=example.namespace["_cwd"],
            env=_env(example),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        got = proc.stdout
        if not checker.check_output(want.strip() + "\n", got.strip() + "\n", FLAGS):
            return f"$ {command}\n--- the page shows\n{want}\n--- it printed\n{got}"
    return None


# --------------------------------------------------------------------------- the test


def test_every_page_is_listed() -> None:
    assert "README.md" in PAGES and "docs/tutorial.md" in PAGES


@pytest.mark.parametrize("page", PAGES)
def test_code_blocks(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    document = SYBIL.parse(ROOT / page)
    examples = list(document.examples())
    if not examples:
        pytest.skip("no runnable blocks on this page")
    repo = checkout_copy(tmp_path / "checkout")
    document.namespace.update(_cwd=str(repo), _env=environment(repo, tmp_path / "bin"))
    monkeypatch.chdir(repo)  # python blocks run in-process, in the copy
    monkeypatch.syspath_prepend(str(repo))
    for example in examples:
        example.evaluate()
    left = porcelain(repo)
    assert left == "", f"{page}: its commands left files in the checkout:\n{left}"


def test_runnable_marks_sit_on_runnable_blocks() -> None:
    """A ``<!-- run -->`` mark above a block of another language would silently do nothing."""
    stray = []
    for page in PAGES:
        text = (ROOT / page).read_text(encoding="utf-8")
        for m in re.finditer(re.escape(MARK) + r"\s*\n```(\w*)", text):
            if m.group(1) not in ("python", "bash", "console"):
                stray.append(f"{page}: {m.group(0)!r}")
    assert not stray, stray
