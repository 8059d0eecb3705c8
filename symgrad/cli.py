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
import importlib.util
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, TextIO

from symgrad._version import __version__
from symgrad.errors import DerivationError, SpecError, SymgradError
from symgrad.escape import comment
from symgrad.files import atomic_write, check_writable, with_marker

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_BAD_INPUT = 2

AGAINST_CHOICES = ("fd", "torch", "jax")

_SPEC_HELP = "a network spec: a .toml file, or path/to/file.py:NAME naming a symgrad.Network"

_MAIN_DESCRIPTION = """\
Derive backpropagation symbolically for a small network described in a TOML spec
(or built with the Python API), then show the derivation, turn it into NumPy code,
and check code or your own formulas against it.

A spec looks like:

  name = "seed_net"
  input = 3
  loss = "mse"

  [[layer]]
  units = 4
  activation = "sigmoid"

  [[layer]]
  units = 2
  activation = "sigmoid"
"""

_MAIN_EPILOG = """\
examples:
  symgrad derive examples/seed_net.toml                     # the derivation as text
  symgrad derive examples/seed_net.toml --to latex -o d.tex
  symgrad codegen examples/seed_net.toml -o seed_net.py     # a NumPy module
  symgrad verify examples/seed_net.toml                     # check that module's gradients
  symgrad check examples/seed_net.toml --grad W2 --formula "..."
  symgrad scalar "3*x**2 - 4*x + 5" --at x=3                # the scalar explorer
  symgrad audit examples/seed_net.toml                      # numerical hazards per statement

exit codes: 0 ok, 1 verification mismatch, 2 bad input.
Run 'symgrad COMMAND --help' for the options of one command.
"""

_DERIVE_EPILOG = """\
examples:
  symgrad derive examples/seed_net.toml
  symgrad derive examples/seed_net.toml --form matrix --to markdown
  symgrad derive examples/softmax_classifier.toml --to latex -o derivation.tex
  symgrad derive examples/custom.toml --to latex --fragment -o body.tex
  symgrad derive examples/seed_net.toml --graph graph.svg
  symgrad derive examples/seed_net.toml --to html -o page.html
  symgrad derive my_nets.py:net --to markdown

Files written with -o and --graph start with a 'symgrad:generated' comment line; an
existing file without it is never overwritten unless --force is given (a .png cannot
carry the comment: an existing one needs --force). Symbolic links are never written
through, devices and pipes never replaced.
"""

_CODEGEN_EPILOG = """\
examples:
  symgrad codegen examples/seed_net.toml -o seed_net.py
  symgrad codegen examples/softmax_classifier.toml -o clf.py --optimizer adam
  symgrad codegen my_nets.py:net -o net_grads.py --force

The module needs only numpy and defines PARAM_NAMES, PARAM_SHAPES, init_params,
forward, loss and loss_and_grads. The file is written atomically; an existing file
that symgrad did not generate is left alone unless --force is given.
"""

_VERIFY_EPILOG = """\
examples:
  symgrad verify examples/seed_net.toml                 # freshly generated code
  symgrad verify examples/seed_net.toml --module my_backprop.py
  symgrad verify examples/seed_net.toml --against fd,torch --dtype float32
  symgrad verify examples/custom.toml --symbolic --seed 1 --batch 8

--module takes any Python file that defines PARAM_NAMES, PARAM_SHAPES,
init_params, forward, loss and loss_and_grads (a hand-written backprop, an
edited generated file). Exit code 1 means some gradient did not match.
"""

_CHECK_EPILOG = """\
examples:
  symgrad check examples/seed_net.toml --grad dW2 --formula "delta2 a1^T"
  symgrad check examples/seed_net.toml --grad delta1 --formula "(W2^T delta2) * a1 * (1 - a1)"
  symgrad check examples/seed_net.toml --grad da1/dz1 --formula "z1*(1 - z1)"   # wrong: a1(1 - a1)
  symgrad check examples/seed_net.toml --grad dW2 --formula "delta2[p]*a1[q]"
  symgrad check examples/seed_net.toml --steps my_backward.py   # a whole backward pass

NAME is a derived quantity: a parameter gradient (dW2, db1, or just W2), a delta
(delta1 = dL/dz1), an activation gradient (da1), dx, or a local derivative (da1/dz1).
The formula is per sample, in matrix notation (vectors are columns; * or ⊙ elementwise,
juxtaposition or @ the matrix product, ^T or .T a transpose; outer, dot, sum, diag)
or in component form with subscripts (free index i for vectors, p, q for matrices,
sums as sum(expr, k)). Exit code 0 means it equals the derived gradient, 1 that it
does not (or that it is right under only one reading of * versus juxtaposition:
AMBIGUOUS): the report shows the derived formula, a numeric counterexample and hints.

--steps FILE checks a whole backward pass: NumPy assignments in the batched form of
the generated code (rows are samples: X, Y, z1, a1, ..., yhat, W1, b1, ..., N the batch
size), e.g. "delta2 = ...", "dW2 = delta2.T @ a1", with intermediates of your own. The
file is parsed, never executed. Exit 0: every step right; 1: the first wrong line is
shown with what it should be, the likely slip and a counterexample.
"""


_SCALAR_EPILOG = """\
examples:
  symgrad scalar "3*x**2 - 4*x + 5" --at x=3                 # 14, and 14.003 with h = 0.001
  symgrad scalar "a*b + c" --at a=2,b=-3,c=10 --graph d.svg  # -3, 2, 1, and the graph
  symgrad scalar "tanh(w*x + b)" --at w=0.5,x=2,b=-1 --h 1e-6
  symgrad scalar -- "-x**2" --at x=1                         # '--' before a leading minus

EXPR uses numbers, + - * / **, and exp log sqrt abs tanh cosh sinh sin cos sigmoid
max min; every other name is a variable and needs a value in --at.
"""


_EXERCISE_EPILOG = """\
examples:
  symgrad exercise --seed 3 -o ex3                  # ex3/worksheet.md, ex3/answers.md ...
  symgrad exercise --seed 3 --blank dW1 -o ex3
  symgrad check ex3/network.toml --grad delta1 --formula "..."   # grade your answer
"""


class _UsageError(Exception):
    """An argparse usage error, reported as one line."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are exceptions (so main() prints one line)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.split()
        hint = f" (see '{' '.join(command)} --help')"
        raise _UsageError(message + hint)


def _against(text: str) -> tuple[str, ...]:
    """Parse ``--against fd,torch,jax``."""
    items = tuple(part.strip() for part in text.split(",") if part.strip())
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list, e.g. fd,torch")
    for item in items:
        if item not in AGAINST_CHOICES:
            raise argparse.ArgumentTypeError(
                f"unknown reference {item!r} (choose from {', '.join(AGAINST_CHOICES)})"
            )
    return tuple(dict.fromkeys(items))


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"a seed must be in 0 .. 2**32-1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``symgrad`` command."""
    from symgrad.backends import registry  # the --target choices

    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="symgrad",
        description=_MAIN_DESCRIPTION,
        epilog=_MAIN_EPILOG,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"symgrad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "derive",
        help="show the backprop derivation (text, Markdown or LaTeX)",
        description="Derive every gradient of the network step by step, in component "
        "form (indices, sums) and/or matrix form, and print it as text, Markdown or LaTeX.",
        epilog=_DERIVE_EPILOG,
        formatter_class=formatter,
    )
    p.add_argument("spec", metavar="SPEC", help=_SPEC_HELP)
    p.add_argument(
        "--form",
        choices=("component", "matrix", "both"),
        default="both",
        help="component form (indices), matrix form (vectors, batched rows) or both "
        "(default: both)",
    )
    p.add_argument(
        "--to",
        choices=("latex", "markdown", "text", "html"),
        default=None,
        help="output format (default: text; with --graph and no -o, nothing is printed "
        "unless --to is given); html: one self-contained page (math, graph "
        "and the generated code, no network needed to view it)",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.add_argument(
        "--fragment",
        action="store_true",
        help="LaTeX/Markdown body only, without the document preamble",
    )
    p.add_argument(
        "--graph",
        metavar="FILE",
        help="also write the computation graph: FILE.dot, or FILE.svg / FILE.png "
        "(rendered with Graphviz 'dot' when installed; the .dot is always written)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="overwrite FILE (and the graph files) even if symgrad did not write them",
    )
    p.add_argument(
        "--hvp",
        action="store_true",
        help="also show the Hessian-vector derivation (the R-operator of every step; "
        "text and markdown)",
    )
    p.set_defaults(run=_cmd_derive)

    p = sub.add_parser(
        "codegen",
        help="generate a standalone NumPy module with forward and backward passes",
        description="Generate a Python module (only numpy needed) that computes the loss "
        "and its gradients, each backward statement commented with its formula.",
        epilog=_CODEGEN_EPILOG,
        formatter_class=formatter,
    )
    p.add_argument("spec", metavar="SPEC", help=_SPEC_HELP)
    p.add_argument(
        "-o", "--output", metavar="MODULE.py", required=True, help="the module file to write"
    )
    p.add_argument(
        "--force", action="store_true", help="overwrite MODULE.py even if symgrad did not write it"
    )
    p.add_argument(
        "--optimizer",
        choices=("sgd", "momentum", "adam"),
        default=None,
        help="also emit a training step with this optimizer",
    )
    p.add_argument(
        "--target",
        choices=registry.names(),
        default="numpy",
        help="the array library of the module (default: numpy); torch and jax modules "
        "plug the derived backward passes into autograd; c writes NAME.c and NAME.h (C99)",
    )
    p.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default="float64",
        help="the C target's number type (default: float64)",
    )
    p.add_argument(
        "--hvp",
        action="store_true",
        help="also emit hvp(params, X, Y, V) and ggnvp(params, X, Y, V) (second order)",
    )
    p.set_defaults(run=_cmd_codegen)

    p = sub.add_parser(
        "verify",
        help="check gradients numerically (finite differences, PyTorch, JAX)",
        description="Check every gradient of generated code (or of --module) against "
        "central finite differences in float64, and against PyTorch/JAX autograd when "
        "installed. Prints a per-parameter report; exits 1 on any mismatch.",
        epilog=_VERIFY_EPILOG,
        formatter_class=formatter,
    )
    p.add_argument("spec", metavar="SPEC", help=_SPEC_HELP)
    p.add_argument(
        "--module",
        metavar="FILE.py",
        help="verify this module instead of freshly generated code",
    )
    p.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default="float64",
        help="dtype to run the module in (default: float64)",
    )
    p.add_argument(
        "--against",
        type=_against,
        default=AGAINST_CHOICES,
        metavar="LIST",
        help="comma-separated references: fd, torch, jax (default: all; "
        "torch and jax are used when installed)",
    )
    p.add_argument(
        "--symbolic",
        action="store_true",
        help="also evaluate the symbolic derivation itself at the same point",
    )
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default: 0)")
    p.add_argument("--batch", type=_positive, default=4, help="batch size (default: 4)")
    p.add_argument(
        "--timeout",
        type=_positive,
        default=60,
        metavar="SECONDS",
        help="time limit for everything --module does (default: 60); it runs in a child "
        "process, so a module that exits or hangs is a failure, not a crash",
    )
    p.add_argument(
        "--targets",
        choices=("real", "positive", "unit", "onehot", "probabilities"),
        default=None,
        help="the domain targets Y are drawn from (default: the spec's 'targets', else "
        "what the loss needs: probabilities for cross_entropy, (0, 1) for bce, else real)",
    )
    p.set_defaults(run=_cmd_verify)

    p = sub.add_parser(
        "check",
        help="check your own formula for a gradient against the derivation",
        description="Check my derivation: is FORMULA a correct expression for the "
        "gradient NAME? Exits 0 if it equals the derived gradient, 1 if not.",
        epilog=_CHECK_EPILOG,
        formatter_class=formatter,
    )
    p.add_argument("spec", metavar="SPEC", help=_SPEC_HELP)
    p.add_argument(
        "--grad",
        metavar="NAME",
        help="the gradient to check, e.g. dW2, delta1, da1 or da1/dz1",
    )
    p.add_argument(
        "--formula",
        metavar="TEXT",
        help='your formula, e.g. "delta2 a1^T" or "delta2[p]*a1[q]"',
    )
    p.add_argument(
        "--steps",
        metavar="BACKWARD.py",
        help="instead of one formula: a whole backward pass, NumPy assignments in the "
        "batched form (rows are samples), checked line by line; never executed",
    )
    p.add_argument(
        "--layout",
        choices=("rows", "column"),
        default=None,
        help="with --steps: batched rows (samples are rows) or one sample's column vectors "
        "(Nielsen's form); default: the one that fits the file",
    )
    p.set_defaults(run=_cmd_check)

    p = sub.add_parser(
        "scalar",
        help="derivatives of a scalar expression at a point, step by step",
        description="The scalar explorer: the partial derivatives of EXPR symbolically, "
        "their values at the point, forward finite differences and how their error "
        "depends on h, and the chain rule on the expression graph (micrograd-style).",
        epilog=_SCALAR_EPILOG,
        formatter_class=formatter,
    )
    p.add_argument("expr", metavar="EXPR", help='the expression, e.g. "3*x**2 - 4*x + 5"')
    p.add_argument(
        "--at",
        metavar="x=3,...",
        default="",
        help="a value for every variable of EXPR, e.g. a=2,b=-3,c=10",
    )
    p.add_argument(
        "--h", type=float, default=1e-3, help="the finite-difference step (default: 0.001)"
    )
    p.add_argument(
        "--graph",
        metavar="FILE",
        help="also write the expression graph with each node's value and gradient: "
        "FILE.dot, or FILE.svg / FILE.png (rendered with Graphviz 'dot'; the .dot is "
        "always written)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace graph files symgrad did not write (and an existing PNG)",
    )
    p.set_defaults(run=_cmd_scalar)

    p = sub.add_parser(
        "exercise",
        help="a random small network with one backward step blanked, and its answer key",
        description="Write an exercise: a random small network (network.toml) with one "
        "step of its backward pass blanked (worksheet.md, worksheet.tex) and the answer "
        "key with the full derivation (answers.md, answers.tex). The same seed writes "
        "the same files; grade an answer with 'symgrad check DIR/network.toml'.",
        epilog=_EXERCISE_EPILOG,
        formatter_class=formatter,
    )
    p.add_argument("--seed", type=_seed, default=0, help="which exercise (default: 0)")
    p.add_argument("--blank", metavar="STEP", help="the step to blank, e.g. delta1 or dW2")
    p.add_argument("-o", "--output", metavar="DIR", required=True, help="the folder to write")
    p.set_defaults(run=_cmd_exercise)

    p = sub.add_parser(
        "audit",
        help="numerical hazards: what was rewritten for stability, what remains",
        description="For every statement of the generated forward and backward program: "
        "the formula, the stable form it is computed in, the rewrites applied (before -> "
        "after, and the hazard each removes) and the hazards that remain (overflow, "
        "division by a value that can reach 0, log of 0, cancellation). Exits 0.",
        formatter_class=formatter,
    )
    p.add_argument("spec", metavar="SPEC", help=_SPEC_HELP)
    p.set_defaults(run=_cmd_audit)
    return parser


# -- subcommands -----------------------------------------------------------------------


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
        raise SpecError("standard output is closed: write to a file with -o FILE")
    if args.hvp and args.to == "latex":
        raise SpecError("--hvp: the Hessian-vector derivation is shown as text or markdown")
    if args.hvp and args.to == "html":
        raise SpecError("--hvp: the Hessian-vector derivation is shown as text or markdown")
    from symgrad import pipeline

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
    dot_text = None
    if graph_fmt:
        from symgrad.documents.graph import render_graph

        dot_text = c.graph()
    if args.output:
        atomic_write(args.output, _with_marker(text, args.to, args.spec), force=force)
        _note(err, f"wrote {args.output}")
    elif show:
        out.write(text if text.endswith("\n") else text + "\n")
        out.flush()
    if graph_fmt and dot_path and dot_text is not None:
        atomic_write(dot_path, _with_marker(dot_text, "dot", args.spec), force=force, fmt="dot")
        _note(err, f"wrote {dot_path}")
        if graph_fmt != "dot":
            if render_graph(dot_text, args.graph, graph_fmt, force=force):
                _note(err, f"wrote {args.graph}")
            else:
                _note(
                    err,
                    f"note: Graphviz 'dot' was not found, so {args.graph} was not rendered; "
                    f"render {dot_path} yourself (dot -T{graph_fmt} {dot_path} -o {args.graph})",
                )
    return EXIT_OK


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

    if args.optimizer is not None and not target.supports("optimizer"):
        known = " or ".join(supporting("optimizer"))
        raise SpecError(f"--optimizer is only for --target {known}, not {args.target}")
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


# -- entry point -----------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "unknown error"


def _os_error(exc: OSError) -> str:
    reason = exc.strerror or type(exc).__name__
    if exc.filename is not None:
        return f"{exc.filename}: {reason}"
    return reason


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``symgrad`` command; returns the exit code (0 ok, 1 mismatch, 2 bad input)."""
    out, err = sys.stdout, sys.stderr

    def fail(message: str) -> int:
        print(f"symgrad: error: {_one_line(message)}", file=err)
        return EXIT_BAD_INPUT

    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except _UsageError as exc:
        return fail(str(exc))
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    if out is None and args.command != "derive":  # stdout closed: the exit code still tells
        out = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    try:
        return int(args.run(args, out, err))
    except SpecError as exc:
        return fail(exc.line())
    except (DerivationError, SymgradError) as exc:
        return fail(str(exc))
    except BrokenPipeError:  # stdout closed early (``symgrad derive ... | head``)
        # Keep Python from complaining again when it flushes stdout at exit.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_MISMATCH
    except OSError as exc:
        return fail(_os_error(exc))
    except ModuleNotFoundError as exc:  # a part of symgrad that is not installed
        if exc.name and exc.name.startswith("symgrad"):
            return fail(f"this command is not available: module {exc.name} is missing")
        raise
    except KeyboardInterrupt:
        print("symgrad: interrupted", file=err)
        return 130


__all__ = ["build_parser", "main"]
