"""The examples run end to end (reduced mode)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_digits_curvature_demo_runs():
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "digits_curvature.py"), "--quick", "--no-figure"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "top-5 Hessian eigenvalues" in result.stdout
    assert "in 2 passes" in result.stdout  # Hutch++
