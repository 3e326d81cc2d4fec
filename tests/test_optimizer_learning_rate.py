"""max_learning_rate with every optimizer: which measure answers, and that it is wired right.

Ground truth: the dense Hessian of a small network (double backward) with the preconditioner
rebuilt from the optimizer's state by hand, the per-mode recursion's closed forms, and for the
critical sharpness of gradient descent the Rayleigh quotient of the gradient.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from optimizer_cases import (
    DTYPE,
    GradientDescent,
    gradient_and_hessian,
    muon_with_adamw,
    sparse_embedding_regression,
    tanh_classifier,
    torch_optimizer,
    torch_optimizer_classes,
)
from torch import nn

import landscape as ls
from landscape.metrics.optimizers import describe_optimizer
from landscape.metrics.thresholds import optimizer_settings

pytestmark = pytest.mark.usefixtures("one_thread")


def _stepped(name, model, X, y, steps=3, **kw):
    opt = torch_optimizer(name, model, **kw)
    for _ in range(steps):

        def closure():
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(X), y)
            loss.backward()
            return loss

        opt.step(closure)
    opt.zero_grad(set_to_none=True)
    return opt


def _dense_hessian(model, X, y):
    return gradient_and_hessian(model, nn.functional.cross_entropy, X, y)[1]


def _top(P, H):
    d = P.rsqrt()
    return float(torch.linalg.eigvalsh(d[:, None] * H * d[None, :]).max())


SETTINGS = {
    "Adafactor": {},
    "Adadelta": {},
    "Adagrad": {"lr_decay": 0.01},
    "Adam": {"amsgrad": True},
    "Adamax": {},
    "AdamW": {"weight_decay": 0.1},
    "ASGD": {},
    "LBFGS": {"lr": 0.1, "max_iter": 3},
    "Muon": {"lr": 0.02},
    "NAdam": {},
    "RAdam": {},
    "RMSprop": {"momentum": 0.5, "centered": True},
    "Rprop": {},
    "SGD": {"lr": 0.1, "momentum": 0.9, "nesterov": True},
}


def test_settings_cover_every_torch_optimizer():
    classes = set(torch_optimizer_classes())
    assert classes - {"Optimizer", "SparseAdam"} == set(SETTINGS)  # SparseAdam: below


@pytest.mark.parametrize("name", list(SETTINGS))
def test_every_torch_optimizer_gets_a_labelled_answer(name):
    model, X, y = tanh_classifier()
    opt = _stepped(name, model, X, y, **SETTINGS[name])
    r = ls.max_learning_rate(
        model, (X, y), batch_sizes=(8, "full"), optimizer=opt, num_batches=2, tol=1e-8
    )
    support = describe_optimizer(opt)
    expected = "batch sharpness" if support.measure == "frozen preconditioner" else support.measure
    assert r.measure == expected
    if r.measure == "critical sharpness":
        assert r.coefficient == 2.0 and r.exactness == "generic"
        assert any("Kalra" in n for n in r.notes)
    else:
        assert r.preconditioner == ("identity" if name in ("SGD", "ASGD") else "optimizer state")
    assert r.optimizer.key == (optimizer_settings(opt).key)
    assert r.current_lr == pytest.approx(float(opt.param_groups[0]["lr"]))
    assert np.isfinite(r.lr_max).all() and (r.lr_max > 0).all()
    assert r.rests_on in r.table()


def test_a_linear_optimizer_uses_its_state_and_its_own_coefficient():
    # centered RMSprop with momentum mu: P = sqrt(v - mean(g)^2) + eps, heavy ball on P^-1 H,
    # c = 2 + 2 mu (no bias correction); coupled weight decay adds w I to H
    model, X, y = tanh_classifier()
    opt = _stepped("RMSprop", model, X, y, momentum=0.5, centered=True, weight_decay=0.05)
    r = ls.max_learning_rate(model, (X, y), batch_sizes=("full",), optimizer=opt, tol=1e-10)
    P = torch.cat(
        [
            ((opt.state[p]["square_avg"] - opt.state[p]["grad_avg"] ** 2).sqrt() + 1e-8).reshape(-1)
            for p in model.parameters()
        ]
    )
    H = _dense_hessian(model, X, y) + 0.05 * torch.eye(P.numel(), dtype=DTYPE)
    a = _top(P, H)
    assert r.sharpness[0] == pytest.approx(a, rel=1e-7)
    assert r.coefficient == pytest.approx(3.0)
    assert r.lr_max[0] == pytest.approx(3.0 / a, rel=1e-7)


def test_decoupled_decay_lowers_adamw_threshold_exactly():
    # AdamW: theta' = (1 - lr w) theta - lr P^-1 m', m' = b m + (1 - b) g: the recursion
    # (b, 1 - b, 0, 1) with decay lr w, whose Jury limit is lr < 2 (1 + b) / (a (1 - b) + w (1 + b))
    model, X, y = tanh_classifier()
    opt = _stepped("AdamW", model, X, y, weight_decay=0.5, eps=1e-3)
    r = ls.max_learning_rate(model, (X, y), batch_sizes=("full",), optimizer=opt, tol=1e-10)
    a, b, w = float(r.sharpness[0]), 0.9, 0.5
    assert r.lr_max[0] == pytest.approx(2 * (1 + b) / (a * (1 - b) + w * (1 + b)), rel=1e-10)
    assert r.lr_max[0] < 38.0 / a  # the decay lowers it


def test_unknown_optimizer_gets_the_critical_sharpness_with_its_closed_form():
    # gradient descent along g: lambda_c = g^T H g / g^T g on the batch, lr_max = 2 / lambda_c
    model, X, y = tanh_classifier()
    opt = GradientDescent(model.parameters(), lr=0.05)
    r = ls.max_learning_rate(model, (X, y), batch_sizes=("full",), optimizer=opt)
    H = _dense_hessian(model, X, y)
    loss = nn.functional.cross_entropy(model(X), y)
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, list(model.parameters()))])
    rayleigh = float(g @ H @ g / (g @ g))
    # the loss is not quadratic: the line search finds the crossing of the true loss, which
    # the quadratic model predicts to a few percent at this small step
    assert r.sharpness[0] == pytest.approx(rayleigh, rel=0.05)
    assert r.lr_max[0] == pytest.approx(2 / r.sharpness[0])
    assert r.measure == "critical sharpness" and r.optimizer.key == "GradientDescent"
    assert any("unknown to landscape" in n or "not known to be linear" in n for n in r.notes)


def test_muon_with_adamw_and_muon_alone():
    model, X, y = tanh_classifier()
    muon, adamw = muon_with_adamw(model, X, y, steps=2)
    both = ls.max_learning_rate(
        model, (X, y), batch_sizes=(8, "full"), optimizer=[muon, adamw], num_batches=2
    )
    assert both.optimizer.key == "Muon + AdamW" and both.measure == "critical sharpness"
    # a Problem over every parameter: narrowed to the matrices Muon trains, with a note
    problem = ls.Problem(model, (X, y))
    alone = ls.max_learning_rate(problem, batch_sizes=("full",), optimizer=muon)
    assert any("trained by no given optimizer" in n for n in alone.notes)
    assert alone.measure == "critical sharpness" and np.isfinite(alone.lr_max).all()


def test_fresh_optimizers_without_state():
    model, X, y = tanh_classifier()
    adam = torch.optim.Adam(model.parameters(), lr=1e-3)  # has not stepped: steady state
    r = ls.max_learning_rate(model, (X, y), batch_sizes=(8,), optimizer=adam, num_batches=2)
    assert r.preconditioner == "steady state" and "steady state" in r.rests_on
    assert any("has not stepped yet" in n for n in r.notes)
    rms = torch.optim.RMSprop(model.parameters(), lr=1e-3)  # no steady state of its own
    r = ls.max_learning_rate(model, (X, y), batch_sizes=(8,), optimizer=rms, num_batches=2)
    assert r.measure == "critical sharpness"
    assert any("RMSprop has not stepped yet" in n for n in r.notes)


def test_verification_runs_every_kind_of_optimizer():
    model, X, y = tanh_classifier()
    check = ls.VerifySettings(steps=5, factors=(0.5, 2.0))
    for name in ("LBFGS", "Muon", "Adafactor"):
        opt = _stepped(name, model, X, y, **SETTINGS[name])
        r = ls.max_learning_rate(model, (X, y), batch_sizes=("full",), optimizer=opt, verify=check)
        assert len(r.verification) == 1 and r.verification[0].lrs.size == 2, name
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = {k: v.clone() for k, v in opt.state_dict()["state"][0].items() if torch.is_tensor(v)}
    ls.max_learning_rate(model, (X, y), batch_sizes=("full",), optimizer=opt, verify=check)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    for k, v in opt.state_dict()["state"][0].items():
        if torch.is_tensor(v):
            assert torch.equal(v, state[k])


def test_sparse_adam_on_a_sparse_embedding_with_verification():
    model, X, Y = sparse_embedding_regression(vocab=6, dim=3, n=30)
    sparse = torch.optim.SparseAdam(list(model[0].parameters()), lr=1e-2)
    for _ in range(3):
        sparse.zero_grad()
        nn.functional.mse_loss(model(X), Y).backward()
        sparse.step()
    r = ls.max_learning_rate(
        model, (X, Y), nn.MSELoss(), batch_sizes=("full",), optimizer=sparse,
        verify=ls.VerifySettings(steps=3, factors=(1.0,)),
    )  # fmt: skip
    assert r.preconditioner == "optimizer state" and np.isfinite(r.lr_max).all()
    assert model[0].sparse is True


def test_old_files_still_load_and_say_what_they_rest_on():
    model, X, y = tanh_classifier()
    r = ls.max_learning_rate(model, (X, y), batch_sizes=("full",), optimizer="adam")
    data = r.to_dict()
    for key in ("measure", "preconditioner", "exactness"):
        data.pop(key)
    old = ls.LearningRateResult.from_dict(data)
    assert old.preconditioner is None and old.measure == "batch sharpness"
    assert old.rests_on == r.rests_on
