"""The prepared GPU check must at least run: its --smoke mode is the same code on a tiny CPU model."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_prints_its_table():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| onnxruntime provider | CPUExecutionProvider |" in out.stdout
    diff = next(line for line in out.stdout.splitlines() if line.startswith("| onnx max|diff|"))
    assert float(diff.split("|")[-2]) <= 1e-4
    flops = next(line for line in out.stdout.splitlines() if line.startswith("| GFLOP per training image"))
    assert float(flops.split("|")[-2]) > 0  # counted by torch's FlopCounterMode on the real step
    assert "| bound by | loader |" in out.stdout or "| bound by | compute |" in out.stdout
