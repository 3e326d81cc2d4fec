"""Products and algorithms at scale: what the measurements cost, and the Lanczos step's own work.

At GPT-2 small (124M parameters) a product takes seconds and a parameter vector 0.5 GB, so
``backend="auto"``'s timing of candidates, the finite-difference step search and every
vector the Lanczos iteration copies must be a small part of the work. These fast tests pin
the mechanisms on small models; the measured GPT-2-small numbers are in tests/test_scale_gpt2.py
(slow) and docs/memory.md.
"""

import time

import pytest
import torch
from torch import nn

import landscape as ls
from landscape.operators import _backends, finite_difference
from landscape.operators._backends import BackendChooser


def test_long_products_are_timed_on_a_quarter_of_the_batch(monkeypatch):
    monkeypatch.setattr(_backends, "_LONG_SECONDS", 0.0)  # every product counts as long
    calls = []

    def product(name, columns, rows):
        calls.append((name, columns, rows))
        time.sleep(0.015 * rows * (1 if name == "b" else 2))  # long enough to time once

    chooser = BackendChooser(["a", "b"])
    assert chooser.measure(product, vectors=5, samples=16, device=torch.device("cpu")) == "b"
    # a warm-up of the default, then each other candidate once: 2 columns, 4 of 16 samples
    assert calls == [("a", 2, 4), ("b", 2, 4)]


def test_cheap_products_are_timed_on_the_whole_batch(monkeypatch):
    monkeypatch.setattr(_backends, "_LONG_SECONDS", 1e9)
    calls = []
    chooser = BackendChooser(["a", "b"])
    chooser.measure(lambda *args: calls.append(args), 5, 16, torch.device("cpu"))
    assert calls[0] == ("a", 2, 4)  # the warm-up
    assert set(calls[1:]) == {("a", 5, 16), ("b", 5, 16)}


def test_auto_on_a_sub_batch_gives_the_chosen_backends_exact_product(monkeypatch):
    monkeypatch.setattr(_backends, "_LONG_SECONDS", 0.0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    data = (torch.randn(12, 5, dtype=torch.float64), torch.randint(0, 3, (12,)))
    v = torch.randn(sum(p.numel() for p in model.parameters()), 1, dtype=torch.float64)
    H = ls.hessian(model, data)
    out = H @ v
    choice = H.backend_choices["single"]["choice"]
    assert torch.equal(out, ls.hessian(model, data, backend=choice) @ v)


def test_finite_difference_search_costs_twelve_gradients_and_its_product_is_used(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    data = (torch.randn(10, 4, dtype=torch.float64), torch.randint(0, 2, (10,)))
    count = {"n": 0}
    gradient = finite_difference._gradient

    def counting(*args, **kwargs):
        count["n"] += 1
        return gradient(*args, **kwargs)

    monkeypatch.setattr(finite_difference, "_gradient", counting)
    exact = ls.hessian(model, data, backend="double_backward")
    H = ls.hessian(model, data, backend="finite_difference")
    v = torch.randn(exact.shape[0], 1, dtype=torch.float64)
    first = H @ v
    assert count["n"] == 12  # the search; its extrapolation at the chosen step is the product
    count["n"] = 0
    again = H @ v
    assert count["n"] == 4  # a product: two central differences
    truth = exact @ v
    for out in (first, again):
        assert float((out - truth).norm() / truth.norm()) < 1e-9
    assert torch.allclose(first, again, rtol=0, atol=0)  # the same step, the same formula


def test_search_step_prefers_the_plateau_over_a_kink():
    # g(s) = 3 |x + s| for the kinked part: a step larger than |x| = 0.01 crosses the kink
    # and makes the central difference wrong; the smooth part is exp. The ladder for
    # u = 2^-24 runs from 0.072 to 0.0022: its larger rungs cross the kink.
    x = torch.tensor([0.5, 1e-2], dtype=torch.float64)

    def gradient_at(s):
        return [torch.stack([torch.exp(x[0] + s), 3 * torch.abs(x[1] + s)])]

    h, product = finite_difference.search_step(gradient_at, 2.0**-24)
    assert h < 1e-2  # below the kink's distance
    assert float(product[0][0]) == pytest.approx(float(torch.exp(x[0])), rel=1e-6)
    assert float(product[0][1]) == pytest.approx(3.0, rel=1e-6)


@pytest.mark.slow  # about 20 s on an idle 2-core machine, minutes when it is shared
def test_finite_difference_eigenvalues_are_accurate_along_concentrated_directions():
    # The step is chosen on a random vector; Lanczos vectors concentrate on the top
    # eigenvectors, along which that step's truncation was 2e-2 (GPT-2): top eigenvalues
    # came out 4e-3 off (103.66 against 104.08). Each vector's step is now shrunk where
    # it needs to be.
    import copy
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import zoo

    case = zoo.gpt2()
    exact = ls.eigenvalues(ls.hessian(case.model, case.batches), k=1, tol=1e-10).values
    model = copy.deepcopy(case.model).float()
    F = ls.hessian(model, case.batches, backend="finite_difference")
    got = ls.eigenvalues(F, k=1, tol=1e-4).values
    assert torch.allclose(got, exact, rtol=2e-5), (got, exact)
