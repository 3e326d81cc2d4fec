"""The tracker's edge-of-stability ratio for every optimizer, labelled with what it rests on.

Ground truth on a quadratic ½θᵀAθ: the preconditioner rebuilt from the optimizer's state by
hand (frozen-state optimizers), and for an update along the gradient the closed form of the
critical sharpness, gᵀAg/gᵀg (exact on a quadratic).
"""

from __future__ import annotations

import copy
import math

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from optimizer_cases import (
    DIM,
    DTYPE,
    TORCH_OPTIMIZERS,
    GradientDescent,
    half_mse,
    matrices,
    muon_with_adamw,
    quadratic,
    tanh_classifier,
    top,
    torch_optimizer,
)
from state import assert_unchanged, snapshot
from torch import nn

from landscape.metrics.optimizers import describe_optimizer
from landscape.training.tracker import SharpnessTracker


def step(model, optimizer, data):
    def closure():
        optimizer.zero_grad()
        loss = half_mse(model(data[0]), data[1])
        loss.backward()
        return loss

    optimizer.step(closure)
    optimizer.zero_grad()


def test_rmsprop_ratio_from_its_own_state():
    # RMSprop with momentum mu: P = sqrt(v) + eps, threshold (2 + 2 mu)/lr, W = w I
    model, data, A = quadratic()
    lr, mu, w = 0.01, 0.5, 0.1
    opt = torch.optim.RMSprop(model.parameters(), lr=lr, momentum=mu, eps=1e-3, weight_decay=w)
    tracker = SharpnessTracker(model, data, half_mse, every=1, tol=1e-10)
    for _ in range(3):
        step(model, opt, data)
        record = tracker.step(opt)
    P = opt.state[model.weight]["square_avg"].reshape(-1).sqrt() + 1e-3
    D = torch.diag(P.rsqrt())
    expected = top(D @ (A + w * torch.eye(DIM, dtype=DTYPE)) @ D)
    assert record["preconditioned_sharpness"] == pytest.approx(expected, rel=1e-9)
    assert record["threshold"] == pytest.approx((2 + 2 * mu) / lr, rel=1e-12)
    assert record["ratio"] == pytest.approx(expected * lr / (2 + 2 * mu), rel=1e-9)
    assert record["kind"] == "RMSprop" and record["preconditioner"] == "optimizer state"
    assert record["measure"] == "preconditioned sharpness"


def test_unknown_optimizer_gets_the_critical_sharpness_exactly_on_a_quadratic():
    model, data, A = quadratic()
    lr = 0.05
    opt = GradientDescent(model.parameters(), lr=lr)
    tracker = SharpnessTracker(model, data, half_mse, every=1, tol=1e-10)
    step(model, opt, data)
    record = tracker.step(opt)
    theta = model.weight.detach().reshape(-1)
    g = A @ theta
    rayleigh = float(g @ A @ g / (g @ g))
    assert record["critical_sharpness"] == pytest.approx(rayleigh, rel=1e-3)  # line search rtol
    assert record["threshold"] == pytest.approx(2 / lr, rel=1e-12)
    assert record["ratio"] == pytest.approx(rayleigh * lr / 2, rel=1e-3)
    assert record["measure"] == "critical sharpness" and record["kind"] == "GradientDescent"
    assert math.isnan(record["preconditioned_sharpness"])
    # the control: the critical sharpness is below lambda_max unless g is the top eigenvector
    assert record["critical_sharpness"] < top(A) * 0.999


def _mlp():
    model, X, y = tanh_classifier((4, 6, 2), n=32, seed=0)
    return model, (X, y)


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, dict):
            _assert_same_state(value, b[key])
        elif isinstance(value, torch.Tensor):
            assert torch.equal(value, b[key]), key
        elif isinstance(value, list):
            assert len(value) == len(b[key])
            for x, y in zip(value, b[key], strict=True):
                if isinstance(x, dict):
                    _assert_same_state(x, y)
                elif isinstance(x, torch.Tensor):
                    assert torch.equal(x, y), key
                else:
                    assert x == y or (x != x and y != y)
        else:
            assert value == b[key], key


@pytest.mark.parametrize("name", TORCH_OPTIMIZERS)
def test_every_torch_optimizer_is_tracked_without_side_effects(name):
    model, data = _mlp()
    kw = {"LBFGS": {"lr": 0.1, "max_iter": 2}, "Muon": {"lr": 0.02}, "SGD": {"lr": 0.1}}
    params = matrices(model) if name == "Muon" else None
    opt = torch_optimizer(name, model, **kw.get(name, {}))
    loss_fn = nn.CrossEntropyLoss()
    tracker = SharpnessTracker(model, data, loss_fn, every=2, tol=1e-6, params=params)

    def closure():
        opt.zero_grad()
        loss = loss_fn(model(data[0]), data[1])
        loss.backward()
        return loss

    for _ in range(4):
        opt.step(closure)
        before, state = snapshot(model), copy.deepcopy(opt.state_dict())
        rng = torch.get_rng_state()
        tracker.step(opt)
        assert_unchanged(model, before)
        _assert_same_state(opt.state_dict(), state)
        assert torch.equal(rng, torch.get_rng_state())
    h = tracker.history
    support = describe_optimizer(opt)
    if support.measure == "critical sharpness":
        assert set(h["measure"]) == {"critical sharpness"}
        assert np.isfinite(h["critical_sharpness"]).any()
    else:
        expected = "sharpness" if name in ("SGD", "ASGD") else "preconditioned sharpness"
        assert set(h["measure"]) == {expected}
    assert np.isfinite(h["ratio"]).all() and (h["ratio"] > 0).all()
    assert set(h["kind"]) == {name.lower() if name == "SGD" else name} or name in ("Adam", "AdamW")


def test_muon_with_adamw_is_tracked_together():
    model, data = _mlp()
    muon, adamw = muon_with_adamw(model, *data, steps=0)
    tracker = SharpnessTracker(model, data, nn.CrossEntropyLoss(), every=1)
    for _ in range(2):
        for opt in (muon, adamw):
            opt.zero_grad()
        F.cross_entropy(model(data[0]), data[1]).backward()
        muon.step()
        adamw.step()
        record = tracker.step([muon, adamw])
    assert record["kind"] == "Muon + AdamW" and record["measure"] == "critical sharpness"
    assert record["ratio"] > 0
    matplotlib.use("Agg")
    labels = [line.get_label() for line in tracker.plot().axes[0].get_lines()]
    assert any("critical" in label for label in labels)


def test_preconditioned_true_refuses_optimizers_without_a_preconditioner():
    model, data, _ = quadratic()
    tracker = SharpnessTracker(model, data, half_mse, preconditioned=True, tol=1e-10)
    with pytest.raises(ValueError, match="preconditioner"):
        tracker.measure(torch.optim.Rprop(model.parameters()))
    opt = torch.optim.Adagrad(model.parameters(), lr=0.1)
    step(model, opt, data)
    assert tracker.measure(opt)["measure"] == "preconditioned sharpness"
