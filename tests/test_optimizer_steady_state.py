"""Adam without its state, on the case of issue 22.

A digits MLP trained with Adam (lr 2e-3, batches of 50) to a loss of about 0.018. At the full
batch, Adam's steady-state preconditioner rests on the vanishing mean gradient: its frozen
threshold calls the learning rate the model was trained with unstable (a confident wrong
number), so the answer must be no number and a note. At batch size 50 the steady state must
agree, within 25 %, with the state of an Adam run at lr 1e-12 equilibrated at the same point.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import landscape as ls
from landscape.demo import digits_loaders, mlp
from landscape.metrics._per_example import gradient_moments
from landscape.metrics.optimizers import (
    frozen_stability,
    linearize,
    preconditioner_shares,
    steady_state_linearization,
    steady_state_stability,
)

DTYPE = torch.float64
ADAM = ls.OptimizerSettings("adam", lr=2e-3)


@pytest.fixture(scope="module")
def trained():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train, _ = digits_loaders(batch_size=50)
        X = train.dataset.tensors[0].to(DTYPE)
        y = train.dataset.tensors[1]
        n = len(y)
        torch.manual_seed(0)
        model = mlp(64, (32,), 10).to(DTYPE)
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        gen = torch.Generator().manual_seed(0)
        loss = nn.CrossEntropyLoss()
        for _ in range(100):  # epochs
            order = torch.randperm(n, generator=gen)
            for i in range(0, n - 49, 50):
                batch = order[i : i + 50]
                opt.zero_grad()
                loss(model(X[batch]), y[batch]).backward()
                opt.step()
            with torch.no_grad():
                value = float(loss(model(X), y))
            if value < 0.018:
                break
        opt.zero_grad()
        problem = ls.Problem(model, (X, y), nn.CrossEntropyLoss())
        moments = gradient_moments(problem)
        yield model, opt, problem, moments, value
    finally:
        torch.set_num_threads(threads)


def test_full_batch_near_a_minimum_gives_no_number(trained):
    _, _, problem, (G, var), value = trained
    assert value < 0.018
    n = problem.num_samples
    H = ls.hessian(problem)
    result = steady_state_stability(H, G, var, n, n, optimizer=ADAM)
    assert result.lr_max is None and not result.informative
    assert result.label == f"steady state at batch size {n} at this point"
    assert "no learning-rate limit at the full batch" in result.notes[-1]
    assert result.shares.noise == 0.0 and result.shares.gradient_snr < 1.0
    # the number it withholds would call the training learning rate unstable
    lin = steady_state_linearization(G, var, n, n, optimizer=ADAM)
    withheld = frozen_stability(H, lin).lr_max
    assert withheld < 2e-3


def test_small_batch_matches_an_equilibrated_adam_run(trained):
    model, opt, problem, (G, var), _ = trained
    n = problem.num_samples
    H = ls.hessian(problem)
    steady = steady_state_stability(H, G, var, 50, n, optimizer=ADAM)
    assert steady.informative and steady.shares.noise > 0.9
    assert "steady state at batch size 50" in steady.label
    equilibrated = frozen_stability(H, _equilibrated_state(model, problem, 50))
    assert steady.lr_max == pytest.approx(equilibrated.lr_max, rel=0.25)
    # the real run's state remembers larger gradients: its threshold is higher
    real = frozen_stability(H, linearize(opt, problem))
    assert real.label == "optimizer state"
    assert real.lr_max > steady.lr_max


def test_max_learning_rate_without_a_state_on_the_issue_case(trained):
    # issue 22: with no optimizer, lr_max at the full batch near a minimum was 3.2e-4 against
    # 1.73 from the real state; now no number and a note, and at B = 50 within 25 % of an
    # Adam run equilibrated at the same point, each labelled with what it rests on
    model, opt, problem, _, _ = trained
    n = problem.num_samples
    r = ls.max_learning_rate(
        problem, batch_sizes=(50, "full"), optimizer="adam", num_batches=4, tol=1e-4
    )
    assert r.batch_sizes.tolist() == [50, n]
    assert math.isnan(r.lr_max[1])
    row = next(line.split() for line in r.table().splitlines() if line.split()[:1] == [str(n)])
    assert row[2] == "-"  # the table says "no number" too
    assert any("no learning-rate limit at the full batch" in note for note in r.notes)
    assert r.preconditioner == "steady state" and "steady state" in r.rests_on
    assert any("remembers larger gradients" in note for note in r.notes)
    twin, equilibrated = _equilibrated_optimizer(model, problem, 50)
    state = ls.max_learning_rate(
        problem.with_model(twin), batch_sizes=(50,), optimizer=equilibrated, num_batches=4,
        tol=1e-4,
    )  # fmt: skip
    assert state.preconditioner == "optimizer state"
    assert r.lr_max[0] == pytest.approx(state.lr_max[0], rel=0.25)
    # the real run's state remembers larger gradients: a higher threshold, and a number at
    # the full batch too
    real = ls.max_learning_rate(problem, batch_sizes=(50, "full"), optimizer=opt, num_batches=4)
    assert real.lr_max[0] > r.lr_max[0] and np.isfinite(real.lr_max).all()
    assert real.lr_max[1] > 2e-3  # the learning rate the model was trained with is stable


def _equilibrated_optimizer(model, problem, batch_size, steps=1000):
    """A copy of the model and Adam at lr 1e-12 after ``steps`` random batches at its point."""
    batch = next(iter(problem.batches())).data
    X, y = batch
    twin = copy.deepcopy(model)
    opt = torch.optim.Adam(twin.parameters(), lr=1e-12)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        index = torch.randperm(len(y), generator=gen)[:batch_size]
        opt.zero_grad()
        nn.functional.cross_entropy(twin(X[index]), y[index]).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return twin, opt


def _equilibrated_state(model, problem, batch_size, steps=1000):
    """The state of Adam at lr 1e-12 after ``steps`` random batches at the same point."""
    twin, opt = _equilibrated_optimizer(model, problem, batch_size, steps)
    return linearize(opt, twin)


def test_shares_sum_to_one_and_follow_the_batch_size(trained):
    _, _, problem, (G, var), _ = trained
    n = problem.num_samples
    shares = [preconditioner_shares(G, var, B, n) for B in (10, 100, 1000, n)]
    for s in shares:
        assert s.noise + s.mean + s.eps == pytest.approx(1.0, abs=1e-9)
    noise = [s.noise for s in shares]
    assert noise == sorted(noise, reverse=True) and noise[-1] == 0.0


def test_the_rule_on_synthetic_moments():
    from landscape.operators.dense import DenseOperator

    H = DenseOperator(torch.diag(torch.tensor([4.0, 1.0, 1.0], dtype=DTYPE)))
    var = torch.tensor([1.0, 1.0, 1.0], dtype=DTYPE)
    # far from a minimum at the full batch: the mean gradient is well above its sampling
    # error, so a number is given, with a note that Adam's steps will change it
    far = steady_state_stability(H, torch.tensor([1.0, 1.0, 1.0], dtype=DTYPE), var, 100, 100)
    assert far.informative and far.shares.gradient_snr > 1
    assert "rests mostly on the mean gradient" in far.notes[-1]
    # a coordinate no example moves (zero mean and variance: P = eps) sets the threshold:
    # no number at any batch size
    dead = steady_state_stability(
        H,
        torch.tensor([0.0, 0.1, 0.1], dtype=DTYPE),
        torch.tensor([0.0, 1.0, 1.0], dtype=DTYPE),
        8,
        100,
    )
    assert dead.lr_max is None and dead.shares.eps > 0.99
    assert "rests on epsilon" in dead.notes[-1]
    # a noise-dominated preconditioner at a small batch: a number, 38 / lambda_max(P^-1 H)
    noisy = steady_state_stability(H, torch.zeros(3, dtype=DTYPE), var, 8, 100)
    p = (100 - 8) / (8 * 99)
    assert noisy.lr_max == pytest.approx(38.0 / (4.0 / (p**0.5 + 1e-8)), rel=1e-6)


def test_the_steady_state_takes_adams_settings_and_refuses_another_kind():
    H = ls.DenseOperator(torch.diag(torch.tensor([2.0, 1.0], dtype=DTYPE)))
    G, var = torch.zeros(2, dtype=DTYPE), torch.ones(2, dtype=DTYPE)
    with pytest.raises(ValueError, match=r"the steady state is Adam's: pass optimizer="):
        steady_state_stability(H, G, var, 10, 100, optimizer=ls.OptimizerSettings("sgd"))
    beta1 = 0.5  # the coefficient (2 + 2 beta1) / (1 - beta1) follows the settings' betas
    adam = ls.OptimizerSettings("adam", betas=(beta1, 0.999))
    a, b = (steady_state_stability(H, G, var, 10, 100, optimizer=o) for o in (None, adam))
    assert b.lr_max / a.lr_max == pytest.approx((3.0 / 0.5) / (3.8 / 0.1), rel=1e-12)
