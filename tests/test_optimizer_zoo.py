"""Optimizer stability on models nobody here wrote: Hugging Face GPT-2 and Llama (tests/zoo.py).

Truth: the model's own ``model(**batch).loss`` weighted by scored tokens, plain autograd
(``zoo.truth_hvp``, ``zoo.truth_loss``) — never landscape. AdamW with a Trainer's parameter
groups (decay for matrices, none for biases and norms); Muon for the transformer's matrices
with AdamW for the rest, as torch 2.13's Muon requires.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.sparse.linalg
import torch
from state import assert_unchanged, snapshot

import landscape as ls
from landscape.metrics.optimizers import (
    critical_sharpness,
    critical_step,
    frozen_stability,
    linearize,
)

zoo = pytest.importorskip("zoo")

pytestmark = pytest.mark.usefixtures("one_thread")


def _weighted_loss(case, model):
    total = sum(case.weight(b) * model(**b).loss for b in case.batches)
    return total / sum(case.weight(b) for b in case.batches)


def _train(case, optimizers, steps=3):
    for _ in range(steps):
        for opt in optimizers:
            opt.zero_grad()
        _weighted_loss(case, case.model).backward()
        for opt in optimizers:
            opt.step()
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)


def _trainer_groups(model):
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}]


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_adamw_preconditioned_sharpness_matches_the_truth(name):
    case = zoo.ZOO[name]()
    opt = torch.optim.AdamW(_trainer_groups(case.model), lr=1e-3)
    _train(case, [opt])
    before = snapshot(case.model)
    problem = ls.Problem(case.model, case.batches)
    lin = linearize(opt, problem)
    assert any("decoupled weight decay differs" in n for n in lin.notes)
    result = frozen_stability(ls.hessian(case.model, case.batches), lin, tol=1e-9)
    assert_unchanged(case.model, before)

    # P from the state dict, in named_parameters order (torch's AdamW step, s = t + 1)
    sd = opt.state_dict()
    order = [p for g in opt.param_groups for p in g["params"]]
    index = {id(p): i for i, p in enumerate(order)}
    parts = []
    for _, p in case.model.named_parameters():
        st = sd["state"][index[id(p)]]
        s = float(st["step"]) + 1
        parts.append(
            ((1 - 0.9**s) * ((st["exp_avg_sq"] / (1 - 0.999**s)).sqrt() + 1e-8)).reshape(-1)
        )
    d = torch.cat(parts).rsqrt()
    P = d.numel()
    truth = scipy.sparse.linalg.LinearOperator(
        (P, P),
        matvec=lambda x: (
            d * zoo.truth_hvp(case, (d * torch.as_tensor(x).reshape(-1)).reshape(P, 1))[:, 0]
        ).numpy(),
        dtype=np.float64,
    )
    exact = float(scipy.sparse.linalg.eigsh(truth, k=1, which="LA", tol=1e-10)[0][0])
    assert result.sharpness == pytest.approx(exact, rel=1e-6)
    # the decoupled decay of the decay group (the larger) lowers the limit by O(lr * wd)
    assert result.lr_max == pytest.approx(2 * 1.9 / (exact * 0.1 + 0.01 * 1.9), rel=1e-6)


def test_muon_and_adamw_critical_sharpness_on_gpt2():
    case = zoo.gpt2()
    matrices = [p for n, p in case.model.named_parameters() if p.ndim == 2 and "wte" not in n]
    others = [p for n, p in case.model.named_parameters() if p.ndim != 2 or "wte" in n]
    muon = torch.optim.Muon(matrices, lr=0.02)
    adamw = torch.optim.AdamW(others, lr=1e-3)
    _train(case, [muon, adamw])
    before = snapshot(case.model)
    states = copy.deepcopy((muon.state_dict(), adamw.state_dict()))
    result = critical_sharpness(
        ls.Problem(case.model, case.batches), optimizer=[muon, adamw], rtol=1e-9
    )
    assert_unchanged(case.model, before)
    for opt, state in zip((muon, adamw), states):
        for i, st in state["state"].items():
            for key, value in st.items():
                assert torch.equal(value, opt.state_dict()["state"][i][key])

    # the same update by hand: copies of the optimizers stepped with the truth's gradient
    model = copy.deepcopy(case.model)
    theta0 = [p.detach().clone() for p in model.parameters()]
    params = dict(zip([id(p) for p in case.model.parameters()], model.parameters()))
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        _weighted_loss(case, model).backward()
    for opt in (muon, adamw):
        groups = [
            {
                **{k: v for k, v in g.items() if k != "params"},
                "params": [params[id(p)] for p in g["params"]],
            }
            for g in opt.param_groups
        ]
        twin = type(opt)(groups)
        twin.load_state_dict(copy.deepcopy(opt.state_dict()))
        twin.step()
    delta = [p.detach() - t for p, t in zip(model.parameters(), theta0)]
    probe = zoo.ZooCase(case.id, copy.deepcopy(case.model), case.batches, case.task)

    def loss_along(t):
        with torch.no_grad():
            for p, t0, dp in zip(probe.model.parameters(), theta0, delta):
                p.copy_(t0 + t * dp)
        return zoo.truth_loss(probe)

    expected = critical_step(loss_along, rtol=1e-9)
    # GPT-2's head computes its loss in float32 (see test_zoo.py): near the crossing the loss
    # difference is a few float32 ulps, which places it to about 1e-5
    assert result.factor == pytest.approx(expected.step, rel=1e-4)
    assert result.optimizer == "Muon + AdamW"

    # control: weighting batches by samples instead of scored tokens moves the crossing
    by_samples = zoo.ZooCase(case.id, probe.model, case.batches, "sequence_classification")

    def loss_by_samples(t):
        loss_along(t)
        return zoo.truth_loss(by_samples)

    assert abs(critical_step(loss_by_samples, rtol=1e-9).step / expected.step - 1) > 1e-3
