"""Report and Comparison documents: typed records, HDF5 round trips, version-1 files, JSON,
summaries, figures and pages.
"""

import json
import math
import os
import re
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import matplotlib
import numpy as np
import pytest
import torch

from landscape.linalg.results import Estimate
from landscape.report import codec, migrate
from landscape.report.contents import LossValue, StageCost
from landscape.report.document import FORMAT, Comparison, Report, load

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

DATA = Path(__file__).with_name("data")
REPORT_KINDS = [
    "spectrum",
    "eigenvalues",
    "layerwise",
    "surface_1d",
    "surface_2d",
    "learning_rate",
    "metrics",
]
COMPARISON_KINDS = ["spectrum", "interpolation", "surfaces_2d", "learning_rate", "metrics"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# -- synthetic data ----------------------------------------------------------------------------
def _lr(kind, scale, rng, exact):
    B = [1, 4, 16, 64]
    sharp = [scale * (2.0 + 8.0 / b) for b in B]
    c = 2.0 if kind == "sgd" else 0.38
    lr = [c / s for s in sharp]
    return {
        "batch_sizes": B,
        "lr_max": lr,
        "lr_max_low": [0.8 * v for v in lr],
        "lr_max_high": [1.3 * v for v in lr],
        "sharpness": sharp,
        "sharpness_std": [0.1 * s for s in sharp],
        "sharpness_samples": [list(s + rng.normal(size=3)) for s in sharp],
        "fit": {"a": 2.0 * scale, "b": 8.0 * scale, "b_star": 4.0},
        "lr_fit": lr,
        "scaling_exponent": 0.61,
        "optimizer": {
            "kind": kind,
            "lr": None,
            "momentum": 0.0,
            "dampening": 0.0,
            "weight_decay": 0.0,
            "decoupled_weight_decay": 0.0,
            "betas": [0.9, 0.999],
            "eps": 1e-8,
        },
        "coefficient": c,
        "method": "batch Hessian power iteration",
        "lr_mean_square": [1.1 * v for v in lr[:2]] + [float("nan")] * 2 if exact else None,
        "lr_nonuniformity_bound": [0.9 * v for v in lr] if exact else None,
        "lr_trace_bound": 0.004 if exact else None,
        "verification": [
            {
                "batch_size": b,
                "lrs": [0.5 * v, v, 2.0 * v],
                "diverged": [False, False, True],
                "final_losses": [0.3, 0.5, float("inf")],
                "start_loss": 0.7,
                "steps": 20,
            }
            for b, v in zip(B[:2], lr[:2])
        ],
        "current_lr": 0.01 if kind == "sgd" else None,
        "num_samples": 256,
        "num_hvps": 480,
        "num_passes": 120,
        "seconds": 1.25,
        "notes": ["heuristic: off by up to 64 %"] if exact else [],
    }


def report_data(seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    grid = np.linspace(-2.0, 30.0 * scale, 400)
    bulk = np.exp(-0.5 * (grid / 0.5) ** 2) + 1e-3 * np.exp(-0.5 * ((grid - 25 * scale) / 0.3) ** 2)
    density = bulk / np.trapezoid(bulk, grid)
    nodes = np.sort(rng.normal(0.0, 0.5, size=(6, 12)), axis=1)
    nodes[:, -1] = 25.0 * scale
    weights = rng.dirichlet(np.ones(12), size=6)
    x, y = np.linspace(-1, 1, 11), np.linspace(-0.5, 0.5, 7)
    X, Y = np.meshgrid(x, y, indexing="ij")
    loss2 = 0.3 + scale * (3.0 * X**2 + 0.5 * Y**2)
    loss2[0, 0] = np.nan  # a point not computed
    t = np.linspace(-1.0, 1.0, 21)
    return {
        "metadata": {
            "landscape_version": "0.1.0",
            "torch_version": "2.13.0",
            "python_version": "3.11.7",
            "seed": seed,
            "budget": "fast",
            "model": "MLP(784-64-10)",
            "num_params": 50890,
            "num_samples": 256,
            "device": "cpu",
            "dtype": "float32",
            "created": "2025-01-02T03:04:05+00:00",
            "loss": "cross_entropy",
            "seconds": 12.5,
        },
        "loss": {"value": 0.3123, "accuracy": 0.91},
        "eigenvalues": {
            "top": np.array([25.0, 11.2, 7.5]) * scale,
            "top_residuals": np.array([1e-4, 3e-4, 2e-3]),
            "bottom": np.array([-0.42, -0.1]),
            "bottom_residuals": np.array([5e-4, np.nan]),
            "num_hvps": 140,
            "num_passes": 140,
            "seconds": 0.8,
        },
        "trace": {
            "value": 310.5 * scale,
            "stderr": 4.2,
            "method": "hutch++",
            "num_hvps": 90,
            "num_passes": 90,
            "seconds": 0.5,
        },
        "frobenius": {"value": 41.0 * scale, "stderr": 0.9, "num_hvps": 60, "num_passes": 60},
        "density": {
            "grid": grid,
            "density": density,
            "nodes": nodes,
            "weights": weights,
            "sigma": 0.05,
            "num_outliers": 1,
            "outliers": np.array([25.0 * scale]),
            "bulk_edge": 1.9,
            "gap_ratio": 7.5,
            "negative_fraction": 0.31,
            "negative_mass_ratio": 0.04,
            "num_hvps": 72,
            "num_passes": 72,
            "seconds": 0.6,
        },
        "layerwise": {
            "names": ["fc1", "fc2", "head"],
            "num_params": [50240, 4160, 650],
            "trace": [200.0 * scale, 80.5, float("nan")],
            "trace_stderr": [3.0, 1.5, None],
            "top_eigenvalue": [20.0, None, 2.5],
            "num_hvps": 300,
            "num_passes": 300,
            "seconds": 1.5,
        },
        "surface_1d": {
            "coords": t,
            "loss": 0.3 + scale * t**2,
            "accuracy": 0.9 - 0.2 * t**2,
            "origin_loss": 0.3,
            "num_passes": 21,
            "seconds": 0.2,
        },
        "surface_2d": {
            "coords_x": x,
            "coords_y": y,
            "loss": loss2,
            "accuracy": None,
            "num_passes": 77,
            "seconds": 0.7,
        },
        "sharpness": {
            "measures": {
                "lambda_max": {
                    "name": "lambda_max",
                    "value": 25.0 * scale,
                    "stderr": None,
                    "invariant": False,
                    "invariance": "not invariant to layer rescaling (Dinh et al. 2017): "
                    "H -> D^-1 H D^-1",
                    "num_passes": 40,
                    "num_hvps": 40,
                    "seconds": 0.3,
                    "details": {"residual": 1e-4, "converged": True},
                },
                "sam": {
                    "name": "sam",
                    "value": "inf",  # as SharpnessMeasure.to_dict writes a blow-up
                    "stderr": None,
                    "invariant": False,
                    "invariance": "not invariant to layer rescaling (Dinh et al. 2017): "
                    "fixed Euclidean rho-ball",
                    "num_passes": 5,
                    "num_hvps": 0,
                    "seconds": 0.1,
                    "details": {"rho": 0.05, "one_step": float("inf"), "steps": [1, 2]},
                },
                "asam": {
                    "name": "asam",
                    "value": 0.0123 * scale,
                    "stderr": None,
                    "invariant": True,
                    "invariance": "invariant to layer rescaling, up to eta_0 (Kwon et al. 2021)",
                    "num_passes": 5,
                    "num_hvps": 0,
                    "seconds": 0.1,
                    "details": {},
                },
            },
            "loss": 0.3123,
            "weight_norm": 12.5,
            "num_samples": 256,
            "num_params": 50890,
        },
        "coherence": {
            "alpha": 0.12,
            "m_coherence": 30.7,
            "alpha_unbiased": 0.05,
            "b_simple": 7.3,
            "b_simple_unbiased": float("nan"),
            "gsnr_median": 0.01,
            "gsnr_mean": 0.04,
            "b_noise": None,
            "num_passes": 2,
            "num_hvps": 0,
            "seconds": 0.4,
            "notes": [],
        },
        "learning_rate": {
            "sgd": _lr("sgd", scale, rng, True),
            "adam": _lr("adam", scale, rng, False),
        },
        "costs": {
            "eigenvalues": {"hvps": 140, "passes": 140, "seconds": 0.8},
            "trace": {"hvps": 90, "passes": 90, "seconds": 0.5},
            "density": {"hvps": 72, "passes": 72, "seconds": 0.6},
            "surface_2d": {"hvps": 0, "passes": 77, "seconds": 0.7},
            "learning_rate": {"hvps": 960, "passes": 240, "seconds": 2.5},
        },
        # Encoding corner cases, ignored by the renderers.
        "extras": {
            "empty_array": np.zeros(0),
            "empty_2d": np.zeros((0, 3), dtype=np.float32),
            "empty_list": [],
            "empty_dict": {},
            "ints_2d": np.arange(6, dtype=np.int16).reshape(2, 3),
            "bools": np.array([True, False]),
            "complex": np.array([1 + 2j, -1j]),
            "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
            "zero_d": np.array(3.5),
            "unicode": np.array(["a", "λμ", ""]),
            "unicode_2d": np.array([["x", "yy"], ["", "zzz"]]),
            "bytes": np.array([b"ab", b"c"]),
            "np_scalars": [np.float32(1.5), np.int64(7), np.bool_(True), np.float64(np.nan)],
            "strings": ["fc1.weight", "fc1.bias", ""],
            "strings_with_none": ["a", None, "c"],
            "floats_with_none": [1.0, None, float("nan"), float("-inf")],
            "ints_with_none": [None, 3, None],
            "all_none": [None, None],
            "flags": [True, False, True],
            "mixed": [1, 2.5, "x", None, True, [1, [2.0]], {"k": np.ones(2)}],
            "tuple": (1, "two", 3.0),
            "float_tuple": (1.0, 2.0),
            "nested_lists": [[1.0, 2.0], [], [3.0]],
            "big_int": 2**80,
            "negative_zero": -0.0,
            "nan": float("nan"),
            "inf": float("inf"),
            "true": True,
            "none": None,
            "long_text": "x" * 100_000,
            "keys": {"a/b": 1, ".": 2, "..hidden": 3, "@type": 4, "%": 5, "": 6, "λ": 7, "0": 8},
        },
    }


def comparison_data():
    a, b = report_data(0, 1.0), report_data(1, 0.25)
    t = np.linspace(-0.25, 1.25, 16)
    t[2], t[-3] = 0.0, 1.0
    t = np.sort(t)
    loss = 0.3 + 0.7 * np.sin(np.pi * np.clip(t, 0, 1)) + 0.05 * t
    return {
        "metadata": {"landscape_version": "0.1.0", "created": "2025-01-02T03:04:05+00:00"},
        "names": ["sgd-run", "adam-run"],
        "reports": {"sgd-run": a, "adam-run": b},
        "interpolation": {
            "pair": ["sgd-run", "adam-run"],
            "t": t,
            "loss": loss,
            "accuracy": 0.9 - 0.3 * np.sin(np.pi * np.clip(t, 0, 1)),
            "barrier": float(
                np.max(loss[(t >= 0) & (t <= 1)] - (0.3 + 0.05 * t[(t >= 0) & (t <= 1)]))
            ),
            "num_passes": 16,
            "seconds": 0.3,
        },
        "surfaces_2d": {"sgd-run": a["surface_2d"], "adam-run": b["surface_2d"]},
        "learning_rate": {"sgd-run": a["learning_rate"], "adam-run": b["learning_rate"]},
        "costs": {"interpolation": {"hvps": 0, "passes": 16, "seconds": 0.3}},
    }


def assert_same(a, b, where="data"):
    """Exact equality: same types, same keys in the same order, bitwise-equal numbers."""
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape}"
        assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes(), where
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), where
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b), f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def report():
    """A full report: the version-1 synthetic sections read into records."""
    return migrate.report_from_version_1(report_data())


@pytest.fixture(scope="module")
def comparison():
    return migrate.comparison_from_version_1(comparison_data())


# -- records and HDF5 ----------------------------------------------------------------------------
def test_report_holds_result_records(report):
    from landscape.linalg.results import Eigenpairs, SpectralDensity
    from landscape.metrics.learning_rate import LearningRateResult

    assert isinstance(report.eigenvalues.top, Eigenpairs) and report.eigenvalues.top.vectors is None
    assert isinstance(report.density, SpectralDensity)
    assert isinstance(report.learning_rate.results["sgd"], LearningRateResult)
    assert report.eigenvalues.lambda_max == 25.0 and report.eigenvalues.lambda_min == -0.42
    assert report.trace.value == 310.5 and report.trace.method == "hutch++"
    # version 1 stored λmax twice; the sharpness section no longer does
    assert "lambda_max" not in report.sharpness.measures
    assert math.isinf(report.sharpness["sam"].value)


def test_report_round_trip_is_exact(report, tmp_path):
    path = report.save(tmp_path / "r.h5")
    assert path == str(tmp_path / "r.h5")
    loaded = load(path)
    assert type(loaded) is Report
    assert_same(report.to_dict(), loaded.to_dict())
    assert loaded.summary() == report.summary()
    assert torch.equal(loaded.density.nodes, report.density.nodes)
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == FORMAT
        assert f.attrs["format_version"] == codec.FORMAT_VERSION == 2
        assert f.attrs["kind"] == "report"
        # the documented layout: scalars as attributes, arrays as datasets
        assert isinstance(f["data/loss"].attrs["value"], np.floating)
        assert f["data/density/grid"].attrs["@kind"] == "ndarray"
    assert sorted(os.listdir(tmp_path)) == ["r.h5"]


def test_comparison_round_trip_is_exact(comparison, tmp_path):
    loaded = load(comparison.save(str(tmp_path / "c.h5")))
    assert type(loaded) is Comparison
    assert_same(comparison.to_dict(), loaded.to_dict())
    assert loaded.names == ["sgd-run", "adam-run"]
    assert loaded.interpolation.barrier == comparison.interpolation.barrier


def test_the_codec_round_trips_every_plain_value_exactly(tmp_path):
    extras = report_data()["extras"]
    path = codec.write(tmp_path / "x.h5", "report", {"extras": extras})
    kind, version, data = codec.read(path)
    assert (kind, version) == ("report", 2)
    assert_same({"extras": extras}, data)
    with h5py.File(path, "r") as f:
        assert "a%2Fb" in f["data/extras/keys"].attrs


def test_save_replaces_and_refuses_unstorable_values(tmp_path):
    path = tmp_path / "r.h5"
    Report(loss=LossValue(1.0)).save(path)
    Report(loss=LossValue(2.0)).save(path)
    assert load(path).loss == LossValue(2.0)
    with pytest.raises(TypeError, match="data/metadata/x: cannot store a object"):
        Report(metadata={"x": object()}).save(path)
    with pytest.raises(TypeError, match="keys must be strings"):
        Report(metadata={1: 2}).save(path)
    assert load(path).loss == LossValue(2.0)
    assert sorted(os.listdir(tmp_path)) == ["r.h5"]


def test_a_save_failing_midway_leaves_the_old_file(report, tmp_path, monkeypatch):
    path = tmp_path / "r.h5"
    old = Report(loss=LossValue(1.0), trace=Estimate(3.0, 0.1, 10, 2, "hutch++"))
    old.save(path)
    calls = {"n": 0}
    write = codec._write_value

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 40:
            raise RuntimeError("disk full")
        return write(*args, **kwargs)

    monkeypatch.setattr(codec, "_write_value", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        report.save(path)
    assert calls["n"] == 40
    assert_same(load(path).to_dict(), old.to_dict())
    assert sorted(os.listdir(tmp_path)) == ["r.h5"]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_killed_save_leaves_the_old_file(tmp_path):
    path = tmp_path / "r.h5"
    Report(loss=LossValue(1.0)).save(path)
    script = textwrap.dedent(
        f"""
        import os, signal
        from landscape.report import codec
        from landscape.report.contents import LossValue
        from landscape.report.document import Report
        write = codec._write_value
        calls = [0]
        def killing(*args, **kwargs):
            calls[0] += 1
            if calls[0] == 5:
                os.kill(os.getpid(), signal.SIGKILL)
            return write(*args, **kwargs)
        codec._write_value = killing
        Report(loss=LossValue(2.0), metadata={{str(i): i for i in range(9)}}).save({str(path)!r})
        """
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    assert load(path).loss == LossValue(1.0)
    leftovers = [n for n in os.listdir(tmp_path) if n != "r.h5"]
    assert all(n.startswith(".r.h5.") and n.endswith(".tmp") for n in leftovers)


def test_load_errors(report, tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(FileNotFoundError, match=r"nope.h5"):
        load(missing)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"not a landscape report.*not an HDF5 file"):
        load(text)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("x", data=np.ones(3))
    with pytest.raises(ValueError, match="not a landscape report"):
        load(foreign)
    surface = tmp_path / "surface.h5"
    with h5py.File(surface, "w") as f:
        f.attrs["format"] = "landscape.surface"
    with pytest.raises(ValueError, match=r"not a landscape report.*'landscape.surface'"):
        load(surface)
    truncated = tmp_path / "truncated.h5"
    report.save(truncated)
    with open(truncated, "r+b") as f:
        f.truncate(os.path.getsize(truncated) // 2)
    with pytest.raises(ValueError, match=r"truncated.h5"):
        load(truncated)
    newer = tmp_path / "newer.h5"
    Report(loss=LossValue(1.0)).save(newer)
    with h5py.File(newer, "r+") as f:
        f.attrs["format_version"] = np.int64(3)
    with pytest.raises(ValueError, match="format version 3, newer than version 2"):
        load(newer)
    wrong = tmp_path / "wrong.h5"
    codec.write(wrong, "report", {"loss": {"accuracy": 0.5}})  # a record without its value
    with pytest.raises(ValueError, match=r"corrupt landscape report.*'value' is missing"):
        load(wrong)


# -- version 1 -------------------------------------------------------------------------------------
def test_version_1_files_still_load():
    # Written by landscape at commit 8006436, the last to write format version 1.
    synthetic = load(DATA / "v1_synthetic_report.h5")
    assert type(synthetic) is Report
    assert_same(synthetic.to_dict(), migrate.report_from_version_1(report_data()).to_dict())
    real = load(DATA / "v1_compare_fast.h5")
    assert type(real) is Comparison and real.names == ["SGD", "Adam"]
    with h5py.File(DATA / "v1_compare_fast.h5", "r") as f:
        stored = f["data/interpolation"].attrs["barrier"]
    assert real.interpolation.barrier == pytest.approx(stored, rel=1e-12)
    sgd = real.reports["SGD"]
    assert sgd.learning_rate.optimizer_kind == "momentum"
    assert sgd.learning_rate.own.current_lr == 0.1
    assert sgd.eigenvalues.top.converged.all()
    assert len(real.findings()) >= 4
    for kind in real.plot_kinds():
        assert isinstance(real.plot(kind), Figure), kind


# -- JSON ----------------------------------------------------------------------------------------
def test_to_json_is_strict_json(report, comparison):
    for doc in (report, comparison):
        out = json.loads(doc.to_json())
        assert set(out) == set(doc.to_dict())
    out = json.loads(report.to_json())
    assert out["density"]["nodes"] == report.density.nodes.tolist()
    assert out["surface_2d"]["loss"][0][0] == "nan"
    assert out["sharpness"]["measures"]["sam"]["value"] == "inf"


# -- summaries -----------------------------------------------------------------------------------
def test_report_summary(report):
    text = report.summary()
    assert str(report) == text
    assert text.split("\n\n")[1].startswith("Findings\n1. ")
    for needle in [
        "Landscape report: MLP(784-64-10)",
        "50,890 parameters",
        "loss      0.3123",
        "accuracy  0.91",
        "λmax",
        "25  (residual 0.0001)",
        "λmin",
        "-0.42  (residual 0.0005)",
        "310.5 ± 4.2  (hutch++)",
        "‖H‖_F",
        "41 ± 0.9",
        "1: 25",
        "bulk edge",
        "negative mass ratio",
        "6 probes × 12 steps",
        "Per-layer curvature",
        "Sharpness",
        "Dinh et al. 2017",
        "Gradient noise and coherence",
        "m_coherence",
        "Largest stable learning rate: sgd",
        "Largest stable learning rate: adam",
        "exact MS (SGD)",
        "stable ≤",
        "current lr 0.01",
        "Loss surface",
        "11 × 7 points",
        "1 not finite",
    ]:
        assert needle in text, needle
    # unresolved estimates say so instead of printing a bare number
    assert "b_simple_unbiased  not resolved (nan" in text
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ")}
    assert " inf " in rows["sam"] and " no " in rows["sam"] and " yes " in rows["asam"]
    assert "lambda_max" not in rows  # λmax once, in the Hessian section
    cost = text.split("\nCost\n")[1].splitlines()
    assert cost[0].split() == ["stage", "HVPs", "passes", "seconds"]
    assert [line.split()[0] for line in cost[1:]] == [*report.costs, "total"]
    assert cost[-1].split()[1:] == ["1262", "619", "5.1"]


def test_negative_unbiased_estimates_and_fits_say_they_are_not_resolved(report):
    from dataclasses import replace

    coherence = replace(report.coherence, alpha_unbiased=-0.0006, b_simple_unbiased=-1664.0)
    sgd = report.learning_rate.results["sgd"]
    fit = replace(sgd, fit={"a": 2.0, "b": -7.8, "b_star": -3.89})
    rates = replace(report.learning_rate, results={"sgd": fit})
    text = replace(report, coherence=coherence, learning_rate=rates).summary()
    assert "alpha_unbiased     not resolved (-0.0006" in text
    assert "b_simple_unbiased  not resolved (-1664" in text
    assert "no noise-dominated regime resolved: B* ≤ 0" in text and "-3.89" not in text


def test_partial_reports():
    text = Report(
        trace=Estimate(3.0, 0.1, 10, 10, "hutch++"),
        costs={"trace": StageCost(10, 10, 0.1)},
    ).summary()
    assert "trace  3 ± 0.1  (hutch++)" in text and "trace  10    10      0.1" in text
    assert Report().summary() == "Landscape report"


def test_comparison_summary(comparison):
    text = comparison.summary()
    assert text.startswith("Landscape comparison: sgd-run vs adam-run")
    assert "differences may be a scale artifact (Dinh et al. 2017)" in text
    metrics = text.split("\nMetrics\n")[1].split("\n\n")[0].splitlines()
    assert metrics[0].split() == ["metric", "sgd-run", "adam-run", "invariant"]
    by_name = {line.split("  ")[1].strip(): line for line in metrics[1:] if "note" not in line}
    assert by_name["λmax"].rstrip().endswith("no †")
    assert by_name["sharpness: asam"].rstrip().endswith("yes")
    assert "25" in by_name["λmax"] and "6.25" in by_name["λmax"]
    assert "Linear interpolation" in text and "barrier" in text
    assert "2-D loss surfaces" in text and "report sgd-run" in text
    # each model's own optimizer first, the others after
    text = load(DATA / "v1_compare_fast.h5").summary()
    titles = [line for line in text.splitlines() if "Largest stable learning rate" in line]
    assert titles[:2] == [
        "SGD: Largest stable learning rate: momentum (in use)",
        "Adam: Largest stable learning rate: adam (in use)",
    ]


# -- figures -------------------------------------------------------------------------------------
def _has_content(fig):
    return any(
        ax.lines or ax.collections or ax.patches or ax.images or ax.tables for ax in fig.axes
    )


def test_every_report_plot_kind(report):
    assert report.plot_kinds() == REPORT_KINDS
    figures = report.figures()
    assert list(figures) == REPORT_KINDS
    for kind, fig in figures.items():
        assert isinstance(fig, Figure), kind
        assert _has_content(fig), kind
    spectrum = figures["spectrum"].axes[0]
    assert any(line.get_linestyle() == ":" for line in spectrum.lines) or spectrum.collections
    assert len(figures["learning_rate"].axes[0].get_legend().get_texts()) >= 2


def test_every_comparison_plot_kind(comparison):
    assert comparison.plot_kinds() == COMPARISON_KINDS
    for kind, fig in comparison.figures().items():
        assert isinstance(fig, Figure) and _has_content(fig), kind
    spectrum = comparison.plot("spectrum").axes[0]
    assert spectrum.get_yscale() == "log"
    assert [t.get_text() for t in spectrum.get_legend().get_texts()] == ["sgd-run", "adam-run"]
    panels = comparison.plot("surfaces_2d").axes
    norms = {id(c.norm) for ax in panels[:2] for c in ax.collections if hasattr(c, "norm")}
    assert len(norms) == 1  # one shared color scale
    assert "loss barrier" in comparison.plot("interpolation").axes[0].get_title()


def test_unknown_or_missing_plot_kind_lists_the_available_ones():
    report = Report(loss=LossValue(1.0), trace=Estimate(2.0, 0.1, 1, 1, "hutch++"))
    with pytest.raises(ValueError, match=r"unknown plot kind 'nope'.*\['metrics'\]"):
        report.plot("nope")
    with pytest.raises(ValueError, match=r"no data for plot kind 'spectrum'.*\['metrics'\]"):
        report.plot("spectrum")
    with pytest.raises(ValueError, match=r"available for this comparison are \[\]"):
        Comparison().plot("metrics")


# -- HTML ----------------------------------------------------------------------------------------
_EXTERNAL = re.compile(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", re.IGNORECASE)


def test_to_html_is_self_contained_and_puts_findings_first(report, comparison, tmp_path):
    for doc in (report, comparison):
        before = len(plt.get_fignums())
        path = doc.to_html(tmp_path / f"{type(doc).__name__}.html")
        assert len(plt.get_fignums()) == before  # figures closed
        page = Path(path).read_text(encoding="utf-8")
        assert page.startswith("<!DOCTYPE html>")
        assert page.count("data:image/png;base64,") >= 4
        assert not _EXTERNAL.search(page) and "<script" not in page.lower()
        assert "could not be drawn" not in page
        assert "Dinh et al. 2017" in page
        # findings before every table; details folded; definitions on hover
        assert page.index("<h2>Findings</h2>") < page.index("<table>")
        assert "<details><summary>" in page and '<abbr title="' in page
        assert 'class="conf conf-' in page
    assert sorted(os.listdir(tmp_path)) == ["Comparison.html", "Report.html"]


def test_the_page_shows_the_optimizer_in_use_first_and_folds_the_others(report):
    from dataclasses import replace

    rates = replace(report.learning_rate, optimizer_kind="sgd")
    page = replace(report, learning_rate=rates)._repr_html_()
    open_sgd = page.index("Largest stable learning rate: sgd (in use)")
    folded_adam = page.index("<details><summary>Largest stable learning rate: adam")
    assert open_sgd < folded_adam


def test_repr_html(report, comparison):
    before = len(plt.get_fignums())
    page = report._repr_html_()
    assert len(plt.get_fignums()) == before
    assert "<table>" in page and "data:image/png;base64," in page
    assert "λmax" in page and "Sharpness" in page
    assert "data:image/png;base64," in comparison._repr_html_()
    # a figure that cannot be drawn is reported, not fatal
    from landscape.surfaces.grid import Surface

    broken = Surface((np.array([0.0, 1.0]),), np.array([np.nan, np.nan]), None, 0.0, None, {})
    assert "could not be drawn" in Report(surface_1d=broken)._repr_html_()
    assert len(plt.get_fignums()) == before


def test_item_access(report):
    assert report["trace"].method == "hutch++"
    assert "density" in report and "nope" not in report and "plan" not in report
    with pytest.raises(KeyError, match="no section 'nope'"):
        report["nope"]
    with pytest.raises(KeyError, match="no section 'plan'"):
        report["plan"]
