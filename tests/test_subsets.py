"""λmax and the trace across disjoint data subsets: the interval for the whole-data value.

Coverage. Over 20 seeds, each drawing a random curvature sample of 256 out of 2,000 samples
(split into 4 subsets of 64), the whole-data λmax (Lanczos on all 2,000) must fall inside the
reported 95 % interval at least 18 times (90 %; measured 20/20). This alone is a weak check
(without the bias correction 19/20, with a z instead of a t quantile 18/20), so the width is
bounded too: median relative width below 0.6 (measured 0.3-0.6), which an interval made
wide to cover (no 1/sqrt(k) factor: twice as wide) fails.
"""

import pytest
import torch
from torch import nn

import landscape as ls
from landscape.metrics.subsets import spread_interval, subset_spread


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(0)
    X = torch.randn(2000, 6, dtype=torch.float64)
    y = (X[:, :3].sum(1) > 0).long() + (X[:, 3] > 0.5).long()
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(50):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    full = float(ls.eigenvalues(ls.hessian(model, (X, y)), k=1, tol=1e-8).values[0])
    return model, X, y, full


def test_whole_data_lambda_max_is_covered_90_percent_of_the_time(problem):
    model, X, y, full = problem
    hits, widths = 0, []
    for seed in range(20):
        rows = torch.randperm(2000, generator=torch.Generator().manual_seed(seed))[:256]
        result = subset_spread(
            model, (X[rows], y[rows]), num_subsets=4, population=2000, seed=seed, tol=1e-6
        )
        lo, hi = result.lambda_max.interval
        hits += lo <= full <= hi
        widths.append((hi - lo) / full)
    assert hits >= 18, hits
    assert sorted(widths)[10] < 0.6


def test_the_whole_population_leaves_no_sampling_error(problem):
    model, X, y, full = problem
    result = subset_spread(model, (X, y), num_subsets=4, population=2000, tol=1e-8)
    assert result.lambda_max.half_width == 0.0
    assert result.lambda_max.center == pytest.approx(full, rel=1e-6)
    assert result.samples == 2000 and len(result.trace.subsets) == 4
    assert "λmax" in result.summary()


def test_spread_interval_arithmetic_and_verdict():
    e = spread_interval(10.0, [9.0, 11.0, 10.5, 9.5], 400)
    sd = torch.tensor([9.0, 11.0, 10.5, 9.5], dtype=torch.float64).std()
    assert e.half_width == pytest.approx(3.182446 * float(sd) / 2, rel=1e-5)
    assert not e.resolved and e.suggested_samples > 400
    # the suggested size resolves it: the half width scales as one over the root
    bigger = e.half_width * (400 / e.suggested_samples) ** 0.5
    assert bigger <= 0.1 * 10.0 * (1 + 1e-9)
    # convex: the subsets' upward bias is removed from the center
    c = spread_interval(10.0, [11.0, 11.0, 11.2, 10.8], 400, convex=True)
    assert c.center == pytest.approx(10.0 - 1.0 / 3)
    assert spread_interval(10.0, [10.0, 10.0], 100).resolved
    with pytest.raises(ValueError, match="two subsets"):
        spread_interval(1.0, [1.0], 10)
    with pytest.raises(ValueError, match="num_subsets"):
        subset_spread(nn.Linear(2, 1), (torch.randn(4, 2), torch.randn(4, 1)), num_subsets=1)
