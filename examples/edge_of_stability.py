"""Edge of Stability: full-batch gradient descent sharpens until lambda_max reaches 2/lr.

Cohen et al. (ICLR 2021) observed that full-batch GD with step size lr first *sharpens*
(the top Hessian eigenvalue rises during training) until it reaches the stability threshold
2/lr, and then hovers there while the loss keeps decreasing, non-monotonically. This example
reproduces it on a tanh MLP (64-64-64-10) trained with the mean squared error on one-hot
targets of 512 sklearn digits, with `ls.SharpnessTracker` measuring lambda_max every 10 steps
(warm-started Lanczos: a few Hessian-vector products per measurement), for two step sizes.

Run: ``.venv/bin/python examples/edge_of_stability.py [--quick] [--no-figure]``
(about 20 s on 2 CPU cores; ``--quick``: one step size, 300 steps, a few seconds).
Writes figures/edge_of_stability.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

import landscape as ls
from landscape.demo import digits_loaders

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def run(lr: float, steps: int, X: torch.Tensor, Y: torch.Tensor, every: int = 10):
    torch.manual_seed(0)  # the same initialization for every step size
    model = nn.Sequential(
        nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    tracker = ls.SharpnessTracker(model, (X, Y), nn.MSELoss(), every=every)
    tracker.measure(optimizer, step=0)
    for _ in range(steps):
        loss = nn.functional.mse_loss(model(X), Y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        tracker.step(optimizer, loss=loss.detach())
    return tracker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one step size, 300 steps")
    parser.add_argument("--no-figure", action="store_true", help="do not write the figure")
    args = parser.parse_args()

    samples, runs = (256, [(1.0, 300)]) if args.quick else (512, [(1.0, 1500), (0.5, 3000)])
    loader, _ = digits_loaders(num_samples=samples)
    X, y = loader.dataset.tensors
    Y = nn.functional.one_hot(y, 10).float()  # MSE on one-hot targets, as in Cohen et al.
    print(f"full-batch GD, MLP 64-64-64-10 (tanh), MSE, {len(y)} digits")

    trackers = {}
    for lr, steps in runs:
        start = time.perf_counter()
        tracker = run(lr, steps, X, Y)
        s = tracker.summary()
        h = tracker.history
        print(
            f"lr = {lr:g} (threshold 2/lr = {2 / lr:g}), {steps} steps: sharpness "
            f"{h['sharpness'][0]:.3g} at step 0 -> {h['sharpness'][-1]:.3g} at step {steps}; "
            f"train loss {h['train_loss'][1]:.4f} at step {h['step'][1]} -> "
            f"{h['train_loss'][-1]:.4f}"
        )
        if s["crossing_step"] is not None:
            print(
                f"  reached the edge of stability (sharpness >= 0.95 * 2/lr) at step "
                f"{s['crossing_step']}; afterwards sharpness / (2/lr) = "
                f"{s['ratio_mean']:.3f} +/- {s['ratio_std']:.3f}"
            )
        else:
            print(f"  still sharpening: max sharpness / (2/lr) = {s['max_ratio']:.3f}")
        print(
            f"  tracker cost: {s['total_matvecs']} Hessian-vector products over "
            f"{s['num_measurements']} measurements ({time.perf_counter() - start:.1f} s with "
            f"training)"
        )
        trackers[lr] = tracker

    if not args.no_figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(
            2, len(trackers), figsize=(5.5 * len(trackers), 5.4), layout="constrained",
            sharex="col", squeeze=False,
        )  # fmt: skip
        for i, (lr, tracker) in enumerate(trackers.items()):
            tracker.plot(ax=(axes[0, i], axes[1, i]), title=f"full-batch GD, lr = {lr:g}")
        FIGURES.mkdir(exist_ok=True)
        path = FIGURES / "edge_of_stability.png"
        fig.savefig(path, dpi=110)
        print(f"figure written to {path}")


if __name__ == "__main__":
    main()
