"""analyze by time: the cost model, the fit, and the plan a report keeps.

Predictions are checked against the counts of units they are made of (exact arithmetic on
made-up unit costs), never against wall-clock times: how close they come to real times is
measured by benchmarks/analyze.py.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

import landscape as ls
from landscape import analysis, planning, stages
from landscape.planning import Plan, UnitCosts
from landscape.stages import fit, stage_costs

UNITS = UnitCosts(
    single=2.0,
    block_vector=1.0,
    forward_sample=1e-3,
    gradient_sample=3e-3,
    per_example_sample=1e-2,
    curvature_samples=512,
    num_samples=2000,
    seconds=0.0,
)


def test_stage_costs_count_the_units_of_each_stage():
    settings = dict(ls.BUDGETS["standard"])  # 2048 curvature samples, but 2000 exist
    costs = stage_costs(settings, UNITS)
    ratio = 2000 / 512  # products cost their share of the curvature samples
    assert costs["trace"] == pytest.approx(stages._TRACE_FACTOR * (99 + 30) * 1.0 * ratio)
    assert costs["density"] == pytest.approx(10 * 80 * 1.0 * ratio)
    assert costs["layerwise"] == pytest.approx(30 * 1.0 * ratio)
    assert costs["surfaces"] == pytest.approx((41 + 25**2) * 1e-3 * 2000)
    assert costs["loss"] == pytest.approx(2.0)
    assert costs["coherence"] == pytest.approx(stages._COHERENCE_PER_EXAMPLE * 512 * 1e-2)
    assert list(costs) == [
        "loss", "eigenvalues", "subsets", "trace", "density", "layerwise", "block_spectra",
        "surfaces", "sharpness", "coherence", "learning_rate",
    ]  # fmt: skip
    without = stage_costs(settings, UNITS, surfaces=False, learning_rates=False)
    assert "surfaces" not in without and "learning_rate" not in without


def test_fit_scales_down_to_the_budget_and_says_what_it_scaled():
    settings = ls.BUDGETS["standard"]
    full = sum(stage_costs(settings, UNITS).values())
    fitted, scaled, predicted = fit(settings, UNITS, full / 4)
    assert sum(predicted.values()) <= full / 4
    assert predicted == stage_costs(fitted, UNITS)
    assert scaled["curvature_samples"][0] == 2048 and scaled["curvature_samples"][1] < 2000
    for name, (before, after) in scaled.items():
        assert fitted[name] == after and settings[name] == before
    assert fitted["density"][0] <= 10 and fitted["density"][1] <= 80  # never raised
    # A budget that is large enough changes nothing.
    same, nothing, _ = fit(settings, UNITS, math.inf)
    assert same == dict(settings) and nothing == {}


def test_fit_stops_at_the_floors():
    fitted, _, predicted = fit(ls.BUDGETS["fast"], UNITS, 1e-6)
    assert fitted["curvature_samples"] == 64 and fitted["density"] == (2, 10)
    assert fitted["surface_2d"] == 5 and fitted["lr_batches"] == 1
    assert sum(predicted.values()) > 1e-6  # the smallest settings, reported as predicted


def _problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    X, y = torch.randn(600, 6), torch.randint(0, 3, (600,))
    return model, [(X[i : i + 100], y[i : i + 100]) for i in range(0, 600, 100)]


def test_a_dry_run_plans_without_analyzing(capsys):
    model, data = _problem()
    plan = ls.plan(model, data)
    print(plan.table())
    assert isinstance(plan, Plan) and plan.measured == {}
    assert set(plan.predicted) >= {"eigenvalues", "density", "learning_rate"}
    assert plan.units.curvature_samples == 512 and plan.units.single > 0
    assert "plan for inf s" in capsys.readouterr().out


def test_a_time_budget_runs_the_scaled_settings_and_keeps_the_plan(tmp_path, monkeypatch):
    model, data = _problem()
    plan = ls.plan(model, data, time_budget=1e-3)
    assert plan.settings["curvature_samples"] == 64  # nothing fits: the floors
    report = ls.analyze(
        model, data, time_budget=1e-3, progress=False, surfaces=False, learning_rates=False
    )
    kept = report.plan
    assert set(kept.predicted) == set(kept.measured) == set(report.costs)
    assert kept.scaled["curvature_samples"] == [512, 64]
    # Even the floors do not fit 1 ms: stages are left out (never the loss and the extreme
    # eigenvalues), and the report says which and why.
    assert {"loss", "eigenvalues"} <= set(report.costs) and "block_spectra" in kept.dropped
    assert set(kept.dropped) | set(kept.predicted) == set(report.costs) | set(kept.dropped)
    for name, reason in kept.dropped.items():
        assert report.notes[f"not run: {name}"] == reason and "time budget" in reason
    assert "Stages not run" in report.summary()
    report.save(tmp_path / "run.h5")
    loaded = ls.load(tmp_path / "run.h5")
    assert loaded.plan.scaled == kept.scaled and loaded.plan.settings == kept.settings
    assert loaded.plan.predicted == kept.predicted and loaded.plan.measured == kept.measured
    assert loaded.plan.dropped == kept.dropped and loaded.notes == report.notes
    assert "plan for" in report.summary()
    # A budget that holds the floors (not the budget's settings) runs the scaled settings:
    # halfway (geometrically) between the two, planned with the same unit costs (measuring
    # again on a busy machine would move the line), the guard for slow stages off.
    switches = {"surfaces": False, "learning_rates": False}
    floors = sum(stage_costs(plan.settings, plan.units, **switches).values())
    full = sum(stage_costs(ls.BUDGETS["fast"], plan.units, **switches).values())
    budget = plan.units.seconds + math.sqrt(floors * full)
    monkeypatch.setattr(analysis, "measure_costs", lambda *args, **kwargs: plan.units)
    monkeypatch.setattr(analysis, "_TIME_SLACK", math.inf)
    fits = ls.analyze(model, data, time_budget=budget, progress=False, **switches)
    assert fits.plan.scaled["curvature_samples"][1] < 512 and "density" not in fits.plan.dropped
    steps = fits.plan.settings["density"][1]
    assert fits.costs["density"].passes == steps  # the scaled density ran


def test_the_exact_threshold_counts_its_eigensolver_products():
    settings = dict(ls.BUDGETS["fast"])
    without = stage_costs(settings, UNITS)["learning_rate"]
    slow = dataclasses.replace(UNITS, mean_square_product=0.05)
    extra = stage_costs(settings, slow)["learning_rate"] - without
    assert extra == pytest.approx(settings["lr_sizes"] * stages._MEAN_SQUARE_PRODUCTS * 0.05)


def test_measured_units_include_the_mean_square_product_only_where_it_runs():
    model, data = _problem()
    units = planning.measure_costs(ls.Problem(model, data), 64, exact_samples=16)
    assert units.mean_square_product > 0
    own_loss = planning.measure_costs(
        ls.Problem(model, data, batch_loss=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1])),
        64, exact_samples=16,
    )  # fmt: skip
    assert own_loss.mean_square_product == 0.0


def test_a_memory_budget_leaves_out_what_cannot_fit_and_says_so():
    model, data = _problem()
    P = sum(p.numel() for p in model.parameters())
    tiny = 4 * 4 * P  # four float32 parameter vectors: the surfaces fit, products do not
    plan = ls.plan(model, data, time_budget=1e6, memory_budget=tiny)
    assert "surfaces" in plan.predicted and "loss" in plan.predicted
    assert {"eigenvalues", "trace", "density", "learning_rate"} <= set(plan.dropped)
    assert "memory budget" in plan.dropped["eigenvalues"] and "not run eigenvalues" in plan.table()
    # Without a plan, each algorithm refuses before allocating: the stage is left out, noted.
    report = ls.analyze(model, data, memory_budget=tiny, progress=False, learning_rates=False)
    assert "loss" in report.costs and "eigenvalues" not in report.costs
    assert "memory budget" in report.notes["not run: eigenvalues"]
    assert "Stages not run" in report.summary()
