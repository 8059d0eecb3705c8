"""Compile time grows linearly with depth: ratios between depths 25 and 100, not absolute
times (the benchmark, ``bench/compile_time.py``, has the absolute numbers and budgets).

CPU time of this process is measured, so a busy machine slows both depths alike.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import sympy as sp

from symgrad import derivations, pipeline
from symgrad.documents.html import render_html

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from compile_time import mlp_spec  # noqa: E402

#: 4x the layers: 4.0 is linear, 16 quadratic. The bound leaves room for noise and for
#: fixed costs that shrink the small depth's share.
MAX_RATIO = 6.0


def _cpu(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def _stages(tmp_path: Path, depth: int) -> dict[str, float]:
    spec = tmp_path / f"deep{depth}.toml"
    spec.write_text(mlp_spec(depth, 16))
    sp.core.cache.clear_cache()
    derivations.clear()
    out: dict[str, float] = {}
    holder: dict[str, object] = {}
    out["derive"] = _cpu(lambda: holder.update(d=pipeline.derive(pipeline.parse(str(spec)))))
    d = holder["d"]
    out["text"] = _cpu(lambda: pipeline.render_document(d, to="text"))  # type: ignore[arg-type]
    out["codegen"] = _cpu(lambda: pipeline.generate_code(d))  # type: ignore[arg-type]
    out["html"] = _cpu(lambda: render_html(d))  # type: ignore[arg-type]
    return out


@pytest.mark.slow
def test_budget_stages_are_linear_in_depth(tmp_path):
    small, big = _stages(tmp_path, 25), _stages(tmp_path, 100)
    ratios = {k: big[k] / small[k] for k in small}
    assert all(r <= MAX_RATIO for r in ratios.values()), ratios


@pytest.mark.slow
def test_compile_time_benchmark_smoke_run(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench/compile_time.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    table = (tmp_path / "compile-time-results.md").read_text()
    assert "| tanh MLP depth 25 (width 16) |" in table and "dominant" in table
