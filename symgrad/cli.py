"""The ``symgrad`` command line: derive, codegen, verify, check and audit.

Each subcommand is the pipeline run to a different end: load the spec (the parse
stage, :mod:`symgrad.frontend.spec`), derive the gradients, then render a document, generate
code, or verify code or a formula. ``scalar`` and ``exercise`` (:mod:`symgrad.learn`) are
for learners: a scalar expression explored step by step, and worksheets with answer keys.

Exit codes: 0 success; 1 a verification mismatch (or a wrong formula for ``check``);
2 bad input: a spec, argument or file error, printed as one line
``symgrad: error: ...`` on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from symgrad.budgets import SYMBOLIC_SECONDS, time_limit
from symgrad.cli_arguments import AGAINST_CHOICES, _UsageError, build_parser
from symgrad.errors import DerivationError, SpecError, SymgradError
from symgrad.escape import comment
from symgrad.files import OutputSet, atomic_write, check_writable, with_marker
from symgrad.interrupts import EXIT_INTERRUPTED, ready

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_BAD_INPUT = 2


class _StdoutClosed(Exception):
    """Standard output is closed and the command's result goes there (exit code 1)."""


#: Commands whose result is printed on standard output (refused when it is closed).
_PRINTING = ("verify", "check", "scalar", "audit")


# -- subcommands -----------------------------------------------------------------------


def _settle_imports() -> None:
    """The imported modules live as long as the process: their objects leave the garbage
    collector's generations (``gc.freeze``), so the collections that a derivation's many
    short-lived expressions trigger do not scan them again and again."""
    gc.freeze()


def _load(spec: str):
    from symgrad import pipeline

    return pipeline.parse(spec)


_FORMATS = {
    "latex": "latex",
    "markdown": "markdown",
    "html": "html",
    "text": "text",
    "dot": "dot",
    "python": "python",
}
#: Comment opener and closer per format, for the line after the marker.
_COMMENT = {"latex": ("% ", ""), "markdown": ("<!-- ", " -->"), "html": ("<!-- ", " -->")}
_COMMENT |= {"dot": ("// ", ""), "text": ("# ", ""), "python": ("# ", "")}


def _with_marker(text: str, to: str, source: str) -> str:
    """The marker line first (``symgrad.files``), then where the file came from (escaped for
    the format's comments: a file name may hold a line break or ``-->``)."""
    fmt = _FORMATS.get(to, "python")
    if text.startswith(with_marker("", fmt)):
        return text
    marked = with_marker(text, fmt)
    first, rest = marked.split("\n", 1)
    opener, closer = _COMMENT[fmt]
    return f"{first}\n{opener}{comment(fmt, f'from {source}')}{closer}\n{rest}"


def _same_file(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _cmd_derive(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    graph_fmt = dot_path = None
    # `derive --graph FILE` alone writes the graph; the text is printed only when asked for
    show = args.output is None and (args.graph is None or args.to is not None)
    args.to = args.to or "text"
    force = bool(getattr(args, "force", False))
    if args.graph:
        graph_fmt = Path(args.graph).suffix.lower().lstrip(".")
        if graph_fmt not in ("dot", "svg", "png"):
            raise SpecError(f"--graph: expected a .dot, .svg or .png file name, got {args.graph!r}")
        dot_path = str(Path(args.graph).with_suffix(".dot"))
        if args.output and any(_same_file(args.output, p) for p in {args.graph, dot_path}):
            raise SpecError(
                f"-o {args.output} and --graph {args.graph} would write the same file "
                "(the .dot is always written beside the graph)",
                field="--graph",
            )
        check_writable(dot_path, force=force, fmt="dot")
        if graph_fmt != "dot":
            check_writable(args.graph, force=force, fmt=graph_fmt)
    if args.output:
        check_writable(args.output, force=force)
    elif out is None and show:
        raise _StdoutClosed("write the derivation to a file with -o FILE")
    if args.hvp and args.to == "latex":
        raise SpecError("--hvp: the Hessian-vector derivation is shown as text or markdown")
    if args.hvp and args.to == "html":
        raise SpecError("--hvp: the Hessian-vector derivation is shown as text or markdown")
    from symgrad import pipeline

    _settle_imports()
    with time_limit(SYMBOLIC_SECONDS, "derive"):
        c = pipeline.compile(args.spec)
        if args.to == "html":
            from symgrad.documents.html import render_html

            text = render_html(c.derivation, form=args.form)
            if shutil.which("dot") is None:
                _note(
                    err,
                    "note: Graphviz 'dot' was not found, so the page has no graph "
                    "(install Graphviz, e.g. apt-get install graphviz, and run again)",
                )
        else:
            text = c.document(to=args.to, form=args.form, standalone=not args.fragment)
        if args.hvp:
            from symgrad.documents.hvp import render_hvp

            text = text.rstrip("\n") + "\n\n" + render_hvp(c.derivation, args.to)
        dot_text = c.graph() if graph_fmt else None
    with OutputSet() as written:  # every file of the command, or none (a full disk)
        if args.output:
            written.track(args.output)
            atomic_write(args.output, _with_marker(text, args.to, args.spec), force=force)
        if graph_fmt and dot_path and dot_text is not None:
            written.track(dot_path)
            atomic_write(dot_path, _with_marker(dot_text, "dot", args.spec), force=force, fmt="dot")
            if graph_fmt != "dot":
                written.track(args.graph)
                rendered = _render_graph(dot_text, args.graph, graph_fmt, force)
    if args.output:
        _note(err, f"wrote {args.output}")
    elif show:
        out.write(text if text.endswith("\n") else text + "\n")
        out.flush()
    if graph_fmt and dot_path:
        _note(err, f"wrote {dot_path}")
        if graph_fmt != "dot" and rendered:
            _note(err, f"wrote {args.graph}")
        elif graph_fmt != "dot":
            _note(
                err,
                f"note: Graphviz 'dot' was not found, so {args.graph} was not rendered; "
                f"render {dot_path} yourself (dot -T{graph_fmt} {dot_path} -o {args.graph})",
            )
    return EXIT_OK


def _render_graph(dot_text: str, path: str, fmt: str, force: bool) -> bool:
    from symgrad.documents.graph import render_graph

    return render_graph(dot_text, path, fmt, force=force)


def _note(err: TextIO | None, text: str) -> None:
    """A progress line on stderr (nothing when stderr is closed)."""
    if err is not None:
        with contextlib.suppress(OSError, ValueError):
            print(text, file=err)


def _cmd_codegen(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from symgrad.backends.registry import lookup, supporting

    target = lookup(args.target)
    if target.write is not None:
        return _codegen_files(args, err)
    check_writable(args.output, force=args.force)
    from symgrad import pipeline

    _settle_imports()
    if args.optimizer is not None and not target.supports("optimizer"):
        known = " or ".join(supporting("optimizer"))
        raise SpecError(f"--optimizer is only for --target {known}, not {args.target}")
    with time_limit(SYMBOLIC_SECONDS, "codegen"):
        c = pipeline.compile(args.spec)
        code = c.code(optimizer=args.optimizer, target=args.target, hvp=args.hvp)
    atomic_write(args.output, _with_marker(code, target.marker, args.spec), force=args.force)
    _note(err, f"wrote {args.output}")
    return EXIT_OK


def _codegen_files(args: argparse.Namespace, err: TextIO) -> int:
    """``codegen`` for a target that writes its own files (``--target c``: NAME.c and
    NAME.h, see ``backends/c_emit.py``)."""
    from symgrad import pipeline
    from symgrad.backends.registry import lookup

    target = lookup(args.target)
    if args.hvp and not target.supports("hvp"):
        raise SpecError(f"--hvp is not available for --target {target.name}")
    if args.optimizer is not None and not target.supports("optimizer"):
        raise SpecError(f"--optimizer is not available for --target {target.name}")
    with time_limit(SYMBOLIC_SECONDS, "codegen"):
        c = pipeline.compile(args.spec)
        paths = target.writer()(
            c.derivation, args.output, dtype=args.dtype, optimizer=args.optimizer,
            source=args.spec, force=args.force,
        )  # fmt: skip
    _note(err, "wrote " + " and ".join(str(p) for p in paths))
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.module is not None and not Path(args.module).is_file():
        raise SpecError("no such file", field="--module", file=args.module)
    if args.against is not AGAINST_CHOICES:  # references named on the command line must exist
        for ref in (r for r in args.against if r != "fd" and importlib.util.find_spec(r) is None):
            raise SpecError(
                f"{ref} is not installed: pip install -e '.[{ref}]', or leave it out",
                field="--against",
            )
    net = _load(args.spec)
    from symgrad.verify.verify import verify_network

    def progress(line: str) -> None:
        _note(err, line)

    report = verify_network(
        net,
        module=args.module,
        dtype=args.dtype,
        against=args.against,
        symbolic=args.symbolic,
        seed=args.seed,
        batch=args.batch,
        timeout=float(args.timeout),
        targets=args.targets,
        progress=progress,
    )
    text = report.format()
    out.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK if report.ok else EXIT_MISMATCH


def _cmd_audit(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    net = _load(args.spec)
    from symgrad import pipeline
    from symgrad.documents.audit import audit_text

    out.write(audit_text(pipeline.derive(net), source=args.spec))
    return EXIT_OK


def _cmd_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.steps is not None:
        if args.grad is not None or args.formula is not None:
            raise SpecError("give either --steps FILE or --grad NAME --formula TEXT, not both")
        return _cmd_check_steps(args, out)
    missing = [f for f, v in (("--grad", args.grad), ("--formula", args.formula)) if v is None]
    if missing:  # worded as argparse words it: they were required before --steps existed
        raise SpecError(
            f"the following arguments are required: {', '.join(missing)} "
            "(check needs --grad NAME and --formula TEXT, or --steps FILE)"
        )
    net = _load(args.spec)
    from symgrad.verify.check import check_formula

    result = check_formula(net, grad=args.grad, formula=args.formula)
    text = result.format()
    out.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK if result.ok else EXIT_MISMATCH


def _cmd_check_steps(args: argparse.Namespace, out: TextIO) -> int:
    path = Path(args.steps)
    if not path.is_file():
        raise SpecError("no such file", field="--steps", file=args.steps)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError("not a UTF-8 text file", field="--steps", file=args.steps) from None
    net = _load(args.spec)
    from symgrad.learn.steps import check_steps

    report = check_steps(net, text, file=args.steps, layout=args.layout)
    text = report.format()
    out.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK if report.ok else EXIT_MISMATCH


def _cmd_exercise(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from symgrad.learn.exercise import make_exercise, write_exercise

    ex = make_exercise(args.seed, args.blank)
    for path in write_exercise(ex, args.output):
        print(f"wrote {path}", file=err)
    sheet = (Path(args.output) / "worksheet.md").as_posix()  # "ex3/" -> ex3/worksheet.md
    print(f"exercise {args.seed}: derive {ex.blank.grad}; see {sheet}", file=out)
    return EXIT_OK


def _cmd_scalar(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from symgrad.learn.scalar import parse_point, scalar

    result = scalar(args.expr, parse_point(args.at), h=args.h)
    out.write(result.format())
    if args.graph:
        written = result.write_graph(args.graph, force=args.force)
        for path in written:
            print(f"wrote {path}", file=err)
        if Path(args.graph).suffix.lower() != ".dot" and str(Path(args.graph)) not in written:
            print(
                f"note: Graphviz 'dot' is not available, so {args.graph} was not rendered", file=err
            )
    return EXIT_OK


_COMMANDS = {
    "derive": _cmd_derive,
    "codegen": _cmd_codegen,
    "verify": _cmd_verify,
    "check": _cmd_check,
    "scalar": _cmd_scalar,
    "exercise": _cmd_exercise,
    "audit": _cmd_audit,
}


# -- entry point -----------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "unknown error"


def _os_error(exc: OSError) -> str:
    reason = exc.strerror or type(exc).__name__
    if exc.filename is not None:
        return f"{exc.filename}: {reason}"
    return reason


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``symgrad`` command; returns the exit code (0 ok, 1 mismatch, 2 bad input,
    130 interrupted)."""
    err = sys.stderr
    try:
        ready()  # from here on, Ctrl-C is a KeyboardInterrupt caught below
        return _main(argv)
    except KeyboardInterrupt:
        if err is not None:
            with contextlib.suppress(OSError, ValueError):
                print("symgrad: interrupted", file=err)
        return EXIT_INTERRUPTED


def _fail(err: TextIO | None, message: str, code: int = EXIT_BAD_INPUT) -> int:
    if err is not None:
        with contextlib.suppress(OSError, ValueError):
            print(f"symgrad: error: {_one_line(message)}", file=err)
    return code


def _main(argv: Sequence[str] | None) -> int:
    out, err = sys.stdout, sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except _UsageError as exc:
        return _fail(err, str(exc))
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    if out is None and args.command in _PRINTING:
        message = f"standard output is closed: {args.command} prints its result there"
        return _fail(err, message, EXIT_MISMATCH)
    if out is None and args.command != "derive":  # nothing of value goes to stdout
        out = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    try:
        return int(_COMMANDS[args.command](args, out, err))
    except _StdoutClosed as exc:
        return _fail(err, f"standard output is closed: {exc}", EXIT_MISMATCH)
    except SpecError as exc:
        return _fail(err, exc.line())
    except (DerivationError, SymgradError) as exc:
        return _fail(err, str(exc))
    except MemoryError:
        return _fail(err, f"{args.command}: out of memory (see the budgets in the documentation)")
    except RecursionError:
        return _fail(err, f"{args.command}: the expressions are nested too deeply")
    except BrokenPipeError:  # stdout closed early (``symgrad derive ... | head``)
        # Keep Python from complaining again when it flushes stdout at exit.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_MISMATCH
    except OSError as exc:
        return _fail(err, _os_error(exc))
    except ModuleNotFoundError as exc:  # a part of symgrad that is not installed
        if exc.name and exc.name.startswith("symgrad"):
            return _fail(err, f"this command is not available: module {exc.name} is missing")
        raise


__all__ = ["build_parser", "main"]
