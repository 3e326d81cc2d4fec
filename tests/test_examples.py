"""The example scripts run end to end (reduced ``--quick`` mode, no figures).

The notebooks run in a Jupyter kernel in ``tests/test_notebooks.py``.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _env():
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["MPLBACKEND"] = "Agg"
    return env


def _run(args, cwd=None, timeout=300):
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=_env(),
    )


def test_digits_curvature_demo_runs():
    result = _run([str(EXAMPLES / "digits_curvature.py"), "--quick", "--no-figure"])
    assert result.returncode == 0, result.stderr
    assert "top-5 Hessian eigenvalues" in result.stdout
    assert "in 2 passes" in result.stdout  # Hutch++


# (script, lines that its --quick output must contain)
EXAMPLE_OUTPUT = {
    "spectral_density_cnn.py": ["Gauss-Newton (P = 9802)", "largest ratio gap in the top 12"],
    "lr_vs_batch_size.py": ["max learning rate (sgd;", "max learning rate (adam;", "scaling d log"],
    "sgd_vs_adam.py": ["Landscape comparison: SGD vs Adam", "loss barrier on the straight line"],
    "three_optimizers.py": [
        "Landscape comparison: SGD vs AdamW vs Muon",
        "Muon  critical sharpness (generic)",
        "AdamW lr 0.002  lr_max",
        "rests on the optimizer's own next update",
    ],
    "edge_of_stability.py": ["reached the edge of stability", "tracker cost:"],
    "layer_sensitivity.py": ["per-layer curvature", "most sensitive first (HAWQ-V2 order)"],
    "hessian_vs_random_axes.py": ["Hessian axes, bn='eval'", "random axes, bn='recompute'"],
    "hf_causal_lm.py": [
        "hugging face causal LM:",
        "largest stable learning rate for AdamW at batch 16",
        "scored tokens in 32 sequences",
        "max learning rate (adam;",
    ],
}
# Examples that need an optional package: skipped where it is not installed.
REQUIRES = {"hf_causal_lm.py": "transformers"}


@pytest.mark.parametrize("script", sorted(EXAMPLE_OUTPUT))
def test_example_runs_quick(script):
    if script in REQUIRES:
        pytest.importorskip(REQUIRES[script])
    result = _run([str(EXAMPLES / script), "--quick", "--no-figure"])
    assert result.returncode == 0, result.stderr[-3000:]
    for line in EXAMPLE_OUTPUT[script]:
        assert line in result.stdout, result.stdout[-3000:]
    assert "figure written" not in result.stdout  # --no-figure


def test_every_example_is_tested():
    scripts = {p.name for p in EXAMPLES.glob("*.py")}
    # fsdp_spectrum.py runs under torchrun on 2 gloo ranks in tests/test_fsdp.py (slow).
    assert scripts == set(EXAMPLE_OUTPUT) | {"digits_curvature.py", "fsdp_spectrum.py"}
