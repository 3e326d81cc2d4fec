"""The front door: analyze() and compare() against exact quantities, and their documents."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from state import assert_unchanged, snapshot
from torch import nn

import landscape as ls


def _setup(seed=0, n=96):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3)).double()
    X = torch.randn(n, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    batches = [(X[i : i + 32], y[i : i + 32]) for i in range(0, n, 32)]
    return model, batches, X, y


@pytest.fixture(scope="module")
def analyzed():
    model, batches, X, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = snapshot(model)
    report = ls.analyze(model, batches, optimizer=opt, progress=False, seed=3)
    assert_unchanged(model, before)
    return model, batches, X, y, report


def test_analyze_numbers_match_exact_quantities(analyzed):
    model, _, X, y, report = analyzed
    H = ls.hessian(model, (X, y)).to_dense()
    exact = torch.linalg.eigvalsh(H)
    top = report.eigenvalues.top.values
    np.testing.assert_allclose(top, exact.flip(0)[:3].numpy(), rtol=1e-3)
    assert report.eigenvalues.lambda_min == pytest.approx(float(exact[0]), abs=1e-2)
    tr = report.trace
    assert abs(tr.value - float(exact.sum())) < 5 * tr.stderr + 1e-9
    assert report.frobenius.value == pytest.approx(float(exact.norm()), rel=0.3)
    loss = float(F.cross_entropy(model(X), y).detach())
    assert report.loss.value == pytest.approx(loss, rel=1e-12)
    acc = float((model(X).argmax(1) == y).double().mean())
    assert report.loss.accuracy == pytest.approx(acc) and report.loss.num_classes == 3
    assert report.surface_1d.loss[10] == pytest.approx(loss, rel=1e-9)  # the origin
    assert sum(layer.num_params for layer in report.layerwise.layers) == H.shape[0]
    rates = report.learning_rate
    assert set(rates.results) == {"sgd", "adam", "momentum"}
    assert rates.optimizer_kind == "momentum" and rates.own.optimizer.momentum == 0.9
    assert rates.loader_batch_size == 32
    assert "sam" in report.sharpness and report.sharpness["asam"].invariant is True
    assert "lambda_max" not in report.sharpness  # λmax once: report.eigenvalues
    assert 0 < report.coherence.alpha <= 1


def _finite(x):
    return bool(np.all(np.isfinite(np.asarray(x, dtype=float))))


def test_every_field_is_present_and_finite(analyzed):
    report = analyzed[-1]
    for section in (
        "loss", "eigenvalues", "subsets", "trace", "frobenius", "density", "layerwise",
        "block_spectra", "surface_1d", "surface_2d", "sharpness", "coherence", "learning_rate",
        "costs", "metadata",
    ):  # fmt: skip
        assert section in report, section
    for pairs in (report.eigenvalues.top, report.eigenvalues.bottom):
        assert _finite(pairs.values) and _finite(pairs.residuals) and pairs.values.numel() > 0
        assert pairs.vectors is None  # reports keep the values, not the vectors
    for estimate in (report.trace, report.frobenius):
        assert _finite([estimate.value, estimate.stderr])
    d = report.density
    assert _finite(d.grid) and _finite(d.density) and _finite(d.nodes)
    assert _finite(d.weights) and _finite(d.negative_mass_ratio)
    assert _finite([layer.trace for layer in report.layerwise.layers])
    assert _finite(report.surface_1d.loss) and _finite(report.surface_2d.loss)
    assert _finite(report.surface_2d.accuracy)
    for name, m in report.sharpness.measures.items():
        assert _finite(m.value), name
    for key in ("alpha", "m_coherence", "b_simple", "gsnr_median"):
        assert _finite(getattr(report.coherence, key)), key
    for kind, r in report.learning_rate.results.items():
        assert _finite(r.lr_max) and _finite(r.sharpness) and _finite(r.scaling_exponent), kind
    assert _finite(report.learning_rate.results["sgd"].lr_mean_square)
    for stage, cost in report.costs.items():
        assert _finite([cost.num_matvecs, cost.passes, cost.seconds]), stage


def test_every_stage_records_its_cost(analyzed):
    report = analyzed[-1]
    costs = report.costs
    for stage in ("eigenvalues", "trace", "density", "layerwise", "learning_rate"):
        assert costs[stage].num_matvecs > 0 and costs[stage].passes > 0
        assert costs[stage].seconds > 0
    assert report.metadata["budget"] == "fast"
    assert report.metadata["num_params"] == 103


def test_report_displays_saves_and_loads(analyzed, tmp_path):
    report = analyzed[-1]
    text = report.summary()
    assert "trace" in text.lower() and "invariant" in text.lower()
    assert "Findings" in text and len(report.findings()) >= 4
    json.loads(report.to_json())
    path = tmp_path / "run.h5"
    report.save(path)
    loaded = ls.load(path)
    assert torch.equal(loaded.eigenvalues.top.values, report.eigenvalues.top.values)
    assert loaded.summary() == text
    html = tmp_path / "run.html"
    report.to_html(html)
    assert "data:image/png;base64" in html.read_text()
    assert "<table" in report._repr_html_()


def test_analyze_is_deterministic():
    model, batches, *_ = _setup(seed=1)
    a = ls.analyze(model, batches, progress=False, surfaces=False, learning_rates=False)
    b = ls.analyze(model, batches, progress=False, surfaces=False, learning_rates=False)
    assert torch.equal(a.eigenvalues.top.values, b.eigenvalues.top.values)
    assert a.trace.value == b.trace.value
    assert torch.equal(a.density.density, b.density.density)


def test_compare_two_minima():
    model_a, batches, X, y = _setup(seed=0)
    model_b, *_ = _setup(seed=5)
    before = (snapshot(model_a), snapshot(model_b))
    c = ls.compare({"A": model_a, "B": model_b}, batches, progress=False, interpolation_points=11)
    assert_unchanged(model_a, before[0])
    assert_unchanged(model_b, before[1])
    assert c.names == ["A", "B"] and c.interpolation.pair == ("A", "B")
    t = c.interpolation.path.coords[0]
    loss = c.interpolation.path.loss
    assert t[0] == 0 and t[-1] == 1
    assert loss[0] == pytest.approx(float(F.cross_entropy(model_a(X), y)), rel=1e-9)
    assert loss[-1] == pytest.approx(float(F.cross_entropy(model_b(X), y)), rel=1e-9)
    chord = (1 - t) * loss[0] + t * loss[-1]
    assert c.interpolation.barrier == pytest.approx(float(np.max(loss - chord)), abs=1e-12)
    assert all(r.surface_2d is not None for r in c.reports.values())
    assert "surfaces_2d" in c.plot_kinds()
    assert "scale artifact" in c.summary()
    assert {f.topic for f in c.findings()} >= {"sharper_minimum", "connectivity"}


def test_front_door_errors():
    model, batches, *_ = _setup()
    with pytest.raises(ValueError, match="budget"):
        ls.analyze(model, batches, budget="quick", progress=False)
    with pytest.raises(ValueError, match="2 to 4"):
        ls.compare({"a": model}, batches, progress=False)
    other = nn.Sequential(nn.Linear(6, 11), nn.Tanh(), nn.Linear(11, 3)).double()
    with pytest.raises(ValueError, match="same architecture"):
        ls.compare({"a": model, "b": other}, batches, progress=False)
    with pytest.raises(ValueError, match=r"empty|no batches|no samples"):
        ls.analyze(model, [], progress=False)
