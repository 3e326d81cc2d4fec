"""Reproduction 3: the largest stable learning rate against the batch size.

``ls.max_learning_rate`` (public API only) is checked against empirical divergence found by an
independent bisection written here: plain ``torch.optim`` training loops on copies of the model,
bisection on the learning rate per batch size.

(a) GD at an interpolating minimum: ``2/lambda_max`` against the bisection, for a linear model
    (an exact quadratic) and a tanh MLP (trained to interpolation by L-BFGS).
(b) SGD over batch sizes: the exact mean-square threshold (Mulayoff & Michaeli 2023), the
    batch-sharpness heuristic (Granziol et al. 2022) and ``verify=True`` bursts against the
    bisection.
(c) Adam at a least-squares minimum (pure gradient noise): the predicted ``lr_max(B)`` and its
    fitted exponent against an empirical loss-doubling threshold.

Divergence criteria of the bisection (documented in ``validation/learning_rate.md``):

* ``loss``: the full-data loss after ``STEPS`` = 3000 steps is above the starting loss (or not
  finite); REFERENCES.md §3.2 found this reliable, where a 100x growth criterion overestimates.
* ``escape`` (MLP only): the distance to the minimum after ``STEPS`` steps exceeds the initial
  perturbation. Above ``2/lambda`` an MLP is catapulted to a flatter minimum where the loss is
  again tiny, so the loss criterion cannot see the instability there.
* ``loss-doubling`` (Adam): the mean full-data loss over the last 500 of 2000 steps exceeds twice
  the starting (minimum) loss.

Runs start from the minimum plus a fixed Gaussian perturbation (1e-3 per entry); all learning
rates of one bisection share the perturbation and the sequence of batches (common random
numbers), drawn uniformly without replacement at every step (the sampling the exact threshold
assumes).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python validation/learning_rate.py [--quick] [--write]``.
The full run (a few minutes) writes ``validation/results/learning_rate.json`` and
``figures/validation/learning_rate*.png``; ``--quick`` (< 20 s) writes nothing unless
``--write`` is given (then with a ``_quick`` suffix).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import landscape as ls

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "validation" / "results"
FIGURES = ROOT / "figures" / "validation"

STEPS = 3000  # steps per SGD/GD run (REFERENCES §3.2)
ADAM_STEPS = 2000  # steps per Adam run; the loss is averaged over the last ADAM_WINDOW
ADAM_WINDOW = 500
PERTURBATION = 1e-3  # standard deviation of the starting perturbation, per parameter entry
LOSS = nn.MSELoss()


# -- problems ------------------------------------------------------------------------------------


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data / 16.0, digits.target.astype(np.float64)


def standardized_pixels(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the first ``n`` digits as z-scored pixels (61 non-constant ones) and targets.

    Parameters
    ----------
    n : int
        Number of samples.

    Returns
    -------
    (Tensor, Tensor)
        Features ``(n, 61)`` and standardized labels ``(n, 1)``, float64.
    """
    x, t = _digits()
    keep = x.std(0) > 0
    x = (x[:, keep] - x[:, keep].mean(0)) / x[:, keep].std(0)
    t = (t - t.mean()) / t.std()
    return torch.tensor(x[:n]), torch.tensor(t[:n, None])


def interpolating_linear(n: int = 48) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Return a linear model at an exact interpolating minimum of the mean squared error.

    ``n`` is at most the 62 columns of ``[pixels, 1]``, so least squares interpolates; the
    minimum-norm solution is written into an ``nn.Linear``.

    Parameters
    ----------
    n : int, optional
        Number of samples.

    Returns
    -------
    (nn.Module, Tensor, Tensor)
        Model (float64), features and targets.
    """
    X, y = standardized_pixels(n)
    A = torch.cat([X, torch.ones(n, 1, dtype=X.dtype)], 1)
    sol = torch.linalg.lstsq(A, y, driver="gelsd").solution
    model = nn.Linear(X.shape[1], 1).double()
    with torch.no_grad():
        model.weight.copy_(sol[:-1].T)
        model.bias.copy_(sol[-1])
    return model, X, y


def interpolating_mlp(
    n: int = 48, hidden: int = 16
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Return a 61-``hidden``-1 tanh MLP trained to interpolation (L-BFGS, float64).

    Parameters
    ----------
    n : int, optional
        Number of samples.
    hidden : int, optional
        Hidden width.

    Returns
    -------
    (nn.Module, Tensor, Tensor)
        Model, features and targets.
    """
    X, y = standardized_pixels(n)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(X.shape[1], hidden), nn.Tanh(), nn.Linear(hidden, 1)).double()
    opt = torch.optim.LBFGS(
        model.parameters(),
        lr=1,
        max_iter=2000,
        tolerance_grad=1e-14,
        tolerance_change=1e-20,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = LOSS(model(X), y)
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    return model, X, y


def noisy_least_squares(
    width: int = 512, dim: int = 128
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Return a linear model at the least-squares minimum of a non-interpolating regression.

    Features: ``width`` random tanh features of all 1797 digits, PCA-whitened to ``dim``
    components (dense, isotropic: the batch Hessians' top eigenvalue falls like 1/B for
    B << dim). The residuals do not vanish, so at the minimum G = 0 and the gradient is pure
    noise: Adam's preconditioner is noise-dominated at every batch size.

    Parameters
    ----------
    width : int, optional
        Random features.
    dim : int, optional
        PCA components kept (whitened).

    Returns
    -------
    (nn.Module, Tensor, Tensor)
        Model (float64), features and standardized targets.
    """
    from sklearn.decomposition import PCA

    x, t = _digits()
    rng = np.random.default_rng(0)
    features = np.tanh(x @ rng.standard_normal((x.shape[1], width)) / 2)
    z = PCA(dim, whiten=True, random_state=0).fit_transform(features)
    X = torch.tensor(z)
    y = torch.tensor(((t - t.mean()) / t.std())[:, None])
    A = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)
    sol = torch.linalg.lstsq(A, y, driver="gelsd").solution
    model = nn.Linear(dim, 1).double()
    with torch.no_grad():
        model.weight.copy_(sol[:-1].T)
        model.bias.copy_(sol[-1])
    return model, X, y


def dense_mean_square_threshold(X: torch.Tensor, batch_size: int) -> float:
    r"""Exact mean-square SGD threshold of the linear model, in parameter space (independent).

    For ``nn.Linear`` with ``nn.MSELoss`` the per-example Hessians are
    :math:`H_i = 2\tilde x_i\tilde x_i^\top` (:math:`\tilde x = [x, 1]`) at every point.
    With :math:`p = (n-B)/(B(n-1))` (uniform batches without replacement) the second moment
    :math:`\Sigma` of :math:`\delta' = (I - \eta H_S)\delta` evolves as
    :math:`\Sigma - \eta A(\Sigma) + \eta^2 Q(\Sigma)` with :math:`A(\Sigma) = H\Sigma +
    \Sigma H` and :math:`Q(\Sigma) = (1-p)H\Sigma H + \frac pn\sum_i H_i\Sigma H_i`, so
    :math:`\eta_{ms} = 1/\mu_{\max}` for :math:`Q = \mu A` (REFERENCES.md §3.2). Here the
    pencil is formed densely as Kronecker products in the eigenbasis of :math:`H` restricted to
    its range (where every :math:`H_i` lives), which is not how ``landscape`` computes it
    (function space, Gram matrix).

    Parameters
    ----------
    X : Tensor
        Features ``(n, d)`` (the bias column is added here).
    batch_size : int
        :math:`B`.

    Returns
    -------
    float
        :math:`\eta_{ms}(B)`.
    """
    import scipy.sparse.linalg

    Xt = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1).numpy()
    n = len(Xt)
    H = 2 * Xt.T @ Xt / n
    h, U = np.linalg.eigh(H)
    keep = h > 1e-10 * h.max()
    h, U = h[keep], U[:, keep]
    Z = Xt @ U  # rows z_i: H_i = 2 U z_i z_i^T U^T
    r = len(h)
    p = (n - batch_size) / (batch_size * (n - 1))
    W = (Z[:, :, None] * Z[:, None, :]).reshape(n, r * r)  # rows vec(z_i z_i^T)
    a = (h[:, None] + h[None, :]).reshape(-1)  # A is diagonal in this basis
    s = 1 / np.sqrt(a)
    M = (1 - p) * np.diag(np.outer(h, h).reshape(-1)) + (4 * p / n) * W.T @ W
    M = s[:, None] * M * s[None, :]
    mu = scipy.sparse.linalg.eigsh(M, k=1, which="LA", return_eigenvectors=False)[0]
    return float(1 / mu)


def perturbed(model: nn.Module, seed: int, scale: float = PERTURBATION) -> nn.Module:
    """Return a copy of ``model`` with ``scale`` * N(0, 1) added to every parameter entry.

    Parameters
    ----------
    model : nn.Module
        The minimum.
    seed : int
        Seed of the perturbation.
    scale : float, optional
        Standard deviation per entry.

    Returns
    -------
    nn.Module
        The perturbed copy.
    """
    gen = torch.Generator().manual_seed(10_000 + seed)
    out = copy.deepcopy(model)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return out


def _vector(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _full_loss(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(LOSS(model(X), y))


# -- empirical training runs (plain torch) --------------------------------------------------------


def sgd_run(
    start: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    lr: float,
    *,
    seed: int,
    steps: int = STEPS,
    anchor: torch.Tensor | None = None,
) -> dict[str, float]:
    """Train a copy of ``start`` with ``torch.optim.SGD``; report loss and distance ratios.

    Every step draws ``batch_size`` of the ``n`` samples uniformly without replacement from a
    generator seeded by ``seed`` and ``batch_size`` (the same batches for every ``lr``).
    The run stops early once it has clearly blown up (non-finite, loss above 1e8 times the
    start, or 100 times farther from ``anchor`` than at the start; checked every 250 steps).

    Parameters
    ----------
    start : nn.Module
        Starting point (copied).
    X, y : Tensor
        The data.
    batch_size : int
        Batch size (``n``: full-batch GD).
    lr : float
        Learning rate.
    seed : int
        Seed of the batch sequence.
    steps : int, optional
        Optimizer steps.
    anchor : Tensor, optional
        Parameters of the minimum, for the distance ratio.

    Returns
    -------
    dict
        ``loss_ratio`` (final / starting full-data loss), ``distance_ratio`` (final / starting
        distance to ``anchor``, NaN without one) and ``steps`` run.
    """
    n = len(X)
    model = copy.deepcopy(start)
    opt = torch.optim.SGD(model.parameters(), lr=lr, foreach=False)
    gen = torch.Generator().manual_seed(1_000_003 * seed + batch_size)
    start_loss = _full_loss(model, X, y)
    d0 = float((_vector(model) - anchor).norm()) if anchor is not None else math.nan
    out = {"loss_ratio": math.inf, "distance_ratio": math.inf, "steps": steps}
    for t in range(steps):
        if batch_size < n:
            index = torch.randperm(n, generator=gen)[:batch_size]
            xb, yb = X[index], y[index]
        else:
            xb, yb = X, y
        opt.zero_grad(set_to_none=True)
        LOSS(model(xb), yb).backward()
        opt.step()
        if t % 250 == 249 or t == steps - 1:
            loss = _full_loss(model, X, y) / start_loss
            dist = float((_vector(model) - anchor).norm()) / d0 if anchor is not None else math.nan
            if not math.isfinite(loss) or loss > 1e8 or (anchor is not None and not dist < 100):
                out["steps"] = t + 1
                return out
    out.update(loss_ratio=loss, distance_ratio=dist)
    return out


def adam_loss_ratio(
    start: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    lr: float,
    *,
    seed: int,
    steps: int = ADAM_STEPS,
    window: int = ADAM_WINDOW,
) -> float:
    """Train a copy with a fresh ``torch.optim.Adam``; mean late full-data loss over the start.

    Parameters
    ----------
    start : nn.Module
        Starting point (copied).
    X, y : Tensor
        The data.
    batch_size : int
        Batch size.
    lr : float
        Learning rate.
    seed : int
        Seed of the batch sequence.
    steps, window : int, optional
        Steps, and the final steps over which the full-data loss is averaged (every 10th).

    Returns
    -------
    float
        Mean full-data loss over the window divided by the starting loss (``inf`` if not
        finite).
    """
    n = len(X)
    model = copy.deepcopy(start)
    opt = torch.optim.Adam(model.parameters(), lr=lr, foreach=False)
    gen = torch.Generator().manual_seed(1_000_003 * seed + batch_size)
    start_loss = _full_loss(model, X, y)
    late = []
    for t in range(steps):
        index = torch.randperm(n, generator=gen)[:batch_size]
        opt.zero_grad(set_to_none=True)
        LOSS(model(X[index]), y[index]).backward()
        opt.step()
        if t >= steps - window and t % 10 == 0:
            late.append(_full_loss(model, X, y))
            if not math.isfinite(late[-1]):
                return math.inf
    return float(np.mean(late)) / start_loss


def bisect_lr(
    diverges: Callable[[float], bool],
    guess: float,
    *,
    iterations: int,
    low: float = 0.8,
    high: float = 1.6,
) -> dict[str, Any]:
    """Bisect (geometrically) on the learning rate between a stable and a diverging one.

    The bracket starts at ``[low, high] * guess``; its ends are tested and widened by factors
    of 1.5 until the lower end is stable and the upper one diverges, so ``guess`` only sets
    the starting bracket. Assumes divergence is monotone in the learning rate (with common
    random numbers it is, up to the resolution used here).

    Parameters
    ----------
    diverges : callable
        ``lr -> bool``.
    guess : float
        Centre of the starting bracket.
    iterations : int
        Halvings of the log-bracket after it is established.
    low, high : float, optional
        Starting bracket, relative to ``guess``.

    Returns
    -------
    dict
        ``threshold`` (geometric mid-point of the final bracket), ``stable`` and ``diverged``
        (its ends), ``halfwidth`` (relative) and every ``probe`` as ``[lr, diverged]``.

    Raises
    ------
    RuntimeError
        If no bracket is found within 20 widenings.
    """
    probes: list[list[Any]] = []

    def test(lr: float) -> bool:
        d = bool(diverges(lr))
        probes.append([lr, d])
        return d

    lo, hi = guess * low, guess * high
    for _ in range(20):
        if not test(lo):
            break
        hi, lo = lo, lo / 1.5
    else:
        raise RuntimeError("no stable learning rate found")
    if not any(d for lr, d in probes if lr == hi):
        for _ in range(20):
            if test(hi):
                break
            lo, hi = hi, hi * 1.5
        else:
            raise RuntimeError("no diverging learning rate found")
    for _ in range(iterations):
        mid = math.sqrt(lo * hi)
        if test(mid):
            hi = mid
        else:
            lo = mid
    return {
        "threshold": math.sqrt(lo * hi),
        "stable": lo,
        "diverged": hi,
        "halfwidth": math.sqrt(hi / lo) - 1,
        "probes": probes,
    }


def _fit_exponent(B: np.ndarray, lr: np.ndarray) -> float:
    return float(np.polyfit(np.log(B), np.log(lr), 1)[0])


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


# -- the three parts -------------------------------------------------------------------------------


def gd_and_sgd(quick: bool) -> dict[str, Any]:
    """Parts (a) and (b) on the interpolating linear model, (a) also on the MLP.

    Parameters
    ----------
    quick : bool
        Reduced variant (B = 1, 8, n; one seed; fewer bisection steps; verify=True for GD
        only; no MLP).

    Returns
    -------
    dict
        Predictions, verification brackets and bisection thresholds (JSON-ready), plus the
        ``LearningRateResult`` objects under ``"_objects"``.
    """
    model, X, y = interpolating_linear(48)
    n = len(X)
    sizes = (1, 8, n) if quick else (1, 2, 4, 8, 16, 32, n)
    seeds = (0,) if quick else (0, 1, 2)
    iterations = 5 if quick else 8
    out: dict[str, Any] = {
        "problem": (
            f"nn.Linear(61, 1) at the minimum-norm interpolating solution of the mean squared "
            f"error on the first {n} digits (z-scored pixels, standardized labels), float64"
        ),
        "n": n,
        "batch_sizes": list(sizes),
        "seeds": list(seeds),
        "steps": STEPS,
        "perturbation": PERTURBATION,
    }
    pred, t = _timed(
        lambda: ls.max_learning_rate(
            model,
            (X, y),
            LOSS,
            batch_sizes=sizes,
            num_batches=8 if quick else 16,
            exact_samples=n,
            seed=0,
        )
    )
    dense = [dense_mean_square_threshold(X, B) for B in sizes]
    out["prediction"] = {
        "lr_max_heuristic": pred.lr_max.tolist(),
        "lr_max_worst_batch": pred.lr_max_low.tolist(),
        "lr_max_best_batch": pred.lr_max_high.tolist(),
        "lr_mean_square": pred.lr_mean_square.tolist(),
        "lr_mean_square_dense_check": dense,
        "lr_mean_square_max_relative_difference": float(
            np.max(np.abs(pred.lr_mean_square / np.asarray(dense) - 1))
        ),
        "lr_wu_ma_e_bound": pred.lr_nonuniformity_bound.tolist(),
        "lr_trace_bound_B1": pred.lr_trace_bound,
        "sharpness_full": float(pred.sharpness[-1]),
        "scaling_exponent": pred.scaling_exponent,
        "fit": pred.fit,
        "notes": list(pred.notes),
        "seconds": t,
    }

    # ls's verify path: bursts from the perturbed start (the Hessian of a linear model does not
    # depend on the parameters, so the predictions there are the same as at the minimum).
    start = perturbed(model, seed=0)
    factors = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0)
    gd_factors = (0.99, 1.01) if quick else (0.98, 0.995, 1.005, 1.02)
    ver, t = None, 0.0
    if not quick:
        ver, t = _timed(
            lambda: ls.max_learning_rate(
                start,
                (X, y),
                LOSS,
                batch_sizes=sizes[:-1],
                num_batches=16,
                exact_samples=n,
                verify=ls.VerifySettings(steps=STEPS, factors=factors, divergence_factor=1.001),
                seed=0,
            )
        )
    gd_ver, t_gd = _timed(
        lambda: ls.max_learning_rate(
            start,
            (X, y),
            LOSS,
            batch_sizes=("full",),
            exact_samples=n,
            verify=ls.VerifySettings(steps=STEPS, factors=gd_factors, divergence_factor=1.001),
            seed=0,
        )
    )
    # The defaults (200 steps, 2x the start) from the exact minimum: the burst starts from
    # round-off, so it shows what verify=True reports there.
    gd_default, _ = _timed(
        lambda: ls.max_learning_rate(
            model,
            (X, y),
            LOSS,
            batch_sizes=("full",),
            exact_samples=n,
            verify=ls.VerifySettings(factors=(0.8, 1.05, 1.25)),
            seed=0,
        )
    )
    verification = [*(ver.verification if ver is not None else ()), *gd_ver.verification]
    out["verify"] = {
        "settings": {
            "verify_steps": STEPS,
            "divergence_factor": 1.001,
            "factors_sgd": list(factors) if ver is not None else None,
            "factors_gd": list(gd_factors),
            "start": "minimum + perturbation (seed 0)",
        },
        "brackets": [
            {"batch_size": v.batch_size, "stable": v.lr_stable, "diverged": v.lr_diverged}
            for v in verification
        ],
        "default_settings_from_exact_minimum": [
            {
                "batch_size": v.batch_size,
                "lrs": v.lrs.tolist(),
                "diverged": v.diverged.tolist(),
                "start_loss": v.start_loss,
                "final_losses": v.final_losses.tolist(),
            }
            for v in gd_default.verification
        ],
        "seconds": t + t_gd,
    }

    # Independent bisection, loss criterion.
    bis: dict[str, Any] = {}
    t0 = time.perf_counter()
    for i, B in enumerate(sizes):
        runs = []
        for s in seeds:
            start_s = perturbed(model, seed=s)

            def diverges(lr: float, B: int = B, s: int = s, start_s: nn.Module = start_s) -> bool:
                r = sgd_run(start_s, X, y, B, lr, seed=s)
                return not r["loss_ratio"] <= 1.0

            guess = pred.lr_mean_square[i]
            low, high = (0.97, 1.03) if n == B else (0.8, 1.6)
            runs.append(bisect_lr(diverges, guess, iterations=iterations, low=low, high=high))
        thresholds = [r["threshold"] for r in runs]
        bis[str(B)] = {
            "thresholds": thresholds,
            "median": float(np.median(thresholds)),
            "halfwidths": [r["halfwidth"] for r in runs],
            "probes": [r["probes"] for r in runs],
        }
    out["bisection"] = bis
    out["bisection_seconds"] = time.perf_counter() - t0
    emp = np.asarray([bis[str(B)]["median"] for B in sizes])
    ms = pred.lr_mean_square
    out["summary"] = {
        "gd_prediction": float(pred.lr_max[-1]),
        "gd_empirical": float(emp[-1]),
        "gd_relative_error": float(pred.lr_max[-1] / emp[-1] - 1),
        "empirical_over_ms": (emp / ms).tolist(),
        "heuristic_over_ms": (pred.lr_max / ms).tolist(),
        "heuristic_over_empirical": (pred.lr_max / emp).tolist(),
        "wu_ma_e_bound_over_ms": (pred.lr_nonuniformity_bound / ms).tolist(),
        "worst_batch_over_empirical": (pred.lr_max_low / emp).tolist(),
        "min_empirical_over_ms_all_seeds": float(
            min(min(bis[str(B)]["thresholds"]) / ms[i] for i, B in enumerate(sizes))
        ),
        "max_empirical_over_ms_all_seeds": float(
            max(max(bis[str(B)]["thresholds"]) / ms[i] for i, B in enumerate(sizes))
        ),
    }
    objects = {"prediction": pred, "verify": ver or pred, "verify_gd": gd_ver}

    if not quick:
        out["mlp"] = _mlp_part(iterations)
    out["_objects"] = objects
    return out


def _mlp_part(iterations: int) -> dict[str, Any]:
    """GD and SGD at an interpolating tanh MLP: exact thresholds against the escape criterion.

    Returns
    -------
    dict
        Predictions, bisection thresholds (escape criterion) and the loss criterion's verdicts
        above ``2/lambda`` (JSON-ready).
    """
    t0 = time.perf_counter()
    model, X, y = interpolating_mlp(48)
    n = len(X)
    sizes = (1, 4, 16, n)
    pred = ls.max_learning_rate(
        model, (X, y), LOSS, batch_sizes=sizes, num_batches=16, exact_samples=n, seed=0
    )
    anchor = _vector(model)
    start = perturbed(model, seed=0)
    thresholds = {}
    for i, B in enumerate(sizes):

        def escapes(lr: float, B: int = B) -> bool:
            r = sgd_run(start, X, y, B, lr, seed=0, anchor=anchor)
            return not r["distance_ratio"] <= 1.0

        low, high = (0.95, 1.05) if n == B else (0.8, 1.6)
        r = bisect_lr(escapes, pred.lr_mean_square[i], iterations=iterations, low=low, high=high)
        thresholds[str(B)] = {k: r[k] for k in ("threshold", "stable", "diverged", "halfwidth")}
    gd = float(pred.lr_max[-1])
    loss_verdicts = {}
    for f in (1.05, 1.2, 1.5):
        r = sgd_run(start, X, y, n, gd * f, seed=0, anchor=anchor)
        loss_verdicts[str(f)] = {
            "loss_ratio": r["loss_ratio"],
            "distance_ratio": r["distance_ratio"],
        }
    emp = np.asarray([thresholds[str(B)]["threshold"] for B in sizes])
    return {
        "problem": "61-16-1 tanh MLP trained to interpolation (L-BFGS) on the same 48 digits",
        "train_loss": _full_loss(model, X, y),
        "batch_sizes": list(sizes),
        "lr_max_heuristic": pred.lr_max.tolist(),
        "lr_mean_square": pred.lr_mean_square.tolist(),
        "escape_bisection": thresholds,
        "gd_relative_error": float(gd / emp[-1] - 1),
        "empirical_over_ms": (emp / pred.lr_mean_square).tolist(),
        "heuristic_over_empirical": (pred.lr_max / emp).tolist(),
        "gd_loss_criterion_above_threshold": loss_verdicts,
        "notes": list(pred.notes),
        "seconds": time.perf_counter() - t0,
    }


def adam(quick: bool) -> dict[str, Any]:
    """Part (c): Adam's predicted lr_max(B) and its exponent against loss-doubling bisection.

    Parameters
    ----------
    quick : bool
        Reduced variant (four batch sizes, no bursts, no bisection).

    Returns
    -------
    dict
        Predictions, fitted exponents and (full) empirical thresholds (JSON-ready), plus the
        ``LearningRateResult`` under ``"_objects"``.
    """
    model, X, y = noisy_least_squares()
    n = len(X)
    sizes = (1, 4, 16, 64) if quick else (1, 2, 4, 8, 16, 32, 64, 128, 256)
    pred, t = _timed(
        lambda: ls.max_learning_rate(
            model,
            (X, y),
            LOSS,
            batch_sizes=sizes,
            optimizer="adam",
            num_batches=8 if quick else 16,
            verify=not quick,
            seed=0,
        )
    )
    # The same batches' plain top eigenvalue (SGD heuristic): the sqrt(B) argument needs
    # E[lambda_1(H_S)] ~ 1/B while the preconditioner goes like sqrt(p_B) ~ 1/sqrt(B).
    plain = ls.max_learning_rate(
        model,
        (X, y),
        LOSS,
        batch_sizes=sizes,
        optimizer="sgd",
        num_batches=8 if quick else 16,
        exact=False,
        seed=0,
    )
    B = np.asarray(sizes, dtype=float)
    small = B <= 16
    p_B = (n - B) / (B * (n - 1))
    out: dict[str, Any] = {
        "problem": (
            "nn.Linear(128, 1) at the least-squares minimum of standardized labels on 512 random "
            "tanh features of all 1797 digits, PCA-whitened to 128 components (G = 0: pure "
            "gradient noise), float64; Adam(betas=(0.9, 0.999), eps=1e-8)"
        ),
        "n": n,
        "min_loss": _full_loss(model, X, y),
        "batch_sizes": list(sizes),
        "lr_max": pred.lr_max.tolist(),
        "lr_max_worst_batch": pred.lr_max_low.tolist(),
        "lr_max_best_batch": pred.lr_max_high.tolist(),
        "sharpness": pred.sharpness.tolist(),
        "scaling_exponent": pred.scaling_exponent,
        "exponent_B_le_16": _fit_exponent(B[small], pred.lr_max[small]),
        "exponent_B_ge_16": _fit_exponent(B[B >= 16], pred.lr_max[B >= 16]),
        "plain_sharpness": plain.sharpness.tolist(),
        "plain_sharpness_exponent_B_le_16": _fit_exponent(B[small], plain.sharpness[small]),
        "isotropic_expectation_exponent_B_le_16": _fit_exponent(
            B[small], np.sqrt(p_B[small]) / plain.sharpness[small]
        ),
        "method": pred.method,
        "verify_default": [
            {"batch_size": v.batch_size, "stable": v.lr_stable, "diverged": v.lr_diverged}
            for v in pred.verification
        ],
        "seconds": t,
    }
    if not quick:
        t0 = time.perf_counter()
        chosen = (1, 4, 16, 64, 256)
        emp = {}
        for b in chosen:

            def doubles(lr: float, b: int = b) -> bool:
                return not adam_loss_ratio(model, X, y, b, lr, seed=0) <= 2.0

            r = bisect_lr(doubles, 0.01 * math.sqrt(b), iterations=7, low=0.5, high=2.0)
            emp[str(b)] = {k: r[k] for k in ("threshold", "stable", "diverged", "halfwidth")}
        thr = np.asarray([emp[str(b)]["threshold"] for b in chosen])
        out["loss_doubling"] = {
            "batch_sizes": list(chosen),
            "thresholds": thr.tolist(),
            "exponent": _fit_exponent(np.asarray(chosen, dtype=float), thr),
            "prediction_over_empirical": [
                float(pred.lr_max[sizes.index(b)] / thr[k]) for k, b in enumerate(chosen)
            ],
            "steps": ADAM_STEPS,
            "window": ADAM_WINDOW,
            "seconds": time.perf_counter() - t0,
        }
    out["_objects"] = {"prediction": pred}
    return out


def run(quick: bool = False) -> dict[str, Any]:
    """Run all parts.

    Parameters
    ----------
    quick : bool, optional
        Reduced variants (< 20 s on one thread).

    Returns
    -------
    dict
        ``{"sgd": ..., "adam": ..., "seconds": ...}``; result objects under ``"_objects"`` keys.
    """
    torch.set_num_threads(1)
    start = time.perf_counter()
    sgd = gd_and_sgd(quick)
    adam_part = adam(quick)
    return {
        "quick": quick,
        "sgd": sgd,
        "adam": adam_part,
        "seconds": time.perf_counter() - start,
    }


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_strip(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def plot(results: dict[str, Any], suffix: str = "") -> list[Path]:
    """Write the two figures.

    Parameters
    ----------
    results : dict
        Output of :func:`run`.
    suffix : str, optional
        Appended to the file names.

    Returns
    -------
    list of Path
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGURES.mkdir(parents=True, exist_ok=True)
    sgd, adam_part = results["sgd"], results["adam"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    ver = sgd["_objects"]["verify"]
    ls.plot_learning_rates([ver], labels=["SGD (linear, n=48)"], ax=axes[0])
    gd = sgd["_objects"]["verify_gd"]
    for v in gd.verification:
        axes[0].plot(
            [v.batch_size] * int((~v.diverged).sum()), v.lrs[~v.diverged], "o", mfc="none", c="C0"
        )
        axes[0].plot([v.batch_size] * int(v.diverged.sum()), v.lrs[v.diverged], "x", c="C0")
    n = sgd["n"]
    axes[0].plot([n], [sgd["prediction"]["lr_max_heuristic"][-1]], "D", c="C0")
    Bs = np.asarray(sgd["batch_sizes"], dtype=float)
    for s in range(len(sgd["seeds"])):
        thr = [sgd["bisection"][str(int(B))]["thresholds"][s] for B in Bs]
        axes[0].plot(
            Bs, thr, "*", c="k", ms=9, alpha=0.7, label="bisection (3000 steps)" if s == 0 else None
        )
    axes[0].set_title("(a, b) GD/SGD: prediction vs empirical threshold")
    axes[0].legend(fontsize=7)
    pred = adam_part["_objects"]["prediction"]
    ls.plot_learning_rates([pred], labels=["Adam (noisy least squares)"], ax=axes[1])
    if "loss_doubling" in adam_part:
        ld = adam_part["loss_doubling"]
        axes[1].plot(
            ld["batch_sizes"],
            ld["thresholds"],
            "*-",
            c="k",
            label=f"loss doubles (bisection), slope {ld['exponent']:.2f}",
        )
        ref = np.asarray(ld["batch_sizes"], dtype=float)
        axes[1].plot(
            ref, ld["thresholds"][0] * np.sqrt(ref), ":", c="gray", label="sqrt(B) reference"
        )
    axes[1].set_title("(c) Adam: linear-stability prediction vs loss doubling")
    axes[1].legend(fontsize=7)
    path1 = FIGURES / f"learning_rate{suffix}.png"
    fig.savefig(path1, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    summ = sgd["summary"]
    ax.plot(Bs, summ["empirical_over_ms"], "k*-", ms=9, label="empirical (median) / exact ms")
    ax.plot(Bs, summ["heuristic_over_ms"], "o-", label="heuristic 2/E[lambda_1(H_S)] / exact ms")
    ax.plot(
        Bs,
        np.asarray(sgd["prediction"]["lr_max_worst_batch"]) / sgd["prediction"]["lr_mean_square"],
        "v--",
        label="worst batch 2/max lambda_1(H_S) / exact ms",
    )
    ax.plot(
        Bs,
        np.asarray(sgd["prediction"]["lr_wu_ma_e_bound"]) / sgd["prediction"]["lr_mean_square"],
        "s:",
        label="Wu-Ma-E bound / exact ms",
    )
    if "mlp" in sgd:
        mlp = sgd["mlp"]
        ax.plot(mlp["batch_sizes"], mlp["empirical_over_ms"], "P-", label="MLP: escape / exact ms")
    ax.axhline(1.0, c="gray", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("batch size B")
    ax.set_ylabel("ratio to the exact mean-square threshold")
    ax.set_title("SGD thresholds relative to the exact mean-square threshold")
    ax.legend(fontsize=7)
    path2 = FIGURES / f"learning_rate_ratios{suffix}.png"
    fig.savefig(path2, dpi=110)
    plt.close(fig)
    return [path1, path2]


def report(results: dict[str, Any]) -> str:
    """Return a plain-text summary of :func:`run`'s output.

    Parameters
    ----------
    results : dict
        Output of :func:`run`.

    Returns
    -------
    str
        Tables for (a), (b) and (c).
    """
    sgd, adam_part = results["sgd"], results["adam"]
    p, s = sgd["prediction"], sgd["summary"]
    brackets = {b["batch_size"]: b for b in sgd["verify"]["brackets"]}
    lines = [f"(a, b) {sgd['problem']}"]
    lines.append(
        f"{'B':>4} {'heuristic':>10} {'worst':>9} {'exact ms':>9} {'WME':>9} "
        f"{'bisection':>10} {'emp/ms':>7} {'heur/emp':>8}  verify [stable, diverged]"
    )
    for i, B in enumerate(sgd["batch_sizes"]):
        br = brackets.get(B, {})
        emp = sgd["bisection"][str(B)]["median"]
        lines.append(
            f"{B:>4} {p['lr_max_heuristic'][i]:>10.5f} {p['lr_max_worst_batch'][i]:>9.5f} "
            f"{p['lr_mean_square'][i]:>9.5f} {p['lr_wu_ma_e_bound'][i]:>9.5f} {emp:>10.5f} "
            f"{s['empirical_over_ms'][i]:>7.3f} {s['heuristic_over_empirical'][i]:>8.3f}  "
            f"[{br.get('stable')}, {br.get('diverged')}]"
        )
    lines.append(
        "exact ms vs independent dense computation: max relative difference "
        f"{p['lr_mean_square_max_relative_difference']:.2e}"
    )
    lines.append(
        f"GD: 2/lambda = {s['gd_prediction']:.6f}, bisection {s['gd_empirical']:.6f} "
        f"({100 * s['gd_relative_error']:+.3f} %)"
    )
    if "mlp" in sgd:
        m = sgd["mlp"]
        lines.append(f"MLP: {m['problem']} (train loss {m['train_loss']:.2e})")
        for i, B in enumerate(m["batch_sizes"]):
            e = m["escape_bisection"][str(B)]["threshold"]
            lines.append(
                f"{B:>4} heuristic {m['lr_max_heuristic'][i]:.5f} exact ms "
                f"{m['lr_mean_square'][i]:.5f} escape {e:.5f} "
                f"(emp/ms {m['empirical_over_ms'][i]:.3f})"
            )
        lines.append(f"MLP GD relative error {100 * m['gd_relative_error']:+.3f} %")
    a = adam_part
    lines.append(f"(c) {a['problem']}")
    for i, B in enumerate(a["batch_sizes"]):
        lines.append(f"{B:>4} lr_max {a['lr_max'][i]:.4f} (sharpness {a['sharpness'][i]:.2f})")
    lines.append(
        f"exponent: all {a['scaling_exponent']:.3f}, B<=16 {a['exponent_B_le_16']:.3f}, "
        f"B>=16 {a['exponent_B_ge_16']:.3f}; E[lambda_1(H_S)] exponent (B<=16) "
        f"{a['plain_sharpness_exponent_B_le_16']:.3f}, isotropic-preconditioner expectation "
        f"{a['isotropic_expectation_exponent_B_le_16']:.3f}"
    )
    if "loss_doubling" in a:
        ld = a["loss_doubling"]
        lines.append(
            "loss doubling: "
            + ", ".join(f"B={b}: {t:.4f}" for b, t in zip(ld["batch_sizes"], ld["thresholds"]))
            + f"; exponent {ld['exponent']:.3f}"
        )
    lines.append(f"total {results['seconds']:.1f} s")
    return "\n".join(lines)


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced variant (< 20 s)")
    parser.add_argument("--write", action="store_true", help="write files in quick mode too")
    args = parser.parse_args()
    results = run(quick=args.quick)
    print(report(results))
    if args.quick and not args.write:
        return
    suffix = "_quick" if args.quick else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"learning_rate{suffix}.json"
    path.write_text(json.dumps(_strip(results), indent=1, allow_nan=False) + "\n")
    print(f"results written to {path}")
    for p in plot(results, suffix):
        print(f"figure written to {p}")


if __name__ == "__main__":
    main()
