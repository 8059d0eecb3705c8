"""``symgrad audit SPEC`` and its Python API: for every
statement of the forward and backward program, the rewrites applied (before -> after) and
the hazards that remain, with the statement's formula; exit 0."""

from __future__ import annotations

import pytest
from catalogue import catalogue

from symgrad.cli import main
from symgrad.documents.audit import audit, audit_text
from symgrad.frontend.spec import loads_spec

USER_SOFTPLUS_BCE = """
name = "audited"
input = 3
loss = "bce"
[[layer]]
units = 3
activation = { name = "usoftplus", expr = "log(1 + exp(x))" }
[[layer]]
units = 2
activation = { name = "tsig", expr = "0.5*tanh(x) + 0.5" }
"""

LOG_SOFTMAX = """
name = "lsm"
input = 3
loss = "mse"
[[layer]]
units = 3
[[layer]]
type = "map"
expr = "a[i] - log(sum(exp(a[j]), j))"
"""

RAW_EXP = """
name = "rawexp"
input = 2
loss = "mse"
[[layer]]
units = 2
activation = { name = "e", expr = "exp(x)/x" }
"""


def _entry(report, target):
    (e,) = [e for e in report.entries if e.target == target]
    return e


def test_audit_lists_every_statement_in_program_order():
    report = audit(loads_spec(USER_SOFTPLUS_BCE))
    sections = [e.section for e in report.entries]
    assert sections == sorted(sections, key=["forward", "loss", "backward"].index)
    targets = [e.target for e in report.entries]
    assert targets[:4] == ["z1", "a1", "z2", "a2"]
    assert {"dW1", "db1", "dW2", "db2"} <= set(targets)
    assert all(e.formula for e in report.entries)


def test_audit_reports_rewrites_before_and_after():
    report = audit(loads_spec(USER_SOFTPLUS_BCE))
    (rw,) = _entry(report, "a1").rewrites
    assert rw.rule == "softplus"
    assert rw.before == "log(1 + exp(z1[i]))" and rw.after == "softplus(z1[i])"
    assert "overflow" in rw.removes
    # The BCE gradient after a custom squashing activation is guarded as PyTorch's.
    guards = [r for e in report.entries for r in e.rewrites if r.rule == "division-guard"]
    assert guards and "1e-12" in guards[0].after


def test_audit_reports_remaining_hazards():
    report = audit(loads_spec(RAW_EXP))
    kinds = {k for k, _, _ in _entry(report, "a1").hazards}
    assert {"overflow", "division"} <= kinds
    # A log-softmax map is shifted in the forward and in its backward: no overflow left.
    lsm = audit(loads_spec(LOG_SOFTMAX))
    assert not [h for e in lsm.entries for h in e.hazards if h[0] == "overflow"]
    assert [r.rule for r in _entry(lsm, "delta1").rewrites] == ["softmax"]


def test_audit_of_a_clean_network_says_so():
    text = audit_text(catalogue()["bce"])
    assert "BACKWARD PASS" in text and "nothing to rewrite, no hazard found" in text
    assert text.rstrip().splitlines()[-1].startswith("Summary: ")


@pytest.mark.parametrize("name", ["seed", "softmax_ce", "custom", "softmax_map"])
def test_audit_runs_on_catalogue_networks(name):
    report = audit(catalogue()[name])
    assert report.entries and report.text().count("formula:") == len(report.entries)


def test_cli_audit_exits_0_and_prints_the_report(tmp_path, capsys):
    spec = tmp_path / "net.toml"
    spec.write_text(USER_SOFTPLUS_BCE)
    assert main(["audit", str(spec)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"symgrad audit: audited ({spec})")
    assert "rewrote:  [softplus] log(1 + exp(z1[i]))  ->  softplus(z1[i])" in out
    assert "FORWARD PASS" in out and "LOSS" in out and "BACKWARD PASS" in out


def test_cli_audit_bad_spec_is_one_line_exit_2(tmp_path, capsys):
    spec = tmp_path / "bad.toml"
    spec.write_text('name = "x"\ninput = 3\nloss = "mse"\n[[layer]]\nunits = 0\n')
    assert main(["audit", str(spec)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("symgrad: error: ") and err.count("\n") == 1


def test_audit_does_not_report_denominators_bounded_away_from_0():
    # softsign's 1/(1 + abs(z)) and the L2 norm's 1/sqrt(sum(a**2) + 1e-6) cannot reach 0;
    # a step's 1 - step(z) is exact.
    report = audit(catalogue()["custom"])
    assert not [h for e in report.entries for h in e.hazards if h[0] == "division"]
    acts = audit(catalogue()["acts"])
    assert not [h for e in acts.entries for h in e.hazards if "step" in h[1]]


def test_documented_audit_example_is_what_audit_prints(tmp_path, capsys):
    from pathlib import Path

    page = Path(__file__).resolve().parents[1] / "docs/explanation/stability.md"
    section = page.read_text().split("`symgrad audit SPEC` shows", 1)[1]
    spec = section.split("```toml\n", 1)[1].split("```", 1)[0]
    excerpt = section.split("it prints (excerpt):\n\n```\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "audit_demo.toml"
    path.write_text(spec)
    assert main(["audit", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    for line in excerpt.splitlines():
        assert line in out, line
