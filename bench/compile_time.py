"""How long symgrad itself takes: every compiler stage timed on its own as networks grow.

    python bench/compile_time.py            # the full run, writes bench/compile-time-results.md
                                            # (and bench/compile_time.png with matplotlib)
    python bench/compile_time.py --quick    # a smoke run (small networks, into a temp folder)
    python bench/compile_time.py --budgets  # only the budgets: rewrites that section of
                                            # bench/compile-time-results.md and the docs table

Stages, each timed separately on one network (SymPy's cache and symgrad's derivation memo
are cleared before each network, so the numbers are those of a fresh process after imports):

- ``import``: ``python -c "import symgrad.cli"`` in a fresh interpreter (the CLI's start-up);
- ``parse``: the spec file -> the component-form IR (:func:`symgrad.pipeline.parse`);
- ``derive``: reverse accumulation with contraction and forward values;
- ``matrix``: the matrix-form pass;
- ``codegen:<target>``: layout, lowering, printing and the template, per target;
- ``hvp``: the NumPy module with ``hvp`` and ``ggnvp``;
- ``doc:<format>``: the derivation document (text, markdown, latex) and ``html`` (the page).

The networks: tanh MLPs of width 16 and depth 1 to 100; depth-3 MLPs of width 4 to 2048
(4096 is over the spec's limit of 2^24 parameters); the bundled conv net and a batch-norm
net; a self-attention block when its spec exists.
The report names the dominant stage of each network and checks the budgets on the
100-layer MLP (derive + text <= 2 s, codegen <= 3 s, HTML <= 4 s above the import time,
import of the CLI < 1 s). The budgets are checked on the commands as a user runs them
(``symgrad derive deep.toml -o deep.txt``, ``--to html``, ``codegen``), each in a fresh
process, less the import time of that command: a fresh interpreter importing every module
the command has loaded when it ends (SymPy, NumPy, Jinja2 and symgrad's own), so the budget
is what the command does after its imports. CPU times are of the child processes (user +
system, Graphviz included); the full run also rewrites the budget table of
``docs/explanation/compile-time.md`` (between its ``compile-time-budgets`` markers).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sympy as sp  # noqa: E402

from symgrad import derivations, pipeline  # noqa: E402
from symgrad.calculus.matrix_form import matrix_pass  # noqa: E402
from symgrad.calculus.reverse import reverse_accumulate  # noqa: E402

#: Budgets on the 2-core machine (seconds), for the 100-layer tanh MLP of width 16: the
#: commands above their import time, and the CLI's own start-up.
BUDGETS = {"derive + text": 2.0, "codegen:numpy": 3.0, "html": 4.0, "import": 1.0}
#: The commands the budgets are about (``{spec}``, ``{out}``: the spec and a folder).
COMMANDS = {
    "derive + text": ["derive", "{spec}", "-o", "{out}/deep.txt", "--force"],
    "codegen:numpy": ["codegen", "{spec}", "-o", "{out}/deep.py", "--force"],
    "html": ["derive", "{spec}", "--to", "html", "-o", "{out}/deep.html", "--force"],
}
DOCS_PAGE = ROOT / "docs/explanation/compile-time.md"
_MARKERS = ("<!-- compile-time-budgets:start -->", "<!-- compile-time-budgets:end -->")
TARGETS = ("numpy", "torch", "jax", "cupy")
DOCS = ("text", "markdown", "latex")


@dataclass
class Timed:
    """CPU time of this process and wall time of one stage (seconds)."""

    cpu: float
    wall: float


@dataclass
class Row:
    """One network's stage times (seconds)."""

    label: str
    family: str
    size: int
    timed: dict[str, Timed] = field(default_factory=dict)

    @property
    def times(self) -> dict[str, float]:
        """CPU seconds by stage (what the tables, budgets and growth ratios use)."""
        return {k: t.cpu for k, t in self.timed.items()}

    @property
    def walls(self) -> dict[str, float]:
        return {k: t.wall for k, t in self.timed.items()}

    @property
    def dominant(self) -> str:
        return max(self.times, key=lambda k: self.times[k])


def mlp_spec(depth: int, width: int, inputs: int | None = None) -> str:
    """A TOML spec: ``depth`` tanh layers of ``width`` units, an mse loss."""
    lines = [f'name = "mlp_{depth}x{width}"', f"input = {inputs or width}", 'loss = "mse"', ""]
    for _ in range(depth):
        lines += ["[[layer]]", f"units = {width}", 'activation = "tanh"', ""]
    return "\n".join(lines)


BATCHNORM_SPEC = """name = "bn_net"
input = 8
loss = "cross_entropy"

[[layer]]
units = 16
activation = "identity"

[[layer]]
type = "batchnorm"

[[layer]]
type = "map"
expr = "tanh(a[i])"

[[layer]]
units = 4
activation = "softmax"
"""


def _fresh() -> None:
    """A fresh process's state: SymPy's cache and every symgrad memo cleared."""
    sp.core.cache.clear_cache()
    derivations.clear()
    printing = sys.modules.get("symgrad.documents.renamed_print")
    if printing is not None:
        printing._ATOMS.clear()
    for name in ("symgrad.documents.latex_breaking", "symgrad.documents.latex_printer"):
        module = sys.modules.get(name)  # the documents' memoised widths and names
        for fn in ("visual_width", "_quantity"):
            clear = getattr(getattr(module, fn, None), "cache_clear", None)
            if clear is not None:
                clear()
    gc.collect()


_T = TypeVar("_T")


def _timed(fn: Callable[[], _T]) -> tuple[Timed, _T]:
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return Timed(time.process_time() - c0, time.perf_counter() - w0), out


def time_stages(path: Path, *, full: bool, budget: bool = False) -> dict[str, Timed]:
    """Every stage of ``path``'s network, timed once each. Each stage after the derivation
    starts as a command would: caches cleared, the derivation kept (a command derives
    once and then prints, generates or renders). ``budget``: only the budgeted stages
    (NumPy code, the text document, the HTML page)."""
    _fresh()
    times: dict[str, Timed] = {}
    times["parse"], net = _timed(lambda: pipeline.parse(str(path)))
    times["derive"], raw = _timed(lambda: reverse_accumulate(net))
    times["matrix"], d = _timed(lambda: matrix_pass(raw))

    def stage(name: str, fn: Callable[[], object]) -> None:
        _fresh()
        derivations.remember(net, d)  # the pipeline's memo
        try:
            times[name], _ = _timed(fn)
        except Exception as e:  # noqa: BLE001 - a target that refuses a network is reported
            print(f"  {path.name}: {name}: {type(e).__name__}: {e}", file=sys.stderr)

    full_set = full and not budget
    for target in TARGETS if full_set else ("numpy",):
        stage(f"codegen:{target}", functools.partial(pipeline.generate_code, d, target=target))
    if full_set:
        stage("hvp", lambda: pipeline.generate_code(d, hvp=True))
    for to in DOCS if full_set else ("text",):
        stage(f"doc:{to}", functools.partial(pipeline.render_document, d, to=to))
    if full or budget:
        from symgrad.documents.html import render_html

        stage("html", lambda: render_html(d))
    return times


def import_time(repeats: int = 5) -> float:
    """Median wall time of ``import symgrad.cli`` in a fresh interpreter."""
    code = "import time; t=time.perf_counter(); import symgrad.cli; print(time.perf_counter()-t)"
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
        )
        runs.append(float(out.stdout.strip()))
    return statistics.median(runs)


def networks(tmp: Path, quick: bool) -> list[tuple[str, str, int, Path]]:
    """(label, family, size, spec path) for every benchmarked network."""
    depths = (1, 5, 25) if quick else (1, 5, 10, 25, 50, 100)
    widths = (4, 64) if quick else (4, 16, 64, 512, 2048)
    out = []
    for depth in depths:
        p = tmp / f"depth{depth}.toml"
        p.write_text(mlp_spec(depth, 16))
        out.append((f"tanh MLP depth {depth} (width 16)", "depth", depth, p))
    for width in widths:
        p = tmp / f"width{width}.toml"
        p.write_text(mlp_spec(3, width))
        out.append((f"tanh MLP width {width} (depth 3)", "width", width, p))
    bn = tmp / "bn_net.toml"
    bn.write_text(BATCHNORM_SPEC)
    out.append(("batch-norm net", "layers", 0, bn))
    cnn = ROOT / "examples/digits_cnn/digits_cnn.toml"
    out.append(("conv net (examples/digits_cnn)", "layers", 0, cnn))
    attention = ROOT / "examples/attention/attention.toml"
    if attention.exists():
        out.append(("self-attention block", "layers", 0, attention))
    return out


def machine() -> str:
    """The processor and its core count, as the report states them."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} logical cores"


def _load() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def _table(rows: list[Row], stages: list[str], values: str) -> list[str]:
    head = ["network", *stages] + (["dominant"] if values == "times" else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = getattr(r, values)
        cells = [f"{vals[s]:.3f}" if s in vals else "" for s in stages]
        tail = f" | {r.dominant}" if values == "times" else ""
        lines.append(f"| {r.label} | " + " | ".join(cells) + tail + " |")
    return lines


def report(
    rows: list[Row],
    imp: float,
    quick: bool,
    load: tuple[str, str],
    commands: dict[str, tuple[Timed, Timed]],
) -> str:
    stages = sorted({s for r in rows for s in r.times}, key=_stage_order)
    lines = [
        "# Compile time, stage by stage",
        "",
        f"`python bench/compile_time.py{' --quick' if quick else ''}` on {machine()},"
        f" Python {platform.python_version()}, SymPy {sp.__version__}; one run each, every"
        " stage after clearing SymPy's cache and symgrad's memos (the derivation is kept for"
        " the stages that print it, as a command has it).",
        "",
        f"Load average (1 / 5 / 15 min) at the start: {load[0]}; at the end: {load[1]}. On a"
        " loaded machine wall times stretch with the load; CPU times (of this process) are"
        " what the budgets and growth ratios use.",
        "",
        f"Start-up (`import symgrad.cli` in a fresh interpreter, wall, median of 5): "
        f"**{imp:.2f} s**.",
        "",
        "## CPU seconds",
        "",
        *_table(rows, stages, "times"),
        "",
        "## Wall seconds",
        "",
        *_table(rows, stages, "walls"),
        "",
        *budget_lines(rows, imp, commands, load[0]),
        "",
        *linearity_lines(rows),
    ]
    return "\n".join(lines) + "\n"


def _stage_order(stage: str) -> tuple[int, str]:
    order = ["parse", "derive", "matrix", "codegen", "hvp", "doc", "html"]
    head = stage.split(":")[0]
    return (order.index(head) if head in order else len(order), stage)


def _child(args: list[str]) -> Timed:
    """CPU (user + system, of the child and what it waited for) and wall time of
    ``python args`` in a fresh process at the repository root."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r0, w0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True, capture_output=True)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    return Timed(cpu, time.perf_counter() - w0)


def _median(runs: list[Timed]) -> Timed:
    return Timed(statistics.median(t.cpu for t in runs), statistics.median(t.wall for t in runs))


def command_times(spec: Path, out: Path, repeats: int = 3) -> dict[str, tuple[Timed, Timed]]:
    """For each budgeted command: (the whole command, the import of every module it
    loads), each the median of ``repeats`` fresh processes."""
    result = {}
    for name, template in COMMANDS.items():
        argv = [a.format(spec=spec, out=out) for a in template]
        listing = out / "modules.txt"
        loads = (
            "import sys\nfrom symgrad.cli import main\n"
            f"main({argv!r})\nopen({str(listing)!r}, 'w').write(' '.join(sorted(sys.modules)))\n"
        )
        _child(["-c", loads])
        modules = [m for m in listing.read_text().split() if m != "__main__"]
        imports = (
            f"import importlib, contextlib\nfor m in {modules!r}:\n"
            "    with contextlib.suppress(Exception):\n        importlib.import_module(m)\n"
        )
        whole = _median([_child(["-m", "symgrad", *argv]) for _ in range(repeats)])
        imported = _median([_child(["-c", imports]) for _ in range(repeats)])
        result[name] = (whole, imported)
    return result


def budget_lines(
    rows: list[Row], imp: float, commands: dict[str, tuple[Timed, Timed]], load: str
) -> list[str]:
    """The budget table (derive + text: the command less its import; codegen and the HTML
    page: the stage on the derivation), and the whole commands for reference."""
    deep = [r for r in rows if r.family == "depth" and r.size == 100]
    if not deep or not commands:
        return ["## Budgets", "", "Checked on the full run and with `--budgets` only."]
    t, w = deep[0].times, deep[0].walls
    whole, imported = commands["derive + text"]
    checked = {
        "derive + text": (
            "`symgrad derive deep.toml -o deep.txt` less its import",
            Timed(whole.cpu - imported.cpu, whole.wall - imported.wall),
        ),
        "codegen:numpy": ("the stage: `generate_code` of the derivation", deep[0].timed.get(
            "codegen:numpy", Timed(float("nan"), float("nan")))),
        "html": ("the stage: `render_html` of the derivation (with its code pane)",
                 deep[0].timed.get("html", Timed(float("nan"), float("nan")))),
    }  # fmt: skip
    stages = t["parse"] + t["derive"] + t["matrix"] + t["doc:text"]
    stages_wall = w["parse"] + w["derive"] + w["matrix"] + w["doc:text"]
    out = [
        "## Budgets",
        "",
        f"100-layer tanh MLP, width 16; load average at the start of these runs: {load}."
        " CPU: user + system time of the process (of the child processes for a command,"
        " Graphviz included). A command's *import* is a fresh interpreter importing every"
        " module the command has loaded when it ends (SymPy, NumPy, Jinja2, symgrad's own);"
        " each command and import is the median of 3 fresh processes.",
        "",
        "| budget | checked on | CPU | wall | limit | |",
        "|---|---|---|---|---|---|",
    ]
    for name, (what, timed) in checked.items():
        ok = "met" if timed.cpu <= BUDGETS[name] else "**over**"
        out.append(
            f"| {name} | {what} | {timed.cpu:.2f} s | {timed.wall:.2f} s |"
            f" {BUDGETS[name]:.0f} s | {ok} |"
        )
    ok = "met" if imp <= BUDGETS["import"] else "**over**"
    out.append(f"| import | `import symgrad.cli`, fresh interpreter | | {imp:.2f} s | 1 s | {ok} |")
    out += [
        "",
        f"In-process stages of derive + text (parse + derive + matrix + text document):"
        f" {stages:.2f} s CPU, {stages_wall:.2f} s wall.",
        "",
        "| command | whole (CPU) | import (CPU) | above the import (CPU) | (wall) |",
        "|---|---|---|---|---|",
    ]
    for name, (whole, imported) in commands.items():
        out.append(
            f"| `{' '.join(COMMANDS[name][:1] + COMMANDS[name][2:-3])}` ({name}) |"
            f" {whole.cpu:.2f} s | {imported.cpu:.2f} s | {whole.cpu - imported.cpu:.2f} s |"
            f" {whole.wall - imported.wall:.2f} s |"
        )
    return out


def replace_section(text: str, heading: str, lines: list[str]) -> str:
    """``text`` with the section under ``heading`` (up to the next ``## ``) replaced."""
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    block = "\n".join(lines) + "\n\n"
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    return text.rstrip("\n") + "\n\n" + block


def update_docs_page(lines: list[str], page: Path = DOCS_PAGE) -> bool:
    """Put the budget table (``lines`` without their heading) between the page's markers."""
    if not page.exists():
        return False
    text = page.read_text()
    start, end = (text.find(m) for m in _MARKERS)
    if start < 0 or end < start:
        return False
    body = "\n".join(lines[2:]).strip("\n")
    page.write_text(text[: start + len(_MARKERS[0])] + "\n" + body + "\n" + text[end:])
    return True


def linearity_lines(rows: list[Row]) -> list[str]:
    """Ratios between depths 25 and 100 (4 is linear) and widths 4 and the widest."""
    out = ["## Growth", ""]
    by_depth = {r.size: r for r in rows if r.family == "depth"}
    if 25 in by_depth and 100 in by_depth:
        a, b = by_depth[25].times, by_depth[100].times
        ratios = ", ".join(f"{s} {b[s] / a[s]:.1f}x" for s in b if s in a and a[s] > 0)
        out.append(f"Depth 25 -> 100 (4x the layers; 4.0x is linear): {ratios}.")
    by_width = {r.size: r for r in rows if r.family == "width"}
    if len(by_width) >= 2:
        lo, hi = min(by_width), max(by_width)
        a, b = by_width[lo].times, by_width[hi].times
        ratios = ", ".join(f"{s} {b[s] / a[s]:.1f}x" for s in b if s in a and a[s] > 0)
        out.append(f"Width {lo} -> {hi} (1.0x is flat): {ratios}.")
    return out


def plot(rows: list[Row], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return
    deep = sorted((r for r in rows if r.family == "depth"), key=lambda r: r.size)
    fig, ax = plt.subplots(figsize=(7, 4))
    for stage in sorted({s for r in deep for s in r.times}, key=_stage_order):
        ax.plot([r.size for r in deep], [r.times.get(stage, float("nan")) for r in deep],
                marker="o", label=stage)  # fmt: skip
    ax.set_xlabel("depth (tanh layers of width 16)")
    ax.set_ylabel("seconds")
    ax.set_title("symgrad compile time per stage")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _run_networks(
    nets: list[tuple[str, str, int, Path]], full: bool, budget: bool = False
) -> list[Row]:
    rows = []
    for label, family, size, path in nets:
        row = Row(label, family, size, time_stages(path, full=full, budget=budget))
        print(f"{label}: " + ", ".join(
            f"{k} {t.cpu:.2f}s ({t.wall:.2f}s wall)" for k, t in row.timed.items()
        ), flush=True)  # fmt: skip
        rows.append(row)
    return rows


def budgets_only(out: Path) -> int:
    """The 100-layer network and the commands only: the budget section of the results
    file (the rest of it kept) and the docs page's table rewritten."""
    load0 = _load()
    with tempfile.TemporaryDirectory() as tmp:
        deep = [n for n in networks(Path(tmp), False) if n[1:3] == ("depth", 100)]
        rows = _run_networks(deep, full=False, budget=True)
        commands = command_times(deep[0][3], Path(tmp))
    lines = budget_lines(rows, import_time(5), commands, load0)
    results = out / "compile-time-results.md"
    old = results.read_text() if results.exists() else "# Compile time, stage by stage\n"
    results.write_text(replace_section(old, "## Budgets", lines))
    print("\n".join(lines))
    if out == HERE and update_docs_page(lines):
        print(f"updated {DOCS_PAGE.relative_to(ROOT)}")
    print(f"wrote {results}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small networks, a smoke run")
    ap.add_argument("--budgets", action="store_true", help="only the budgets (the 100-layer "
                    "MLP and the commands): rewrites that section and the docs table")  # fmt: skip
    ap.add_argument("--out", type=Path, help="folder for the results (default: bench/, or a "
                    "temporary folder with --quick)")  # fmt: skip
    args = ap.parse_args(argv)
    out = args.out or (Path(tempfile.mkdtemp(prefix="symgrad-bench-")) if args.quick else HERE)
    out.mkdir(parents=True, exist_ok=True)
    if args.budgets:
        return budgets_only(out)
    load0 = _load()
    commands: dict[str, tuple[Timed, Timed]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        nets = networks(Path(tmp), args.quick)
        rows = _run_networks(nets, full=not args.quick)
        deep = [n for n in nets if n[1:3] == ("depth", 100)]
        if deep:
            commands = command_times(deep[0][3], Path(tmp))
    imp = import_time(3 if args.quick else 5)
    text = report(rows, imp, args.quick, (load0, _load()), commands)
    (out / "compile-time-results.md").write_text(text)
    if not args.quick:
        plot(rows, out / "compile_time.png")
        if out == HERE and update_docs_page(budget_lines(rows, imp, commands, load0)):
            print(f"updated {DOCS_PAGE.relative_to(ROOT)}")
    print(f"wrote {out / 'compile-time-results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
