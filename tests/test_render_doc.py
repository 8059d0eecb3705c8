"""Printing: derivation -> LaTeX/Markdown. Golden files, notation and typesetting checks.

Regenerate the golden files with ``SYMGRAD_UPDATE_GOLDEN=1 python -m pytest
tests/test_render_doc.py`` and review the diff.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import sympy as sp
from catalogue import catalogue

from symgrad import Dense, Map, a, build, derive, i, j, n, x, y_s, yhat_s
from symgrad.calculus.layout import BMatMul, BOuter, ColSum, N, RowSum
from symgrad.calculus.matrix_form import Mat, MatVec, Outer, SumAll, TMatVec, Vec
from symgrad.documents.latex_breaking import break_expression, split_terms, visual_width
from symgrad.documents.latex_printer import latex, quantity
from symgrad.documents.layout import LINE_WIDTH, equation_lines
from symgrad.documents.model import Eq, M
from symgrad.documents.render import render, render_fragment_for_jupyter

GOLDEN = Path(__file__).parent / "golden" / "derivation"
UPDATE = os.environ.get("SYMGRAD_UPDATE_GOLDEN", "") not in ("", "0")

L2NORM = a[i] / sp.sqrt(sp.Sum(a[j] ** 2, (j, 0, n - 1)) + sp.Float(1e-6))
SOFTSIGN = x / (1 + sp.Abs(x))
LOGCOSH = ("logcosh", sp.log(sp.cosh(yhat_s - y_s)))


def seed_net():
    return build("seed_net", 3, [Dense(4, "sigmoid"), Dense(2, "sigmoid")], "mse")


def softmax_ce():
    return build("softmax_ce", 4, [Dense(5, "tanh"), Dense(3, "softmax")], "cross_entropy")


def deep_custom():
    """Map layer, custom activation, custom loss, no bias, 4 layers."""
    return build(
        "deep_custom",
        3,
        [
            Dense(5, "tanh"),
            Map(L2NORM, name="l2norm"),
            Dense(3, SOFTSIGN),
            Dense(2, "sigmoid", bias=False),
        ],
        LOGCOSH,
    )


@pytest.fixture(scope="module")
def seed():
    return derive(seed_net())


@pytest.fixture(scope="module")
def smce():
    return derive(softmax_ce())


@pytest.fixture(scope="module")
def seed_md(seed):
    return render(seed, "markdown")


@pytest.fixture(scope="module")
def seed_tex(seed):
    return render(seed, "latex")


@pytest.fixture(scope="module")
def smce_tex(smce):
    return render(smce, "latex")


def _section(doc: str, heading: str) -> str:
    """The text of the (sub)section whose heading contains ``heading``."""
    start = doc.index(heading)
    nxt = [m.start() for m in re.finditer(r"\\(sub)?section\*|\n#{2,3} ", doc) if m.start() > start]
    return doc[start : nxt[0] if nxt else len(doc)]


# ---------------------------------------------------------------------------------------
# golden files
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("net", "to", "suffix"),
    [
        (seed_net, "markdown", "md"),
        (seed_net, "latex", "tex"),
        (softmax_ce, "markdown", "md"),
        (softmax_ce, "latex", "tex"),
    ],
    ids=["seed-md", "seed-tex", "softmax_ce-md", "softmax_ce-tex"],
)
def test_golden(net, to, suffix):
    network = net()
    text = render(derive(network), to)
    path = GOLDEN / f"{network.name}.{suffix}"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if not path.exists():
        pytest.fail(f"missing golden file {path}: run with SYMGRAD_UPDATE_GOLDEN=1")
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"{path.name} changed: rerun with SYMGRAD_UPDATE_GOLDEN=1 and review"


# ---------------------------------------------------------------------------------------
# notation
# ---------------------------------------------------------------------------------------
def test_quantity_names():
    assert quantity("z2", "component", ["i"]) == "z^{[2]}_{i}"
    assert quantity("W2", "component", ["k", "i"]) == "W^{[2]}_{ki}"
    assert quantity("delta2", "component", ["k"]) == r"\delta^{[2]}_{k}"
    assert quantity("da1") == r"\frac{\partial \ell}{\partial a^{[1]}}"
    assert quantity("dW2") == r"\frac{\partial \ell}{\partial W^{[2]}}"
    # batched adjoints, and a parameter's gradient over the batch, are of the mean loss
    assert quantity("da1", "batched") == r"\frac{\partial \mathcal{L}}{\partial A^{[1]}}"
    assert quantity("dW2", "vector", batch_loss=True).startswith(r"\frac{\partial \mathcal{L}}")
    assert quantity("x", "component", ["j"]) == "x_{j}"
    assert quantity("a1", "vector") == r"\mathbf{a}^{[1]}"
    assert quantity("delta2", "vector") == r"\boldsymbol{\delta}^{[2]}"
    assert quantity("W2", "vector", matrix=True, transpose=True) == r"W^{[2]\top}"
    assert quantity("a1", "batched") == "A^{[1]}"
    assert quantity("delta2", "batched") == r"\Delta^{[2]}"
    assert quantity("x", "batched") == "X"
    assert quantity("y", "batched") == "Y"
    assert quantity("a2", "component", ["i"], yhat="a2") == r"\hat{y}_{i}"


def test_matrix_operators():
    W, v, u = Mat("W2"), Vec("delta2"), Vec("a1")
    assert latex(MatVec(W, u), "vector") == r"W^{[2]} \mathbf{a}^{[1]}"
    assert latex(TMatVec(W, v), "vector") == r"W^{[2]\top} \boldsymbol{\delta}^{[2]}"
    assert latex(Outer(v, u), "vector") == r"\boldsymbol{\delta}^{[2]} \mathbf{a}^{[1]\top}"
    assert latex(SumAll(u * v), "vector") == r"\mathbf{a}^{[1]\top} \boldsymbol{\delta}^{[2]}"
    assert latex(SumAll(sp.exp(u)), "vector") == r"\mathbf{1}^{\top} e^{\mathbf{a}^{[1]}}"
    # adjoints first: the chain rule reads upstream times local derivative
    assert latex(u * v, "vector") == r"\boldsymbol{\delta}^{[2]} \odot \mathbf{a}^{[1]}"
    # scalar factors are ordinary products
    assert latex(2 * u / sp.Symbol("n_2", integer=True, positive=True), "vector") == (
        r"\frac{2}{n_{2}} \mathbf{a}^{[1]}"
    )
    assert latex(BMatMul(u, W, 1), "batched") == r"A^{[1]} W^{[2]\top}"
    assert latex(BMatMul(v, W, 0), "batched") == r"\Delta^{[2]} W^{[2]}"
    assert latex(RowSum(u), "batched") == r"A^{[1]} \mathbf{1}"
    assert latex(ColSum(v), "batched") == r"\mathbf{1}^{\top} \Delta^{[2]}"
    assert latex(BOuter(v, u), "batched") == r"\Delta^{[2]\top} A^{[1]}"
    assert latex(u / N, "batched") == r"\frac{1}{N} A^{[1]}"


def test_component_printing():
    k = sp.Symbol("k", integer=True)
    W, d = sp.IndexedBase("W2"), sp.IndexedBase("delta2")
    n2 = sp.Symbol("n_2", integer=True, positive=True)
    s = sp.Sum(W[k, i] * d[k], (k, 0, n2 - 1))
    assert latex(s) == r"\sum_{k=1}^{n_{2}} \delta^{[2]}_{k} W^{[2]}_{ki}"
    assert latex(sp.KroneckerDelta(i, k)) == r"[i = k]"
    from symgrad.ir.ops import sigmoid, step

    z = sp.IndexedBase("z1")
    assert latex(sigmoid(z[i])) == r"\sigma(z^{[1]}_{i})"
    assert latex(step(z[i])) == r"[z^{[1]}_{i} > 0]"
    assert latex(sp.IndexedBase("a1")[i] ** 2) == r"(a^{[1]}_{i})^{2}"


# ---------------------------------------------------------------------------------------
# content
# ---------------------------------------------------------------------------------------
def test_sigmoid_derivative_in_forward_values(seed_tex):
    step = _section(seed_tex, r"\delta^{[1]} = ")
    # the local Jacobian of the sigmoid, written in the forward value a = sigma(z)
    assert r"&= a^{[1]}_{i} (1 - a^{[1]}_{i}) [i = k]" in step
    assert r"\frac{\partial \ell}{\partial a^{[1]}_{k}} a^{[1]}_{k} (1 - a^{[1]}_{k})" in step


def test_diagonal_step_matrix_form(seed_tex):
    step = _section(seed_tex, r"\delta^{[1]} = ")
    assert r"\operatorname{diag}(\mathbf{a}^{[1]} \odot (1 - \mathbf{a}^{[1]}))" in step
    assert (
        r"\frac{\partial \ell}{\partial \mathbf{a}^{[1]}} \odot \mathbf{a}^{[1]} "
        r"\odot (1 - \mathbf{a}^{[1]})" in step
    )
    assert r"\Delta^{[1]} &= \frac{\partial \mathcal{L}}{\partial Z^{[1]}}" in step


def test_chain_rule_written_out(seed_tex):
    step = _section(seed_tex, r"\delta^{[2]} = ")
    assert (
        r"\sum_{i=1}^{n_{2}} \frac{\partial \ell}{\partial a^{[2]}_{i}} "
        r"\frac{\partial a^{[2]}_{i}}{\partial z^{[2]}_{k}}" in step
    )
    # the multivariable chain rule is stated once, before the first step
    assert seed_tex.count("multivariable chain rule") == 1
    # the same kind of step in another layer refers back instead of repeating the derivation
    d1 = _section(seed_tex, r"\delta^{[1]} = ")
    assert "As for" in d1 and r"\delta^{[2]}" in d1
    assert r"a^{[1]}_{i} (1 - a^{[1]}_{i}) [i = k]" in d1


def test_fused_seed_step(seed_tex):
    step = _section(seed_tex, r"\delta^{[2]} = ")
    # unfused form first, then the fused result with the loss gradient substituted
    assert r"\frac{\partial \ell}{\partial a^{[2]}_{k}} a^{[2]}_{k} (1 - a^{[2]}_{k})" in step
    assert r"\frac{2}{n_{2}} a^{[2]}_{k} (1 - a^{[2]}_{k}) (a^{[2]}_{k} - y_{k})" in step
    assert r"\frac{2}{N \, n_{2}} A^{[2]} \odot (1 - A^{[2]}) \odot (A^{[2]} - Y)" in step


def test_loss_uses_yhat(seed_tex):
    loss = _section(seed_tex, "Loss (mse)")
    assert r"\frac{1}{n_{2}} \sum_{i=1}^{n_{2}} (\hat{y}_{i} - y_{i})^{2}" in loss
    assert r"(\hat{\mathbf{y}} - \mathbf{y})^{\top} (\hat{\mathbf{y}} - \mathbf{y})" in loss
    grad = _section(seed_tex, "(loss gradient)")
    assert r"\frac{\partial \ell}{\partial \hat{y}_{i}}" in grad
    assert "Not materialised" in grad


def test_batched_forms(seed_tex):
    fwd = _section(seed_tex, "Forward pass")
    assert r"Z^{[1]} &= X W^{[1]\top} + \mathbf{1} \mathbf{b}^{[1]\top}" in fwd
    assert r"Z^{[2]} &= A^{[1]} W^{[2]\top} + \mathbf{1} \mathbf{b}^{[2]\top}" in fwd
    assert r"\mathbf{z}^{[1]} &= W^{[1]} \mathbf{x} + \mathbf{b}^{[1]}" in fwd
    assert r"z^{[1]}_{i} &= \sum_{j=1}^{n_{0}} W^{[1]}_{ij} x_{j} + b^{[1]}_{i}" in fwd
    dw = _section(seed_tex, r"\partial W^{[2]}$ (weight")
    assert r"\boldsymbol{\delta}^{[2]} \mathbf{a}^{[1]\top}" in dw
    assert r"\Delta^{[2]\top} A^{[1]}" in dw
    db = _section(seed_tex, r"\partial b^{[2]}$")
    assert (
        r"\frac{\partial \mathcal{L}}{\partial \mathbf{b}^{[2]}} &= \mathbf{1}^{\top} \Delta^{[2]}"
        in db  # per sample and batched: one display, the rows in two columns
    )
    da = _section(seed_tex, r"\partial a^{[1]}$ (through dense")
    assert r"\frac{\partial \mathbf{z}^{[2]}}{\partial \mathbf{a}^{[1]}} &= W^{[2]}" in da
    assert r"W^{[2]\top} \boldsymbol{\delta}^{[2]}" in da
    assert r"\Delta^{[2]} W^{[2]}" in da


def test_dx_shown_last_and_marked(seed_tex):
    backward = seed_tex[seed_tex.index("Backward pass") : seed_tex.index("Summary")]
    last = backward[backward.rindex(r"\subsection*") :]
    assert r"\partial x$" in last.splitlines()[0]
    assert "does not compute it" in last
    assert r"\Delta^{[1]} W^{[1]}" in last


def test_step_order_follows_derivation(seed, seed_tex):
    backward = seed_tex[seed_tex.index("Backward pass") : seed_tex.index("Summary per sample")]
    heads = re.findall(r"\\subsection\*\{(.*)\}", backward)
    assert len(heads) == len(seed.steps)
    for head, step in zip(heads, seed.steps, strict=True):
        base = step.wrt.rstrip("0123456789")
        layer = step.wrt[len(base) :]
        assert (f"{base}^{{[{layer}]}}" if layer else base) in head


def test_softmax_full_jacobian(smce_tex):
    step = _section(smce_tex, r"\delta^{[2]} = ")
    assert "full Jacobian" in step
    assert r"= a^{[2]}_{i} [i = k] - a^{[2]}_{i} a^{[2]}_{k}" in step
    assert r"\operatorname{diag}(\mathbf{a}^{[2]}) - \mathbf{a}^{[2]} \mathbf{a}^{[2]\top}" in step


def test_cross_entropy_fused_delta(smce_tex):
    step = _section(smce_tex, r"\delta^{[2]} = ")
    # the unfused form through the full Jacobian, then the fused result
    assert r"\sum_{i=1}^{n_{2}} \frac{\partial \ell}{\partial a^{[2]}_{i}} a^{[2]}_{i}" in step
    # line by line: -y_k + a_k sum_i y_i, then sum_i y_i = 1
    assert r"= a^{[2]}_{k} \sum_{i=1}^{n_{2}} y_{i} - y_{k} = a^{[2]}_{k} - y_{k}" in step
    assert r"= \mathbf{a}^{[2]} - \mathbf{y}" in step
    assert r"\frac{1}{N} (A^{[2]} - Y)" in step
    assert r"$\sum_i y_i = 1$" in step  # the identity, named where it is used


def test_forms_select_content(seed):
    comp = render(seed, "latex", form="component")
    mat = render(seed, "latex", form="matrix")
    assert r"\odot" not in comp and r"\Delta" not in comp
    assert r"\delta^{[2]}_{k}" in comp
    assert r"\odot" in mat and r"\Delta^{[2]}" in mat
    assert r"[i = k]" not in mat
    assert "Chain rule, component form" not in mat


def test_standalone_and_fragment(seed):
    full = render(seed, "latex")
    frag = render(seed, "latex", standalone=False)
    assert full.startswith(r"\documentclass")
    assert r"\usepackage{amsmath}" in full and r"\usepackage{amssymb}" in full
    assert full.rstrip().endswith(r"\end{document}")
    assert "breqn" not in full
    assert r"\documentclass" not in frag and r"\begin{document}" not in frag
    assert r"\section*{Forward pass}" in frag
    md = render(seed, "markdown", standalone=False)
    assert not md.startswith("# ")


def test_markdown_math_is_balanced(seed_md):
    assert seed_md.startswith("# Backpropagation for `seed_net`")
    blocks = [ln for ln in seed_md.splitlines() if ln.strip() == "$$"]
    assert len(blocks) % 2 == 0 and blocks
    for line in seed_md.splitlines():
        if line.strip() != "$$":
            assert line.count("$") % 2 == 0, line
    assert "align*" not in seed_md  # KaTeX: aligned inside $$ only
    assert r"\begin{aligned}" in seed_md


@pytest.mark.parametrize("net", [seed_net, softmax_ce, deep_custom], ids=lambda f: f.__name__)
def test_delimiters_balance_on_every_line(net):
    tex = render(derive(net()), "latex")
    body = tex[tex.index(r"\section*") :]
    for line in body.splitlines():
        assert line.count(r"\left") == line.count(r"\right"), line
        stripped = re.sub(r"\\[{}]", "", line)
        assert stripped.count("{") == stripped.count("}"), line


def test_text_mode(seed):
    txt = render(seed, "text")
    assert "\\frac" not in txt and "$" not in txt
    assert "delta2[k] = " in txt
    assert "W2.T @ delta2" in txt
    assert "delta2.T @ a1" in txt


def test_bad_arguments(seed):
    with pytest.raises(ValueError, match="target"):
        render(seed, "html")
    with pytest.raises(ValueError, match="form"):
        render(seed, "latex", form="tensor")


def test_jupyter_hooks(seed):
    frag = render_fragment_for_jupyter(seed)
    assert frag.startswith("$$") and frag.rstrip().endswith("$$")
    assert r"\begin{aligned}" in frag and r"\Delta^{[2]\top} A^{[1]}" in frag
    assert seed._repr_markdown_() == render(seed, "markdown")


# ---------------------------------------------------------------------------------------
# line breaking
# ---------------------------------------------------------------------------------------
def test_split_terms_top_level_only():
    assert split_terms(r"a + \left(b - c\right) - \frac{d + e}{f}") == [
        "a",
        r"+ \left(b - c\right)",
        r"- \frac{d + e}{f}",
    ]
    assert split_terms(r"- a + b") == ["- a", "+ b"]


def test_visual_width_counts_fractions_once():
    assert visual_width(r"\frac{abc}{de}") < visual_width("abcde")
    assert visual_width(r"\mathbf{a}^{[1]}") < 4


def test_stretched_delimiters_are_wider_round_fractions():
    plain = visual_width(r"\left(a + b\right)") - visual_width("a + b")
    tall = visual_width(r"\left(\frac{a}{b}\right)") - visual_width(r"\frac{a}{b}")
    assert tall > plain > 0
    # a broken line's open side has no delimiter
    assert visual_width(r"\left. a \right)") < visual_width(r"\left( a \right)")


def test_a_block_fits_after_its_widest_left_side():
    """``align`` starts every row's right side after the block's widest left side: a long
    row under a wide left-hand side is fitted against what is left of the line."""
    from symgrad.documents.layout import _display

    wide = r"\text{BP3}\quad \frac{\partial \ell}{\partial \boldsymbol{\gamma}^{[2]}}"
    body = r" ".join(rf"\frac{{1}}{{n_{{{k}}}}} a^{{[{k}]}}" for k in range(1, 12))
    long = Eq((M("u", "u"), M(body, "t")))
    assert _display([long], "latex") == f"\\[\nu = {body}\n\\]"  # fits on its own
    tex = _display([Eq((M(wide, "g"), M("b", "b"))), long], "latex")
    rows = tex.split("\n")[1:-1]
    long_row = next(r for r in rows if r.startswith("u &= "))
    rest = long_row.partition("&= ")[2]
    assert rest.startswith(r"\scalebox") or visual_width(wide) + visual_width(rest) <= LINE_WIDTH


def test_long_expression_is_broken():
    terms = " + ".join(rf"\frac{{{k}}}{{{k + 1}}} (a^{{[1]}}_{{i}})^{{{k}}}" for k in range(1, 30))
    lines = equation_lines(Eq((M("z_i", "z"), M(terms, "t"))))
    assert len(lines) > 2
    assert lines[0].startswith("z_i &= ")
    for ln in lines:
        assert ln.count("&") == 1
        assert visual_width(ln.replace(r"&\qquad", "")) <= LINE_WIDTH + 1
    inner = break_expression(r"c \left(" + terms + r"\right) d", 40)
    assert len(inner) > 2
    assert inner[0].endswith(r"\right.") and inner[-1].startswith(r"\left.")
    # an array of its entries (``\left[ ... \right]_{s i}``) breaks inside its brackets,
    # the first line opening them and the last closing them before the indices
    entries = break_expression(r"\left[" + terms + r"\right]_{s i}", 40)
    assert len(entries) > 2
    assert entries[0].startswith(r"\left[") and entries[0].endswith(r"\right.")
    assert entries[-1].startswith(r"\left.") and entries[-1].endswith(r"\right]_{s i}")


def test_long_forward_equation_rendered_on_several_lines():
    expr = sum(a[i] ** p / p for p in range(1, 9)) + sp.sin(a[i]) + sp.cos(a[i])
    net = build("longpoly", 3, [Dense(3, "tanh"), Map(expr, name="poly"), Dense(2)], "mse")
    tex = render(derive(net), "latex")
    fwd = _section(tex, "Forward pass")
    start = fwd.index("a^{[2]}_{i} &= ")
    nxt = fwd.index("z^{[3]}_{i} &=")
    assert r"&\qquad + " in fwd[start:nxt]


# ---------------------------------------------------------------------------------------
# typesetting
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("net", [seed_net, softmax_ce, deep_custom], ids=lambda f: f.__name__)
def test_pdflatex_compiles(net, tmp_path):
    exe = shutil.which("pdflatex")
    if exe is None:
        pytest.skip("pdflatex is not installed")
    tex = render(derive(net()), "latex")
    (tmp_path / "doc.tex").write_text(tex, encoding="utf-8")
    proc = subprocess.run(
        [exe, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path,
        capture_output=True,
        timeout=180,
        check=False,
    )
    log = (tmp_path / "doc.log").read_text(encoding="utf-8", errors="replace")
    assert proc.returncode == 0, log[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 0
    assert "Overfull \\hbox" not in log


#: An underfull box in display math (an ``align`` row or a display), not in a paragraph.
_UNDERFULL_DISPLAY = re.compile(r"Underfull \\hbox \(badness \d+\) detected at line")


def _pdflatex(tex: str, tmp_path: Path) -> str:
    """Compile ``tex``; return the log (asserting success)."""
    exe = shutil.which("pdflatex")
    if exe is None:
        pytest.skip("pdflatex is not installed")
    (tmp_path / "doc.tex").write_text(tex, encoding="utf-8")
    proc = subprocess.run(
        [exe, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path,
        capture_output=True,
        timeout=180,
        check=False,
    )
    log = (tmp_path / "doc.log").read_text(encoding="utf-8", errors="replace")
    assert proc.returncode == 0, log[-3000:]
    return log


def scalar_function():
    """No parameters: a scalar function of the input as a map (with the constant pi)."""
    return build("scalar_fn", 1, [Map(sp.sin(a[i]) * sp.pi + a[i] ** 2, name="f")], "mse")


def test_parameter_free_network_compiles(tmp_path):
    d = derive(scalar_function())
    tex = render(d, "latex")
    assert r"\text{\Pi}" not in tex and r"\pi" in tex
    assert "no parameters" in tex
    summary = _section(tex, "Summary: the backward pass")
    assert r"\partial X}" in summary  # the input gradient is the result
    log = _pdflatex(tex, tmp_path)
    assert "Overfull \\hbox" not in log
    for form in ("component", "matrix"):
        assert r"\begin{align*}" + "\n\n" not in render(d, "latex", form=form)


def test_constants_print_as_math():
    assert latex(sp.pi) == r"\pi"
    assert latex(sp.sqrt(sp.pi)) == r"\sqrt{\pi}"
    assert latex(sp.E) == "e"


@pytest.mark.parametrize("net", [seed_net, softmax_ce, deep_custom], ids=lambda f: f.__name__)
def test_kronecker_delta_never_shares_the_error_glyph(net):
    """The Kronecker delta is a bracket [i = k]; delta always carries a layer: delta^[l]."""
    tex = render(derive(net()), "latex")
    assert r"\delta_{" not in tex
    for m in re.finditer(r"\\(?:boldsymbol\{)?\\delta\}?(.{0,3})", tex):
        assert m.group(1).startswith("^{["), tex[m.start() - 40 : m.end() + 40]
    assert "[i = k]" in tex


def test_batch_size_is_capital_n_everywhere(seed):
    tex, md, txt = render(seed, "latex"), render(seed, "markdown"), render(seed, "text")
    for doc in (tex, md):
        assert r"\frac{1}{N} \sum_{s=1}^{N}" in doc
        assert r"{n \, " not in doc and r"\frac{1}{n}" not in doc
    assert "batch of N samples" in txt


def test_uniform_headings_and_applicable_notes(seed_tex):
    heads = re.findall(r"\\subsection\*\{(.*)\}", seed_tex)
    assert sum("(weight gradient)" in h for h in heads) == 2
    assert sum("(bias gradient)" in h for h in heads) == 2
    assert not any("parameter gradient" in h for h in heads)
    assert "Iverson" not in seed_tex  # no ReLU in this network
    bce = render(derive(build("b", 2, [Dense(3, "relu"), Dense(1, "sigmoid")], "bce")), "latex")
    assert "Iverson" in bce
    intro = _section(seed_tex, "Network and notation")
    assert intro.count("adjoint of a quantity") == 1 and "called the error" in intro


def test_why_lines(seed_tex, smce_tex):
    d2 = _section(seed_tex, r"\delta^{[2]} = ")
    d1 = _section(seed_tex, r"\delta^{[1]} = ")
    # derived from the definition, then rewritten in the forward value a = sigma(z)
    assert r"\sigma(z^{[2]}_{i}) (1 - \sigma(z^{[2]}_{i}))" in d2 or (
        r"(1 - \sigma(z^{[2]}_{i})) \sigma(z^{[2]}_{i})" in d2
    )
    # sigma' derived once from sigma's definition, at its first use (the output layer)
    assert r"\sigma'(x)" in d2 and r"\frac{1}{1 + e^{- x}}" in d2
    assert r"\sigma'(x)" not in d1 and seed_tex.count(r"\sigma'(x)") == 1
    assert "quotient rule" in d2
    assert "collapses to the term" in d2
    # explained once, at the first diagonal step
    assert "Hadamard" in d2 and "its own transpose" in d2 and "its own transpose" not in d1
    assert r"\operatorname{diag}(\mathbf{a}^{[1]} \odot (1 - \mathbf{a}^{[1]}))^{\top}" in d1
    sm = _section(smce_tex, r"\delta^{[2]} = ")
    # the softmax Jacobian derived from the quotient, not stated; a sum remains
    assert r"\frac{\partial}{\partial z^{[2]}_{k}} \left(\frac{e^{z^{[2]}_{i}}}" in sm
    assert "the other terms keep their sum" in sm and "collapses" not in sm
    # softmax + cross-entropy: the probabilities cancel, and why fusing matters
    assert "cancel" in sm and "underflow" in sm
    dw = _section(seed_tex, r"\partial W^{[2]}$ (weight")
    assert r"\sum_{s=1}^{N} \left(\boldsymbol{\delta}^{[2]} \mathbf{a}^{[1]\top}\right)^{(s)}" in dw
    assert "lives in the batched adjoint" in dw
    assert "Common mistake" in dw and "symgrad check" in dw


def test_bp1_to_bp4_by_name(seed_tex):
    box = _section(seed_tex, "Summary per sample")
    for name in ("BP1", "BP2", "BP3", "BP4"):
        assert r"\text{" + name + "}" in box
    assert (
        r"(W^{[l+1]\top} \boldsymbol{\delta}^{[l+1]}) \odot f'(\mathbf{z}^{[l]})" in box
    )  # the general recursion, in a frame
    assert r"\begin{summarybox}" in box and r"\end{summarybox}" in box
    box = _section(seed_tex, "BP1-BP4 for this network")
    # this network's BP2: the pass back substituted into the activation step
    assert (
        r"\text{BP2}\quad \boldsymbol{\delta}^{[1]} &= \left(W^{[2]\top} \boldsymbol{\delta}^{[2]}"
        r"\right) \odot" in box
    )
    assert r"\begin{enumerate}" in box and "Pass back" in box and "Repeat" in box
    assert seed_tex.index("Summary per sample") < seed_tex.index("Summary: the backward pass")


def test_text_wrapped_ordered_and_without_sympy_names():
    d = derive(deep_custom())
    txt = render(d, "text", width=72)
    for line in txt.splitlines():
        assert len(line) <= 72 or " " not in line.strip(), line
    assert "Abs" not in txt and "abs(" in txt
    seed_txt = render(derive(seed_net()), "text", width=200)
    assert "da1[k]*(1 - a1[k])*a1[k]" in seed_txt  # upstream first


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(catalogue()))
def test_pdflatex_compiles_catalogue(name, tmp_path):
    tex = render(derive(catalogue()[name]), "latex")
    log = _pdflatex(tex, tmp_path)
    assert "Overfull \\hbox" not in log, name
    assert not _UNDERFULL_DISPLAY.search(log), name


def test_layer_jacobians_view(seed_tex):
    view = _section(seed_tex, "Layer by layer")
    # whole-layer input Jacobian (blue): diag(f'(z)) W
    assert (
        r"\textcolor{blue}{\operatorname{diag}(\mathbf{a}^{[1]} \odot (1 - \mathbf{a}^{[1]})) "
        r"W^{[1]}}" in view
    )
    # parameter Jacobian (red) and dL/dtheta_l as the product chain
    assert r"\textcolor{red}{" in view
    assert (
        r"\frac{\partial \ell}{\partial W^{[1]}} &= \left(\frac{\partial \ell}"
        r"{\partial \mathbf{a}^{[2]}}\right)^{\top} \textcolor{blue}{J^{[2]}} \textcolor{red}"
        in view
    )
    assert r"\usepackage{xcolor}" in seed_tex


EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").rglob("*.toml"))


@pytest.mark.slow
@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda p: p.stem)
def test_pdflatex_compiles_examples(spec, tmp_path):
    from symgrad import pipeline

    tex = render(pipeline.derive(pipeline.parse(str(spec))), "latex")
    log = _pdflatex(tex, tmp_path)
    assert "Overfull \\hbox" not in log, spec.name
    assert not _UNDERFULL_DISPLAY.search(log), spec.name


def test_bp_tags_follow_structure_not_names():
    """BP1/BP2 mark errors (adjoints of a pre-activation), wherever they come from."""
    relu_out = render(derive(build("r", 3, [Dense(4, "relu"), Dense(2)], "mse")), "text", width=200)
    box = relu_out[relu_out.index("For this network") :]
    assert "BP1  delta2 = " in box  # the loss gradient itself is the output error
    assert "BP2  delta1 = (W2.T @ delta2)*[z1 > 0]" in box
    deep = render(derive(deep_custom()), "text", width=200)
    box = deep[deep.index("For this network") :]
    assert "    dl/da1 = " in box and "BP2  dl/da1" not in box  # a map layer: no BP name


def test_loss_gradient_derived_from_the_loss(seed_tex):
    grad = _section(seed_tex, "(loss gradient)")
    # the loss's summation index is renamed out of the way of the free index i
    assert (
        r"\frac{\partial}{\partial \hat{y}_{i}} \left(\frac{1}{n_{2}} \sum_{j=1}^{n_{2}} "
        r"(\hat{y}_{j} - y_{j})^{2}\right)" in grad
    )
    assert r"2 (\hat{y}_{j} - y_{j}) [i = j]" in grad and "collapses to the term" in grad


def test_text_matrix_products_keep_numpy_precedence():
    """In Python ``*`` and ``@`` share a level (left to right) and ``.T`` binds tightest:
    a product printed as a factor, a power's base or a transposed operand is parenthesised."""
    from symgrad.backends.targets import matrix_text
    from symgrad.documents.render import TextPrinter

    a1, da2, A2 = Vec("a1"), Vec("da2"), Mat("A2")
    text = TextPrinter().doprint
    assert text(a1 * MatVec(A2, a1)) == "a1*(A2 @ a1)"
    assert text(-a1 * MatVec(A2, a1)) == "-a1*(A2 @ a1)"
    assert text(MatVec(A2, a1) ** 2) == "(A2 @ a1)**2"
    assert text(MatVec(A2, a1) + a1) == "a1 + A2 @ a1"  # a term needs none
    assert text(MatVec(A2, MatVec(A2, a1))) == "A2 @ (A2 @ a1)"
    assert text(BMatMul(a1 * da2, A2, 1)) == "(da2*a1) @ A2.T"  # upstream first
    assert text(BOuter(a1 * da2, a1)) == "(da2*a1).T @ a1"
    assert text(BOuter(RowSum(da2), a1)) == "rowsum(da2).T @ a1"
    assert text(a1 * BMatMul(a1, A2, 1)) == "a1*(a1 @ A2.T)"
    assert matrix_text(BOuter(BMatMul(a1, A2, 1), a1)) == "(a1 @ A2.T).T @ a1"
    assert matrix_text(a1 * BMatMul(a1, A2, 0)) == "a1*(a1 @ A2)"


def test_text_adjoints_name_their_loss(seed):
    """Per-sample adjoints are of one sample's loss l, batched ones of the mean L."""
    text = render(seed, "text", width=200)
    assert "dl/da2[i] = dl/dyhat[i] = " in text and "\ndl/dW2 (weight gradient)\n" in text
    assert "The adjoint of a quantity u is dl/du" in text
    assert "    dL/dW2 = delta2.T @ a1" in text and "    dl/dW2 = outer(delta2, a1)" in text
    assert "dL/da2[i]" not in text and "dL/dW2[p, q]" not in text


def test_explanations_given_once_then_named(seed_tex):
    full = "and every term carries it: the sum over"
    assert seed_tex.count(full) == 1  # then "The sum over i collapses to the term i = p"
    assert seed_tex.count(r"keeps only the term $j = k$") == 1


def test_tanh_derived_from_its_definition(smce_tex):
    assert r"\tanh(x) &= \frac{e^{x} - e^{- x}}{e^{x} + e^{- x}}" in smce_tex
    assert r"= 1 - \tanh(x)^{2}" in smce_tex


def test_short_equations_share_a_line_long_ones_do_not(seed_tex):
    summary = seed_tex[seed_tex.index("Summary: the backward pass as computed") :]
    rows = summary[: summary.index(r"\end{align*}")].split(r"\\[0.5ex]")
    assert all(row.count("&=") == 2 for row in rows[:-1])  # two equations per row
    assert r"\scalebox" not in seed_tex


def test_star_defined_where_the_correlation_first_appears():
    from symgrad import pipeline

    spec = Path(__file__).resolve().parent.parent / "examples" / "digits_cnn" / "digits_cnn.toml"
    tex = render(pipeline.derive(pipeline.parse(str(spec))), "latex")
    definition = tex.index(r"is the cross-correlation")
    assert tex.count(r"is the cross-correlation") == 1
    assert tex.index(r"\star") < definition < tex.index("Backward pass")
    from symgrad.documents.graph import to_dot

    dot = to_dot(pipeline.derive(pipeline.parse(str(spec))))
    assert "δ⁽¹⁾ ⋆ x" in dot and "corr(" not in dot  # the graph writes it as the documents do


def test_html_code_pane_folds_the_argument_checks(seed):
    from symgrad.documents.html import render_html

    page = render_html(seed)
    folds = re.findall(r'<details class="fold"><summary>([^<]*)</summary>', page)
    assert len(folds) == 1 and "_params_error" in folds[0] and "_check)" in folds[0]
    opened = re.sub(r'<details class="fold">.*?</details>', "", page, flags=re.S)
    before = opened.split('id="code-backward"')[0]  # what the pane shows above the backward
    assert "def _params_error" not in before and "def _check(" not in before


@pytest.mark.parametrize(
    ("activation", "wrong", "right"),
    [
        ("sigmoid", "(1 - z1[i])*z1[i] where (1 - a1[i])*a1[i]", "sigmoid"),
        ("tanh", "1 - z1[i]**2 where 1 - a1[i]**2", "tanh"),
    ],
)
def test_the_forward_values_slip_is_the_layers_own(activation, wrong, right):
    """The "Common mistake" note under a diagonal step writes that step's own derivative
    with the input where the output belongs (never the sigmoid's under a tanh layer), and
    its pointer to ``symgrad check`` is code in every format."""
    net = build("slip", 2, [Dense(3, activation)], "mse")
    d = derive(net)
    text = " ".join(render(d, "text").split())
    assert f"wrong quantity: {wrong} belongs" in text
    note = text.split("wrong quantity:")[1].split("checks a hand-written")[0]
    assert "sigma" not in note and right in render(d, "text")  # no other function's formula
    assert r"\texttt{symgrad check SPEC -{}-{}grad NAME" in render(d, "latex")
    assert "`symgrad check SPEC --grad NAME --formula '...'`" in render(d, "markdown")
