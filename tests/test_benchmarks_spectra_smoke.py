"""Smoke test: the spectra benchmark script runs end to end (quick mode) against PyHessian."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_spectra_benchmark_quick_run(tmp_path):
    output = tmp_path / "x.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "spectra.py"),
            "--quick",
            "--output",
            str(output),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert output.exists()
