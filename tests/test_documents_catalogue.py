"""Every catalogue network's document, in every format, is right and readable.

- it renders in text, LaTeX and Markdown (and the HTML page for one of each kind);
- its text form parses back: every step's result, as the text document prints it, is in
  the document, and read by ``symgrad check``'s whitelist parser it is the derivation's
  own expression (equal at random points, the check's own tolerance);
- its LaTeX never shrinks a line below 0.85, never leaves an ``=`` with nothing after it
  and never states ``x = x``;
- a batch-norm document names mu, sigma^2 and x-hat and ends in the textbook form.

The networks: ``tests/catalogue.py`` (dense, every activation and loss, maps, custom
losses, norms, residual), a conv net and a batch-norm net (the examples' specs).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sympy as sp
from catalogue import catalogue

from symgrad.calculus.reverse import Derivation, Step
from symgrad.documents.lets import NamedStage, same_up_to_dummies
from symgrad.documents.render import render
from symgrad.documents.statistics import BatchStatistics
from symgrad.documents.structure import swap_ik
from symgrad.ir.network import Network
from symgrad.ir.plain import TextPrinter
from symgrad.pipeline import derive, parse

ROOT = Path(__file__).resolve().parent.parent
SPECS = {
    "digits_cnn": ROOT / "examples" / "digits_cnn" / "digits_cnn.toml",
    "batchnorm_net": ROOT / "examples" / "batchnorm_net" / "batchnorm_net.toml",
    "attention": ROOT / "examples" / "attention" / "attention.toml",
}
NAMES = sorted(catalogue()) + sorted(SPECS)
FORMATS = ("text", "latex", "markdown")

_CACHE: dict[str, tuple[Network, Derivation, dict[str, str]]] = {}


def _doc(name: str) -> tuple[Network, Derivation, dict[str, str]]:
    if name not in _CACHE:
        net = parse(str(SPECS[name])) if name in SPECS else catalogue()[name]
        d = derive(net)
        docs = {to: render(d, to, width=100) for to in FORMATS}
        _CACHE[name] = (net, d, docs)
    return _CACHE[name]


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _formula(text: str) -> str:
    """The document's text syntax in ``check``'s formula syntax: ``sum_k (body)`` ->
    ``sum(body, k)``; ``sign(u)`` and ``[u > 0]``, which the whitelist does not read, as
    ``u/abs(u)`` and ``(u/abs(u) + 1)/2`` (equal wherever u is not 0)."""
    while m := re.search(r"\[([^\[\]]*(?:\[[^\[\]]*\][^\[\]]*)*) > 0\]", text):
        text = text[: m.start()] + f"(({m.group(1)})/abs({m.group(1)}) + 1)/2" + text[m.end() :]
    while m := re.search(r"(sum_(\w+) (?!sum_)|sign)(sum)?\(", text):
        start = m.end() - 1
        depth = 0
        for end in range(start, len(text)):
            depth += text[end] == "("
            depth -= text[end] == ")"
            if depth == 0:
                break
        body = text[start + 1 : end]
        if m.group(3):  # a sum over a sum already rewritten: sum_j sum(body, k)
            body = "sum(" + body + ")"
        new = f"sum({body}, {m.group(2)})" if m.group(2) else f"(({body})/abs({body}))"
        text = text[: m.start()] + new + text[end + 1 :]
    return text


#: Notation the formula whitelist does not read: a window's arg-max and a position's
#: range condition (conv, pooling, a max reduction). Such steps are shown, not parsed.
_UNREADABLE = re.compile(r"argmax|<=")


def _shown(st: Step) -> object:
    """The expression a step's section ends with (an input step's free index is k), in the
    stage's named sub-expressions where it has them (a norm's mean and variance)."""
    stage = st.stage
    plain = stage is not None and stage.sample is None and not (stage.indices or stage.in_shape)
    shown = swap_ik(st.component) if st.kind == "input" and plain else st.component
    named = NamedStage.of(stage)
    if named is not None:
        assert same_up_to_dummies(named.expand(named.name(shown)), shown)  # names are exact
        shown = named.display(named.name(shown))
    stats = BatchStatistics.of(stage) if stage is not None else None
    forms = stats.forms(st.component, st.upstream or "") if stats is not None else []
    return forms[-1] if forms else shown  # batch statistics: the textbook form


def _parsed(st: Step) -> object:
    """What the parse-back check reads: the shown form, a batch statistic replaced by its
    definition (so the textbook form itself is checked against the derivation)."""
    stats = BatchStatistics.of(st.stage) if st.stage is not None else None
    shown = _shown(st)
    return stats.expand(shown) if stats is not None and shown is not st.component else shown


@pytest.mark.parametrize("name", NAMES)
def test_every_format_renders(name):
    _, d, docs = _doc(name)
    for to, text in docs.items():
        assert len(text) > 1000, (name, to)
        assert "Backward pass" in text
        for st in d.steps:
            assert st.grad in docs["text"], (name, st.grad)


@pytest.mark.parametrize("name", NAMES)
def test_text_parses_back_to_the_derivation(name):
    from symgrad.verify.check import check_formula

    net, d, docs = _doc(name)
    doc = _squash(docs["text"])
    printer = TextPrinter()
    checked = 0
    skipped: list[str] = []
    for st in d.steps:
        if st.kind == "loss" and not st.needed:
            continue
        shown = printer.doprint(_shown(st))
        assert _squash(shown) in doc, (name, st.grad, shown)
        stats = st.stage is not None and BatchStatistics.of(st.stage)
        text = printer.doprint(_parsed(st) if stats else st.component)
        if _UNREADABLE.search(text):
            skipped.append(st.grad)
            continue
        result = check_formula(net, st.grad, _formula(text))
        assert result.ok, (name, st.grad, result.format())
        checked += 1
    assert checked >= 3 and len(skipped) <= 2, (checked, skipped)


_SCALE = re.compile(r"\\scalebox\{([0-9.]+)\}")


@pytest.mark.parametrize("name", NAMES)
def test_latex_readable(name):
    _, _, docs = _doc(name)
    tex = docs["latex"]
    scales = [float(s) for s in _SCALE.findall(tex)]
    assert all(s >= 0.85 for s in scales), (name, min(scales))
    for line in tex.splitlines():
        # nothing after an equals sign at the end of a display line
        assert not re.search(r"(&?=)\s*(\\\\(\[0\.5ex\])?)?\s*$", line), (name, line)
        # no tautology: a side equal to the one before it
        sides = [s.strip(" &") for s in re.split(r"&?= ", line.removesuffix(r" \\[0.5ex]"))]
        for a, b in zip(sides, sides[1:], strict=False):
            assert not (a and a == b), (name, line)


def test_text_precedence():
    """The text printer parenthesises like the LaTeX one: a matrix sum times a matrix, the
    square of a sum, a sum's body."""
    _, _, docs = _doc("softmax_ce")
    text = docs["text"]
    assert "(diag(a2) - outer(a2, a2)) @ W2" in text
    assert "exp(z2[i])*exp(z2[k])/S**2" in text  # the softmax denominator, named
    j = sp.Symbol("j", integer=True)
    z = sp.IndexedBase("z2")
    squared = sp.Sum(sp.exp(z[j]), (j, 0, 2)) ** 2
    assert TextPrinter().doprint(squared) == "(sum_j (exp(z2[j])))**2"


def test_one_indexing_convention_per_document():
    _, _, conv = _doc("digits_cnn")
    _, _, dense = _doc("seed")
    assert "Indices run from 0" in conv["text"] and "from 1" not in conv["text"]
    assert r"\sum_{i=1}" not in conv["latex"]
    assert "Indices run from 1" in dense["text"]


def test_conv_steps_explained():
    _, _, docs = _doc("digits_cnn")
    text = docs["text"]
    assert "permutation" in text and "arg-max" in text
    assert "cross-correlation" in text and "transposed correlation" in text
    assert "the Jacobian is a weight matrix" not in text.split("flatten", 1)[-1].split("\n")[0]


def test_batchnorm_named_statistics_and_textbook_form():
    _, _, docs = _doc("batchnorm_net")
    tex = docs["latex"]
    assert r"\mu_{i}" in tex and r"\sigma^2_{i}" in tex and r"\hat{x}_{s,i}" in tex
    textbook = (
        r"\frac{\gamma^{[2]}_{i}}{\sqrt{\sigma^2_{i} + \epsilon}} \left("
        r"\frac{\partial \mathcal{L}}{\partial a^{[2]}_{si}} - \operatorname{mean}_{t}"
    )
    assert textbook in tex
    mean = r"\operatorname{mean}_{u}\!\left(\frac{\partial \mathcal{L}}{\partial a^{[2]}_{ui}}"
    assert mean in tex
    assert "mean_t(da2[t, i])" in docs["text"]


@pytest.mark.parametrize("name", ["rmsnorm_pairwise", "attention", "digits_cnn"])
def test_text_never_breaks_a_subscript(name):
    """A long line wraps between terms, never inside a subscript (``a2[s,`` / ``i]``)."""
    text = _doc(name)[2]["text"]
    assert not re.search(r"\w\[[^\[\]()\n]*\n", text), name


_READS = re.compile(r"The last form reads the forward values: (.*?), so the backward pass")


@pytest.mark.parametrize("name", NAMES)
def test_the_forward_values_said_to_be_read_are_read(name):
    """ "The last form reads the forward values: ..." is said only of a form that reads
    each of them (a stage's output, or a name of its forward pass)."""
    text = _doc(name)[2]["text"]
    for m in _READS.finditer(_squash(text)):
        block = _squash(text)[: m.start()]
        local = block[block.rindex("Local derivative:") :].split(" Rules used:")[0]
        last = local.rsplit(" = ", 1)[1]
        for value in m.group(1).split(", "):
            value = value.split(" = ")[0]  # "a4[i] = sigmoid(z4[i])": the value, defined
            assert value in last, (name, value, last)
