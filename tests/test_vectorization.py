"""Every vmap path falls back to an exact loop: same numbers, one warning, no functorch error.

Two kinds of user code that ``torch.func.vmap`` cannot trace, each with a twin that computes
the same function in a vmap-friendly way (the reference):

- ``Branching``: data-dependent control flow on the inputs (like Hugging Face's mask
  creation), which breaks vmap over *samples*;
- ``ItemScale``: ``.item()`` on a value computed from the weights, which breaks vmap over
  *parameters* (loss-surface grid points).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import landscape as ls
from landscape import VectorizationWarning


class Branching(nn.Module):
    def __init__(self, twin: bool = False):
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.out = nn.Linear(4, 3)
        self.twin = twin

    def forward(self, x):
        if not self.twin and bool((x.abs() > 1e6).any()):  # never true; vmap cannot tell
            x = torch.zeros_like(x)
        return self.out(torch.tanh(self.lin(x)))


class ItemScale(Branching):
    def forward(self, x):
        largest = self.out.weight.detach().abs().max()
        scale = largest.clamp_min(1.0) if self.twin else max(largest.item(), 1.0)
        return self.out(torch.tanh(self.lin(x))) / scale


def _pair(cls, seed=0):
    torch.manual_seed(seed)
    model = cls().double()
    twin = cls(twin=True).double()
    twin.load_state_dict(model.state_dict())
    return model, twin


def _data():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(20, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (20,), generator=g)
    return [(X[:8], y[:8]), (X[8:], y[8:])]


def _warnings(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, [w for w in caught if issubclass(w.category, VectorizationWarning)]


def test_per_sample_paths_loop_with_one_warning_per_model():
    model, twin = _pair(Branching)
    pe, caught = _warnings(lambda: ls.per_example_gradients(model, _data()))
    assert not pe.vectorized and len(caught) == 1
    assert "per-sample gradients" in str(caught[0].message)
    reference = ls.per_example_gradients(twin, _data())
    assert reference.vectorized
    torch.testing.assert_close(pe.gradients, reference.gradients, rtol=1e-12, atol=1e-14)
    # Remembered for the model: later problems loop directly, without another warning.
    v = torch.randn(pe.gradients.shape[1], dtype=torch.float64)
    Fv, caught = _warnings(lambda: ls.fisher(model, _data()) @ v)
    assert caught == []
    torch.testing.assert_close(Fv, ls.fisher(twin, _data()) @ v, rtol=1e-12, atol=1e-14)
    coh, caught = _warnings(lambda: ls.coherence(model, _data(), max_samples=None))
    assert caught == []
    ref = ls.coherence(twin, _data(), max_samples=None)
    assert coh.alpha == pytest.approx(ref.alpha, rel=1e-10)


def test_learning_rates_loop_where_vmap_fails():
    # Adam's steady-state moments (per-sample gradients) and the exact SGD threshold
    # (per-sample Gauss-Newton factors) both go per sample.
    model, twin = _pair(Branching)
    options = {"batch_sizes": (4, "full"), "num_batches": 2, "seed": 0}
    for optimizer in ("sgd", "adam"):
        ours, _ = _warnings(
            lambda o=optimizer: ls.max_learning_rate(model, _data(), optimizer=o, **options)
        )
        ref = ls.max_learning_rate(twin, _data(), optimizer=optimizer, **options)
        np.testing.assert_allclose(ours.lr_max, ref.lr_max, rtol=1e-8)
        if optimizer == "sgd":
            np.testing.assert_allclose(ours.lr_mean_square, ref.lr_mean_square, rtol=1e-8)


def test_one_hot_user_loss_goes_through_max_learning_rate_and_analyze():
    # F.one_hot checks its input's values: vmap over samples cannot trace it.
    def one_hot_loss(logits, targets):
        return -(F.log_softmax(logits, -1) * F.one_hot(targets, 3).to(logits.dtype)).sum(-1).mean()

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    r, _ = _warnings(
        lambda: ls.max_learning_rate(model, _data(), one_hot_loss, batch_sizes=(4, "full"))
    )
    ref = ls.max_learning_rate(model, _data(), nn.CrossEntropyLoss(), batch_sizes=(4, "full"))
    np.testing.assert_allclose(r.lr_mean_square, ref.lr_mean_square, rtol=1e-8)
    report, _ = _warnings(lambda: ls.analyze(model, _data(), one_hot_loss, progress=False))
    assert np.isfinite(report.learning_rate.results["sgd"].lr_mean_square).all()


def test_parameter_paths_loop_with_the_same_numbers():
    model, twin = _pair(ItemScale)
    v = torch.randn(sum(p.numel() for p in model.parameters()), 3, dtype=torch.float64)
    # (vmap over Gauss-Newton columns batches tangents only: .item() of a weight is fine.)
    Gv = ls.gauss_newton(model, _data()) @ v
    torch.testing.assert_close(Gv, ls.gauss_newton(twin, _data()) @ v, rtol=1e-12, atol=1e-14)
    # Forward-over-reverse Hessian columns fall back to double-backward.
    Hv = ls.hessian(model, _data(), backend="auto") @ torch.randn(
        v.shape[0], 20, dtype=torch.float64
    )
    assert torch.isfinite(Hv).all()
    dirs = ls.random_directions(model, n=2, seed=0)
    kwargs = {"coords": np.linspace(-2, 2, 5), "vectorize": True, "progress": False}
    s, caught = _warnings(lambda: ls.surface(model, _data(), directions=dirs, **kwargs))
    assert len(caught) == 1 and "grid points" in str(caught[0].message)
    ref = ls.surface(twin, _data(), directions=dirs, **kwargs)
    np.testing.assert_allclose(s.loss, ref.loss, rtol=1e-12)
    np.testing.assert_allclose(s.accuracy, ref.accuracy)


def test_a_genuine_error_is_raised_with_its_context():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            if bool((x > 0).all()):  # vmap fails here; the loop then meets the real bug
                pass
            return self.lin(x)[:, :2] @ torch.ones(3, 3)  # shape error

    with pytest.raises(RuntimeError, match="mat1 and mat2") as error:
        ls.per_example_gradients(Broken(), (torch.randn(4, 3), torch.tensor([0, 1, 2, 0])))
    assert any("one slice at a time" in note for note in getattr(error.value, "__notes__", []))
