"""Smoke test: the realistic-workload benchmark runs end to end (quick mode) against the peers."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_realistic_benchmark_quick_run(tmp_path):
    output = tmp_path / "realistic.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "realistic.py"),
            "--quick",
            "--output",
            str(output),
            "--cache-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "summary of the targets" in proc.stdout
    assert (tmp_path / "realistic_truth_resnet20.npz").exists()
    results = json.loads(output.read_text())
    by_name = {w["name"]: w for w in results["workloads"]}
    assert set(by_name) == {"resnet20", "gpt2", "vit_tiny", "mlp"}
    assert set(by_name["resnet20"]["tasks"]) == {"products", "spectra", "surfaces"}
    for workload in by_name.values():
        assert workload["peak_rss_mib"] > 0
        rows = workload["tasks"]["products"]["rows"]
        ours = [r for r in rows if r["library"] == "ours"]
        assert ours and all(r["error"] is None for r in ours), [r["error"] for r in ours]
        # Every backend gives the same product (float rounding apart).
        for row in ours:
            if row["relative_difference"] is not None:
                assert row["relative_difference"] < 1e-5, row["method"]
        assert (
            "backend_choices" in next(r for r in ours if r["info"].get("backend") == "auto")["info"]
        )
