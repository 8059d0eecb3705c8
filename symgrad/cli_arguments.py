"""The ``symgrad`` command line's arguments: the parser, its help texts and argument types.

Each subcommand's options are added by one function (``_add_derive`` ...); the parsed
``command`` names the subcommand :mod:`symgrad.cli` runs.
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from symgrad._version import __version__

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
edited generated file, a generated torch, JAX or CuPy module: called with its
own library's arrays). Exit code 1 means some gradient did not match.
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
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="symgrad",
        description=_MAIN_DESCRIPTION,
        epilog=_MAIN_EPILOG,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"symgrad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_derive(sub, formatter)
    _add_codegen(sub, formatter)
    _add_verify(sub, formatter)
    _add_check(sub, formatter)
    _add_scalar(sub, formatter)
    _add_exercise(sub, formatter)
    _add_audit(sub, formatter)
    return parser


def _add_derive(sub: Any, formatter: Any) -> None:
    """The ``derive`` command's arguments."""
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


def _add_codegen(sub: Any, formatter: Any) -> None:
    """The ``codegen`` command's arguments."""
    from symgrad.backends import registry  # the --target choices

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


def _add_verify(sub: Any, formatter: Any) -> None:
    """The ``verify`` command's arguments."""
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
    p.add_argument(
        "--batch",
        type=_positive,
        default=None,
        help="batch size of the first call (default: 4, or the next size that is no width "
        "of the network); loss_and_grads is also called on two batches of other sizes and "
        "once more at the first point",
    )
    p.add_argument(
        "--timeout",
        type=_positive,
        default=60,
        metavar="SECONDS",
        help="time limit for everything the module does, generated or --module (default: "
        "60); past it, or out of memory, verify stops with one line (exit 2). A --module "
        "runs in a child process of its own: one that exits is a failure, and every "
        "process it started is killed when verify ends",
    )
    p.add_argument(
        "--targets",
        choices=("real", "positive", "unit", "onehot", "probabilities"),
        default=None,
        help="the domain targets Y are drawn from (default: the spec's 'targets', else "
        "what the loss needs: probabilities for cross_entropy, (0, 1) for bce, else real)",
    )


def _add_check(sub: Any, formatter: Any) -> None:
    """The ``check`` command's arguments."""
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
        "(Nielsen's form; with batch norm, the batch with samples as columns); default: the "
        "one that fits the file",
    )


def _add_scalar(sub: Any, formatter: Any) -> None:
    """The ``scalar`` command's arguments."""
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


def _add_exercise(sub: Any, formatter: Any) -> None:
    """The ``exercise`` command's arguments."""
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


def _add_audit(sub: Any, formatter: Any) -> None:
    """The ``audit`` command's arguments."""
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


__all__ = ["AGAINST_CHOICES", "build_parser"]
