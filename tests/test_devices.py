"""Every entry point on every available device, in float32, against CPU float64.

The model is moved to the device and the data stays on the CPU (batches follow the model).
Randomness is drawn on the CPU (probes, starting vectors, mini-batches, directions), so a
device run and the CPU reference make the same random choices and differ only by float32
rounding. Without CUDA the ``cuda`` parameters are skipped.
"""

import copy
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from cases import CASES

import landscape as ls

SURFACE_COORDS = np.linspace(-1.0, 1.0, 5)


@pytest.fixture(autouse=True)
def _quiet_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _reference():
    return CASES[0].build()  # tanh MLP, float64, batches of 10, 10, 3 on the CPU


def _on(device):
    """The reference problem in float32 with the model on ``device``, the data on the CPU."""
    model, batches = _reference()
    model = copy.deepcopy(model).float().to(device)
    return model, [(x.float(), y) for x, y in batches]


def _rel(a, b):
    a = torch.as_tensor(np.asarray(a, dtype=np.float64))
    b = torch.as_tensor(np.asarray(b, dtype=np.float64))
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.fixture(scope="module")
def reference():
    model, batches = _reference()
    H = ls.hessian(model, batches)
    v = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    V = torch.randn(H.shape[0], 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    dirs = ls.random_directions(model, n=2, seed=0)
    return {
        "v": v,
        "V": V,
        "Hv": H @ v,
        "HV": H @ V,
        "top": ls.eigenvalues(H, k=3, seed=0).values,
        "trace": ls.trace(H, num_matvecs=30, seed=0).value,
        "dirs": dirs,
        "surface": ls.surface(
            model, batches, directions=dirs, coords=SURFACE_COORDS, progress=False
        ).loss,
        "lr": ls.max_learning_rate(model, batches, batch_sizes=(8, "full"), num_batches=3).lr_max,
        "analyze": ls.analyze(model, batches, progress=False),
    }


def test_hessian_products(device, reference):
    model, batches = _on(device)
    H = ls.hessian(model, batches)
    assert H.device.type == device.type and H.dtype == torch.float32
    hv = H @ reference["v"].float().to(device)
    HV = H @ reference["V"].float().to(device)
    assert hv.device.type == device.type and HV.shape == reference["HV"].shape
    assert _rel(hv.cpu(), reference["Hv"]) < 1e-5
    assert _rel(HV.cpu(), reference["HV"]) < 1e-5


def test_eigenvalues_and_trace(device, reference):
    model, batches = _on(device)
    H = ls.hessian(model, batches)
    ev = ls.eigenvalues(H, k=3, seed=0)
    assert ev.vectors.device.type == device.type
    assert _rel(ev.values.cpu(), reference["top"]) < 1e-4
    tr = ls.trace(H, num_matvecs=30, seed=0)
    assert tr.value == pytest.approx(reference["trace"], rel=1e-4)


def test_surface(device, reference):
    model, batches = _on(device)
    dirs = [{k: t.float().to(device) for k, t in d.items()} for d in reference["dirs"]]
    for vectorize in (False, True):
        s = ls.surface(
            model,
            batches,
            directions=dirs,
            coords=SURFACE_COORDS,
            vectorize=vectorize,
            progress=False,
        )
        assert _rel(s.loss, reference["surface"]) < 1e-5


def test_max_learning_rate(device, reference):
    model, batches = _on(device)
    r = ls.max_learning_rate(model, batches, batch_sizes=(8, "full"), num_batches=3)
    np.testing.assert_allclose(r.lr_max, reference["lr"], rtol=1e-3)


def test_analyze(device, reference):
    model, batches = _on(device)
    report = ls.analyze(model, batches, progress=False)
    expected = reference["analyze"]
    assert report.metadata["device"].startswith(device.type)
    assert report.loss.value == pytest.approx(expected.loss.value, rel=1e-5)
    assert report.loss.accuracy == expected.loss.accuracy
    got, want = report.eigenvalues.top.values, expected.eigenvalues.top.values
    assert _rel(got.cpu().numpy(), want.numpy()) < 1e-3
    assert report.trace.value == pytest.approx(expected.trace.value, rel=1e-3)
    assert _rel(report.surface_2d.loss, expected.surface_2d.loss) < 1e-5
    for kind in ("sgd", "adam"):
        got = report.learning_rate.results[kind].lr_max
        np.testing.assert_allclose(got, expected.learning_rate.results[kind].lr_max, rtol=1e-2)
    sam, want_sam = report.sharpness["sam"].value, expected.sharpness["sam"].value
    assert sam == pytest.approx(want_sam, rel=1e-2)


# -- benchmarks/gpu.py ---------------------------------------------------------------------------
GPU_BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a CPU-only machine")
def test_gpu_benchmark_says_why_it_measures_nothing_without_a_gpu(tmp_path):
    output = tmp_path / "gpu.json"
    proc = subprocess.run(
        [sys.executable, str(GPU_BENCHMARK), "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device is available" in proc.stdout
    assert not output.exists()


@pytest.mark.slow
def test_gpu_benchmark_dry_run_on_the_cpu(tmp_path):
    output = tmp_path / "gpu.json"
    proc = subprocess.run(
        [
            *(sys.executable, str(GPU_BENCHMARK), "--device", "cpu", "--quick"),
            *("--repeats", "1", "--output", str(output)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(output.read_text())
    assert len(result["hvp"]) == 4 and len(result["surfaces"]) == 2
    for workload in result["hvp"]:
        assert all(row["error"] is None for row in workload["rows"]), workload["rows"]
        assert max(workload["relative_difference_to_double_backward"].values()) < 1e-4
    for workload in result["surfaces"]:
        assert workload["vectorized_equals_loop"] is True
