"""Smoke test: the HVP benchmark script runs end to end (quick mode) and compares to PyHessian."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_hvp_benchmark_quick_run(tmp_path):
    output = tmp_path / "hvp.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "hvp.py"),
            "--quick",
            "--repeats",
            "1",
            "--output",
            str(output),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "PyHessian" in proc.stdout
