"""Curvature of a small MLP trained on sklearn's digits (offline data): the `make demo` job.

Trains a 64-32-10 MLP with SGD for a few epochs, then measures:
- the top and bottom Hessian eigenvalues and the top Gauss-Newton eigenvalues (Lanczos
  with residual certificates),
- the Hessian trace (Hutch++), the spectral density (stochastic Lanczos quadrature) with
  its outliers, and per-layer curvature (HAWQ-V2 style),
- the learning-rate stability threshold 2 / lambda_max of gradient descent,
and saves figures/digits_curvature.png.

Run: ``make demo`` (or ``.venv/bin/python examples/digits_curvature.py [--quick]``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import landscape as ls

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def digits_loader(batch_size: int = 128) -> DataLoader:
    digits = load_digits()  # ships with scikit-learn: no download
    X = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.long)
    return DataLoader(TensorDataset(X, y), batch_size=batch_size, shuffle=False)


def train(model: nn.Module, loader: DataLoader, epochs: int, lr: float) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        for X, y in loader:
            optimizer.zero_grad()
            loss_fn(model(X), y).backward()
            optimizer.step()


def accuracy(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    loss, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for X, y in loader:
            out = model(X)
            loss += nn.functional.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
            n += len(y)
    return loss / n, correct / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and probes (smoke test)")
    parser.add_argument("--no-figure", action="store_true", help="do not write the figure")
    args = parser.parse_args()

    torch.manual_seed(0)
    loader = digits_loader()
    model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    lr = 0.5
    train(model, loader, epochs=3 if args.quick else 30, lr=lr)
    loss, acc = accuracy(model, loader)
    print(
        f"MLP 64-32-10 on sklearn digits ({len(loader.dataset)} samples): "
        f"train loss {loss:.4f}, accuracy {acc:.1%}"
    )

    H = ls.hessian(model, loader)
    G = ls.gauss_newton(model, loader)
    P = H.shape[0]
    print(f"parameters P = {P}")

    top = ls.eigenvalues(H, k=5)
    bottom = ls.eigenvalues(H, k=1, which="smallest", tol=1e-3)
    top_g = ls.eigenvalues(G, k=5)
    print(
        f"top-5 Hessian eigenvalues:      {np.array2string(top.values.numpy(), precision=4)}"
        f"  ({top.num_matvecs} HVPs, max residual {float(top.residuals.max()):.1e})"
    )
    print(f"top-5 Gauss-Newton eigenvalues: {np.array2string(top_g.values.numpy(), precision=4)}")
    smallest = float(bottom.values[0])
    print(f"smallest Hessian eigenvalue:     {smallest:.4f} ({bottom.num_matvecs} HVPs)")

    trace = ls.trace(H, num_matvecs=30 if args.quick else 99)
    print(
        f"Hessian trace (Hutch++, {trace.num_matvecs} HVPs in {trace.num_passes} passes): "
        f"{trace.value:.4f} +/- {trace.stderr:.4f}"
    )
    density = ls.spectral_density(
        H, num_probes=4 if args.quick else 10, num_steps=20 if args.quick else 60
    )
    gap = (
        f"{density.num_outliers} outliers above a bulk edge at {density.bulk_edge:.3g}"
        if density.bulk_edge is not None
        else "no clear gap between outliers and bulk"
    )
    print(
        f"spectral density (SLQ, {density.num_passes} passes): {gap}; "
        f"negative eigenvalues carry {density.negative_mass_ratio:.1%} of the spectral mass "
        f"sum|lambda|"
    )
    print(
        f"gradient descent is stable here for lr < 2/lambda_max = {2 / float(top.values[0]):.3f} "
        f"(trained with lr = {lr})"
    )
    layers = ls.layerwise(model, loader, num_probes=16 if args.quick else 100)
    print(layers.table())

    if not args.no_figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        FIGURES.mkdir(exist_ok=True)
        fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), layout="constrained")
        ls.plot_spectral_density(density, ax=axes[0])
        ls.plot_eigenvalues(ls.eigenvalues(H, k=5, which="both"), ax=axes[1])
        ls.plot_layerwise(layers, ax=axes[2], metric="mean_curvature")
        path = FIGURES / "digits_curvature.png"
        fig.savefig(path, dpi=110)
        print(f"figure written to {path}")


if __name__ == "__main__":
    main()
