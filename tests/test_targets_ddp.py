"""examples/ddp: a generated torch Model trained with DistributedDataParallel (gloo, two
processes on 127.0.0.1) has exactly the single-process gradients; the committed module
is what ``codegen --target torch`` writes today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from symgrad import pipeline

ROOT = Path(__file__).resolve().parents[1]
DDP = ROOT / "examples" / "ddp"

torch = pytest.importorskip("torch")


def test_committed_module_is_current():
    fresh = pipeline.compile(str(DDP / "mlp.toml")).code(target="torch")
    committed = (DDP / "mlp_torch.py").read_text()
    # The header names the spec path it was generated from; the code must be identical.
    assert committed.split('"""', 2)[2] == fresh.split('"""', 2)[2]


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_ddp_gradients_equal_single_process():
    res = subprocess.run(
        [sys.executable, str(DDP / "train_ddp.py"), "--steps", "3", "--batch", "16"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "OK: DDP gradients equal the single-process ones" in res.stdout
