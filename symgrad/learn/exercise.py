"""Exercises with answer keys: ``symgrad exercise [--seed N] [--blank STEP] -o DIR``.

A random small network, drawn from the catalogue's building blocks (dense layers with the
usual activations, and one of the losses with its usual output layer), with one step of
its backward pass blanked. The folder gets:

- ``network.toml``: the spec, so ``symgrad check DIR/network.toml ...`` grades an answer;
- ``worksheet.md`` / ``worksheet.tex``: the network, its forward pass and the backward
  pass in component and matrix form with the blank to fill in, and the command that
  grades it;
- ``answers.md`` / ``answers.tex``: the answer to the blank and the full derivation
  (rendered by :func:`symgrad.documents.render.render`).

Everything depends on the seed only: the same seed writes identical files.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from symgrad.calculus.reverse import Derivation, Step
from symgrad.errors import SpecError, SymgradError
from symgrad.files import atomic_write, check_writable, with_marker

#: (loss, output activations that go with it)
LOSSES = (
    ("mse", ("identity", "sigmoid", "tanh")),
    ("bce", ("sigmoid",)),
    ("cross_entropy", ("softmax",)),
)
HIDDEN = ("sigmoid", "tanh", "relu", "softplus", "leaky_relu")
FILES = ("network.toml", "worksheet.md", "worksheet.tex", "answers.md", "answers.tex")


@dataclass(frozen=True)
class Exercise:
    """One exercise: its spec text, derivation and blanked step."""

    seed: int
    spec: str
    derivation: Derivation
    blank: Step

    @property
    def answer(self) -> str:
        """The blank's answer in the formula syntax ``check`` reads (component form)."""
        from symgrad.verify.check import formula_text

        return formula_text(self.blank.component)

    @property
    def answer_matrix(self) -> str:
        """The blank's answer in matrix notation, per sample (as the documents print it)."""
        from symgrad.documents.render import TextPrinter

        return TextPrinter().doprint(self.blank.matrix)


def _spec(seed: int) -> str:
    """A random small network as spec text (deterministic in ``seed``)."""
    rng = random.Random(seed)
    loss, outputs = LOSSES[rng.randrange(len(LOSSES))]
    out_act = outputs[rng.randrange(len(outputs))]
    n_hidden = rng.choice((1, 1, 2))
    lines = [
        f'name = "exercise_{seed}"',
        f"input = {rng.randint(2, 4)}",
        f'loss = "{loss}"',
    ]
    for _ in range(n_hidden):
        lines += ["", "[[layer]]", f"units = {rng.randint(3, 5)}"]
        lines.append(f'activation = "{HIDDEN[rng.randrange(len(HIDDEN))]}"')
    units = rng.randint(2, 3) if loss != "bce" else rng.randint(1, 2)
    lines += ["", "[[layer]]", f"units = {units}", f'activation = "{out_act}"']
    return "\n".join(lines) + "\n"


def make_exercise(seed: int = 0, blank: str | None = None) -> Exercise:
    """Draw the exercise for ``seed``; ``blank`` names the step to blank (default: drawn).

    Raises:
        SpecError: ``blank`` names no step this network's backward pass computes.
    """
    from symgrad.frontend.spec import loads_spec
    from symgrad.pipeline import derive

    spec = _spec(seed)
    d = derive(loads_spec(spec, file="network.toml"))
    # The steps a learner can be asked for: computed ones whose answer ``check`` can read
    # and grades right (a ReLU's step() is not in the formula language, for one).
    candidates = [s for s in d.steps if s.needed and _gradable(d, s)]
    names = [s.grad for s in candidates]
    if blank is None:
        # A bias gradient is just the delta: draw among the steps that take some thought.
        pool = [s for s in candidates if not (s.kind == "param" and len(s.indices) == 1)]
        pool = pool or candidates
        step = pool[random.Random(seed * 7919 + 1).randrange(len(pool))]
    elif blank in names:
        step = candidates[names.index(blank)]
    else:
        raise SpecError(
            f"exercise {seed} has no gradable step {blank!r} (choose from: {', '.join(names)})",
            field="--blank",
        )
    return Exercise(seed, spec, d, step)


def _gradable(d: Derivation, step: Step) -> bool:
    from symgrad.verify.check import check_formula, formula_text

    try:
        return check_formula(d.network, step.grad, formula_text(step.component)).ok
    except SymgradError:
        return False


def _lines(ex: Exercise) -> tuple[list[str], list[str], list[str]]:
    """Forward equations, backward steps (component) and backward steps (matrix), the
    blank shown as ``?``."""
    from symgrad.documents.render import TextPrinter
    from symgrad.verify.check import formula_text

    p = TextPrinter()
    fwd = [f"{f.stage.name} = {p.doprint(f.matrix)}" for f in ex.derivation.forward]
    comp, mat = [], []
    for s in ex.derivation.steps:
        if not s.needed:
            continue
        ix = ", ".join(str(i) for i in s.indices)
        if s is ex.blank:
            comp.append(f"{s.grad}[{ix}] = ?        <- your answer")
            mat.append(f"{s.grad} = ?        <- your answer")
        else:
            comp.append(f"{s.grad}[{ix}] = {formula_text(s.component)}")
            mat.append(f"{s.grad} = {p.doprint(s.matrix)}")
    return fwd, comp, mat


def definitions(ex: Exercise) -> list[str]:
    """The loss, with its normalisation, and the definition of every function the network
    uses that is not a standard one (from the op registry's own descriptions)."""
    import sympy as sp

    from symgrad.ir.ops import CUSTOM_FUNCTIONS
    from symgrad.verify.check import formula_text
    from symgrad.verify.stages import is_elementwise

    net = ex.derivation.network
    loss = net.loss
    width = net.size(loss.width) if loss.width is not None else None
    lines = [
        f"L = {formula_text(loss.body)}   (the loss of one sample"
        + (f"; {loss.width} = {width} outputs" if width else "")
        + ")",
        "A batch's loss is the mean of its samples' losses (so a batch gradient carries 1/N).",
    ]
    used: dict[str, str] = {}
    for stage in net.stages:
        for node in sp.preorder_traversal(stage.body):
            if isinstance(node, sp.Function) and node.func in CUSTOM_FUNCTIONS:
                doc = (node.func.__doc__ or "").strip().splitlines()
                used.setdefault(node.func.__name__, doc[0].split(", printed")[0] if doc else "")
    lines += [f"{name}(x): {text}" for name, text in sorted(used.items()) if text]
    for stage in net.stages:  # a layer whose outputs couple its inputs (softmax): its formula
        if not stage.params and not is_elementwise(stage):
            lines.append(f"{stage.name}[i] = {formula_text(stage.body)}")
    return lines


def _grade_command(ex: Exercise, folder: str) -> str:
    return f'symgrad check {folder}/network.toml --grad {ex.blank.grad} --formula "..."'


def worksheet_markdown(ex: Exercise, folder: str = "DIR") -> str:
    fwd, comp, mat = _lines(ex)
    spec = ex.spec.strip()
    return "\n".join(
        [
            f"# Exercise {ex.seed}: one step of backpropagation",
            "",
            "The network (`network.toml`):",
            "",
            "```toml",
            spec,
            "```",
            "",
            "Forward pass, per sample (vectors are columns):",
            "",
            "```",
            *fwd,
            "```",
            "",
            "The loss and the functions used:",
            "",
            "```",
            *definitions(ex),
            "```",
            "",
            f"Backward pass: every step but one is given. Derive **{ex.blank.grad}** "
            f"(dL/d{ex.blank.wrt}, per sample).",
            "",
            "Component form:",
            "",
            "```",
            *comp,
            "```",
            "",
            "Matrix form:",
            "",
            "```",
            *mat,
            "```",
            "",
            "Check your answer (component form with indices, or matrix notation):",
            "",
            "```",
            _grade_command(ex, folder),
            "```",
            "",
        ]
    )


def worksheet_latex(ex: Exercise, folder: str = "DIR") -> str:
    fwd, comp, mat = _lines(ex)

    def verb(lines: list[str]) -> list[str]:
        return ["\\begin{verbatim}", *lines, "\\end{verbatim}"]

    return "\n".join(
        [
            "\\documentclass{article}",
            "\\begin{document}",
            f"\\section*{{Exercise {ex.seed}: one step of backpropagation}}",
            "The network (\\texttt{network.toml}):",
            *verb(ex.spec.strip().splitlines()),
            "Forward pass, per sample (vectors are columns):",
            *verb(fwd),
            "The loss and the functions used:",
            *verb(definitions(ex)),
            "Backward pass: every step but one is given. Derive "
            f"\\texttt{{{ex.blank.grad}}} (per sample).",
            "",
            "Component form:",
            *verb(comp),
            "Matrix form:",
            *verb(mat),
            "Check your answer:",
            *verb([_grade_command(ex, folder)]),
            "\\end{document}",
            "",
        ]
    )


def answers_markdown(ex: Exercise, folder: str = "DIR") -> str:
    from symgrad.documents.render import render

    head = [
        f"# Exercise {ex.seed}: answer key",
        "",
        f"The blank was **{ex.blank.grad}**:",
        "",
        "```",
        f"{ex.blank.grad}[{', '.join(str(i) for i in ex.blank.indices)}] = {ex.answer}",
        f"{ex.blank.grad} = {ex.answer_matrix}",
        "```",
        "",
        "Graded by:",
        "",
        "```",
        f'symgrad check {folder}/network.toml --grad {ex.blank.grad} --formula "{ex.answer}"',
        "```",
        "",
        "The full derivation follows.",
        "",
        "",
    ]
    return "\n".join(head) + render(ex.derivation, to="markdown", standalone=False)


def answers_latex(ex: Exercise) -> str:
    from symgrad.documents.render import render

    body = render(ex.derivation, to="latex", standalone=True)
    ix = ", ".join(str(i) for i in ex.blank.indices)
    note = (
        f"\\section*{{Exercise {ex.seed}: answer key}}\n"
        f"The blank was \\texttt{{{ex.blank.grad}}}:\n"
        f"\\begin{{verbatim}}\n{ex.blank.grad}[{ix}] = {ex.answer}\n"
        f"{ex.blank.grad} = {ex.answer_matrix}\n\\end{{verbatim}}\n"
    )
    return body.replace("\\begin{document}\n", "\\begin{document}\n" + note, 1)


def write_exercise(ex: Exercise, folder: str | Path) -> list[str]:
    """Write the five files into ``folder`` (created if missing; its parent must exist).

    Raises:
        SpecError: the folder cannot be made, or a file symgrad did not write is in the way.
    """
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise SpecError(f"{out} is not a folder", field="-o")
    if not out.exists():
        if not out.parent.is_dir():
            raise SpecError(f"folder {str(out.parent)!r} does not exist", field="-o")
        out.mkdir()
    shown = out.as_posix()
    note = f"symgrad exercise, seed {ex.seed}, blank {ex.blank.grad}"
    texts = {
        "network.toml": ("text", f"# {note}\n{ex.spec}"),
        "worksheet.md": ("markdown", f"<!-- {note} -->\n{worksheet_markdown(ex, shown)}"),
        "worksheet.tex": ("latex", f"% {note}\n{worksheet_latex(ex, shown)}"),
        "answers.md": ("markdown", f"<!-- {note} -->\n{answers_markdown(ex, shown)}"),
        "answers.tex": ("latex", f"% {note}\n{answers_latex(ex)}"),
    }
    for name in FILES:  # check every target first: nothing is half-written
        check_writable(out / name, fmt=texts[name][0])
    # All or nothing: every file is written into a fresh folder beside the others first
    # (a full disk fails there, leaving no worksheet without its answers); then each is
    # moved into place, which takes no new space.
    staging = Path(tempfile.mkdtemp(prefix=".symgrad-exercise-", dir=out))
    try:
        for name in FILES:
            fmt, text = texts[name]
            atomic_write(staging / name, with_marker(text, fmt), fmt=fmt)
        for name in FILES:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [str(out / name) for name in FILES]


__all__ = ["Exercise", "make_exercise", "write_exercise"]
