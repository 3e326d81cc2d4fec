"""Findings and comparisons for every optimizer: which measure, what it rests on, no number.

Constructed results check the rules' arithmetic and words; one comparison of SGD, AdamW and
Muon on a small network checks that analyze and compare carry every optimizer end to end.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import landscape as ls
from landscape.analysis import _identity
from landscape.linalg.results import Eigenpairs
from landscape.report import findings as F
from landscape.report.contents import ExtremeEigenvalues, LearningRates
from landscape.stages import StageContext, _run_learning_rate

SIZES = (16, 64, 256)


def result(
    key="RMSprop", lr=0.01, sharpness=(300.0, 250.0, 200.0), coefficient=2.0,
    measure="batch sharpness", preconditioner="optimizer state", lr_max=None,
):  # fmt: skip
    kind = key if key in ("sgd", "momentum", "nesterov", "adam") else "other"
    settings = ls.OptimizerSettings(kind, lr=lr, name=None if kind != "other" else key)
    sharp = np.asarray(sharpness, dtype=float)
    limit = coefficient / sharp if lr_max is None else np.asarray(lr_max, dtype=float)
    return ls.LearningRateResult(
        batch_sizes=np.asarray(SIZES), lr_max=limit, lr_max_low=0.8 * limit,
        lr_max_high=1.2 * limit, sharpness=sharp, sharpness_std=0 * sharp,
        sharpness_samples=tuple(np.asarray([s]) for s in sharp),
        fit={"a": 1.0, "b": 1.0, "b_star": 1.0}, lr_fit=limit, scaling_exponent=0.5,
        optimizer=settings, coefficient=coefficient, method="test", lr_mean_square=None,
        lr_nonuniformity_bound=None, lr_trace_bound=None, verification=(), current_lr=lr,
        num_samples=256, num_matvecs=0, num_passes=0, seconds=0.0, measure=measure,
        preconditioner=preconditioner,
    )  # fmt: skip


def rates(own, batch=64):
    return LearningRates({own.optimizer.key: own}, batch, own.optimizer.key)


def eigen(top=20.0):
    values = torch.tensor([top], dtype=torch.float64)
    pairs = Eigenpairs(values, None, values * 0, torch.ones(1, dtype=torch.bool), 10, 10)
    return ExtremeEigenvalues(pairs, pairs)


def test_adaptive_optimizer_headroom_and_edge_name_its_state():
    # RMSprop, c = 2, lr 0.01: lr_max(64) = 2/250 = 0.008 < lr; at B = 256, 0.01*200/2 = 1.0
    rms = result()
    headroom = F.learning_rate_headroom(rates(rms))
    assert "above the largest stable one (0.008, the frozen threshold of its own state)" in (
        headroom.statement
    )
    assert "settles at this edge of stability rather than diverging" in headroom.statement
    assert "rests on the optimizer's state" in headroom.evidence
    assert "Cohen et al. 2022" in headroom.reference
    edge = F.edge_of_stability(eigen(), rates(rms))
    assert "RMSprop sits at the edge of stability (η·λ/c = 1)" in edge.statement
    assert "λmax(P⁻¹H) 200" in edge.evidence and edge.priority == F.INFORM
    # the control: far below the threshold the statement changes
    low = F.edge_of_stability(eigen(), rates(result(lr=0.001)))
    assert "below its edge of stability (η·λ/c = 0.1)" in low.statement


def test_critical_sharpness_is_never_read_as_a_divergence_threshold():
    # Muon: lambda_c = 250 at B = 64 -> eta_c = 0.008 < lr 0.01
    muon = result("Muon", measure="critical sharpness")
    headroom = F.learning_rate_headroom(rates(muon))
    assert "is 1.2× the critical learning rate along Muon's own update (0.008)" in (
        headroom.statement
    )
    assert "the next step at this learning rate raises the loss" in headroom.statement
    assert "not a divergence threshold" in headroom.statement
    assert headroom.priority == F.INFORM and "Kalra" in headroom.reference
    assert "rests on the optimizer's own next update" in headroom.evidence
    edge = F.edge_of_stability(eigen(), rates(muon))
    assert "raises the loss (η·λ_c/2 = 1)" in edge.statement
    assert "not a divergence threshold" in edge.statement
    assert edge.priority == F.INFORM
    slow = F.learning_rate_headroom(rates(result("Muon", lr=0.001, measure="critical sharpness")))
    assert "1/8 of the critical learning rate" in slow.statement
    assert "a larger step would still lower the loss" in slow.statement
    below = F.edge_of_stability(
        eigen(), rates(result("Muon", lr=0.001, measure="critical sharpness"))
    )
    assert "well below 2/η" in below.statement


def test_no_number_is_said_with_its_reason():
    # Adam's steady state: no number at the loader's batch size and at the full batch
    adam = result(
        "adam", lr=2e-3, coefficient=38.0, preconditioner="steady state",
        lr_max=(0.05, np.nan, np.nan),
    )  # fmt: skip
    headroom = F.learning_rate_headroom(rates(adam))
    assert headroom.confidence == F.ASSUMPTION and headroom.priority == F.CAVEAT
    assert "No learning-rate limit for adam at batch size 64" in headroom.statement
    assert "Keep the optimizer state with the model and pass it" in headroom.statement
    edge = F.edge_of_stability(eigen(), rates(adam))
    assert "No learning-rate limit for adam at the full batch" in edge.statement
    # with a number at the loader's batch size the steady state is named as such
    named = F.learning_rate_headroom(rates(adam, batch=16))
    assert "Adam's steady state at this point" in named.statement
    assert "several times higher" in named.statement


def _trained(name, initial, batches):
    model = copy.deepcopy(initial)
    if name == "SGD":
        opts = [torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)]
    elif name == "AdamW":
        opts = [torch.optim.AdamW(model.parameters(), lr=1e-2)]
    else:
        matrices = [p for p in model.parameters() if p.dim() == 2]
        rest = [p for p in model.parameters() if p.dim() != 2]
        opts = [torch.optim.Muon(matrices, lr=0.05), torch.optim.AdamW(rest, lr=1e-2)]
    for _ in range(30):
        for x, t in batches:
            for o in opts:
                o.zero_grad()
            nn.functional.cross_entropy(model(x), t).backward()
            for o in opts:
                o.step()
    return model, opts if len(opts) > 1 else opts[0]


def _data():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(96, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (96,), generator=g)
    batches = [(X[i : i + 32], y[i : i + 32]) for i in range(0, 96, 32)]
    initial = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3)).double()
    return batches, initial


def test_the_learning_rate_stage_takes_muon_with_adamw():
    # analyze's learning-rate stage and its findings, without the other stages
    batches, initial = _data()
    model, opts = _trained("Muon", initial, batches)
    problem = ls.Problem(model, batches)
    settings = dict(ls.BUDGETS["fast"])
    outcome, _, passes = _run_learning_rate(StageContext(problem, settings, 0, "auto", opts))
    rates = outcome["learning_rate"]
    assert rates.optimizer_kind == "Muon + AdamW" and set(rates.results) == {
        "sgd",
        "adam",
        "Muon + AdamW",
    }
    own = rates.own
    assert own.measure == "critical sharpness" and np.isfinite(own.lr_max).all()
    assert passes > 0
    edge = F.edge_of_stability(None, rates)
    assert "Muon + AdamW" in edge.statement and "critical sharpness" in edge.evidence
    assert F.learning_rate_headroom(rates).topic == "learning_rate"
    # a report file resumes only with the same optimizers' states
    identity = _identity(problem, "fast", None, 0, "auto", opts, {"surfaces": True})
    again = _identity(problem, "fast", None, 0, "auto", opts, {"surfaces": True})
    assert identity == again and "Muon + AdamW" in identity["settings"]


@pytest.fixture(scope="module")
def three():
    batches, initial = _data()
    models, optimizers = {}, {}
    for name in ("SGD", "AdamW", "Muon"):
        models[name], optimizers[name] = _trained(name, initial, batches)
    comparison = ls.compare(
        models, batches, optimizers=optimizers, budget="fast", progress=False,
    )  # fmt: skip
    return comparison


@pytest.mark.slow  # three analyses: about 60 s on 2 shared cores
def test_compare_sgd_adamw_and_muon(three):
    reports = three.reports
    keys = {n: r.learning_rate.optimizer_kind for n, r in reports.items()}
    assert keys == {"SGD": "momentum", "AdamW": "adam", "Muon": "Muon + AdamW"}
    muon = reports["Muon"].learning_rate.own
    assert muon.measure == "critical sharpness" and np.isfinite(muon.lr_max).any()
    adamw = reports["AdamW"].learning_rate.own
    assert adamw.basis == "optimizer state" and adamw.measure == "batch sharpness"
    topics = {(f.subject, f.topic) for f in three.findings()}
    for name in ("SGD", "AdamW", "Muon"):
        assert (name, "edge_of_stability") in topics, name
    muon_findings = [f for f in three.findings() if f.subject == "Muon"]
    assert any("Muon + AdamW" in f.statement or "Muon + AdamW" in f.evidence for f in muon_findings)
    assert "Muon + AdamW" in three.summary()
