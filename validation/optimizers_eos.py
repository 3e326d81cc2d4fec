r"""Validation: the edge of stability of full-batch RMSprop, and Muon's critical sharpness.

1. **RMSprop** (Cohen et al. 2022, "Adaptive Gradient Methods at the Edge of Stability"):
   under full-batch training the preconditioned sharpness :math:`\lambda_{\max}(P_t^{-1}H_t)`
   rises to RMSprop's threshold :math:`2/\eta` and equilibrates there, while the raw sharpness
   keeps changing. Measured every ``every`` steps with ``linearize`` (the preconditioner of
   the optimizer's next step, from its state) and ``frozen_stability`` on the full-data
   Hessian (warm-started Lanczos).
2. **Muon without momentum** on the same network without biases (Muon trains matrices only):
   the critical sharpness :math:`\lambda_c = 2/\eta_c` along Muon's own update, and the
   generalized sharpness in Muon's norm (lower bound by generalized power iteration), against
   :math:`2/\eta` over training — stated as measured. Islamov et al. (2026) report that the
   generalized sharpness of steepest descent in this norm oscillates around or above
   :math:`2/\eta`; Muon's update is normalized, so no such equilibrium is implied for the
   critical sharpness.

Setup (as ``validation/edge_of_stability.py``): a tanh MLP 64-64-64-10 (float64) on the first
500 sklearn digits, pixels in [0, 1] and centred, Cohen et al.'s square loss
:math:`\frac1n\sum_i\frac12\lVert f(x_i) - \mathrm{onehot}(y_i)\rVert^2`, full batch.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python validation/optimizers_eos.py [--quick]``; writes
``validation/results/optimizers_eos.json`` (``--quick``: 300 digits, shorter runs,
``optimizers_eos_quick.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import landscape as ls
from landscape.metrics.optimizers import (
    critical_sharpness,
    frozen_stability,
    generalized_sharpness,
    linearize,
    muon_scales,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "validation" / "results"
DTYPE = torch.float64
LEVEL = 0.95


def _data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = torch.tensor(digits.data[:n] / 16.0, dtype=DTYPE)
    X = X - X.mean(0)
    Y = nn.functional.one_hot(torch.tensor(digits.target[:n]), 10).to(DTYPE)
    return X, Y


def square_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Return Cohen et al.'s square loss, the mean over samples of half the squared error.

    Returns
    -------
    Tensor
        The scalar loss.
    """
    return 0.5 * (outputs - targets).square().sum(dim=1).mean()


def _model(bias: bool) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, 64, bias=bias),
        nn.Tanh(),
        nn.Linear(64, 64, bias=bias),
        nn.Tanh(),
        nn.Linear(64, 10, bias=bias),
    ).to(DTYPE)


def _summary(steps: list[int], ratios: list[float], losses: list[float]) -> dict[str, Any]:
    r = np.asarray(ratios)
    hits = np.nonzero(r >= LEVEL)[0]
    if not len(hits):
        return {"t_star": None, "max_ratio": float(r.max())}
    window = r[hits[0] :]
    return {
        "t_star": steps[hits[0]],
        "mean": float(window.mean()),
        "std": float(window.std()),
        "p05": float(np.percentile(window, 5)),
        "p95": float(np.percentile(window, 95)),
        "max": float(window.max()),
        "loss_start_window": losses[hits[0]],
        "loss_end": losses[-1],
    }


def rmsprop_run(X: torch.Tensor, Y: torch.Tensor, lr: float, steps: int, every: int) -> dict:
    """Train with full-batch RMSprop and measure the preconditioned sharpness.

    Returns
    -------
    dict
        The series and the statistics over the edge-of-stability window.
    """
    model = _model(bias=True)
    opt = torch.optim.RMSprop(model.parameters(), lr=lr)
    problem = ls.Problem(model, (X, Y), square_loss)
    H = ls.hessian(model, (X, Y), square_loss)
    series: dict[str, list] = {"step": [], "ratio": [], "sharpness": [], "raw": [], "loss": []}
    v0 = v0_raw = None
    for t in range(steps + 1):
        opt.zero_grad()
        loss = square_loss(model(X), Y)
        loss.backward()
        if t % every == 0 and t > 0:
            result = frozen_stability(H, linearize(opt, problem), tol=1e-4, v0=v0)
            v0 = result.eigenvector
            raw = ls.eigenvalues(H, k=1, tol=1e-4, v0=v0_raw)
            v0_raw = raw.vectors[:, 0]
            series["step"].append(t)
            series["ratio"].append(result.ratio)
            series["sharpness"].append(result.sharpness)
            series["raw"].append(float(raw.values[0]))
            series["loss"].append(float(loss.detach()))
        opt.step()
    return {
        "lr": lr,
        "threshold": 2.0 / lr,
        "series": series,
        "summary": _summary(series["step"], series["ratio"], series["loss"]),
    }


def muon_run(X: torch.Tensor, Y: torch.Tensor, lr: float, steps: int, every: int) -> dict:
    """Train with full-batch Muon (no momentum) and measure its critical and generalized sharpness.

    Returns
    -------
    dict
        The series of both measures against 2/lr.
    """
    model = _model(bias=False)
    opt = torch.optim.Muon(model.parameters(), lr=lr, momentum=0.0, weight_decay=0.0)
    problem = ls.Problem(model, (X, Y), square_loss)
    H = ls.hessian(model, (X, Y), square_loss)
    scales = muon_scales(opt, dict(model.named_parameters()))
    series: dict[str, list] = {"step": [], "critical": [], "generalized": [], "loss": []}
    init = None
    for t in range(steps + 1):
        opt.zero_grad()
        loss = square_loss(model(X), Y)
        loss.backward()
        if t % every == 0 and t > 0:
            critical = critical_sharpness(problem, optimizer=opt)
            general = generalized_sharpness(
                H, problem.space, scales, lr=lr, starts=1, max_iterations=30, init=init
            )
            init = general.direction
            series["step"].append(t)
            series["critical"].append(critical.sharpness)
            series["generalized"].append(general.sharpness)
            series["loss"].append(float(loss.detach()))
        opt.step()
    c = np.asarray(series["critical"]) * lr / 2
    g = np.asarray(series["generalized"]) * lr / 2
    half = len(c) // 2
    return {
        "lr": lr,
        "threshold": 2.0 / lr,
        "series": series,
        "critical_ratio_second_half": [float(np.median(c[half:])), float(c[half:].max())],
        "generalized_ratio_second_half": [float(np.median(g[half:])), float(g[half:].max())],
    }


def main() -> None:
    """Run both reproductions and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    X, Y = _data(300 if args.quick else 500)
    steps, every = (600, 30) if args.quick else (3000, 50)
    results: dict[str, Any] = {"torch": torch.__version__, "python": sys.version.split()[0]}
    results["rmsprop"] = [rmsprop_run(X, Y, lr, steps, every) for lr in (2e-4, 5e-4)]
    for run in results["rmsprop"]:
        print(f"RMSprop lr {run['lr']:g}: {run['summary']}", flush=True)
    results["muon"] = [muon_run(X, Y, lr, steps // 2, every) for lr in (0.01, 0.03)]
    for run in results["muon"]:
        print(
            f"Muon lr {run['lr']:g}: critical sharpness x lr/2 (median, max over the second "
            f"half) {run['critical_ratio_second_half']}, generalized "
            f"{run['generalized_ratio_second_half']}",
            flush=True,
        )
    results["seconds"] = time.perf_counter() - start
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("optimizers_eos_quick.json" if args.quick else "optimizers_eos.json")
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out} in {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
