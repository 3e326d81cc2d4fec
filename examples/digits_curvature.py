"""Curvature of a small MLP trained on sklearn's digits (offline data): the `make demo` job.

Trains a 64-32-10 MLP with SGD for a few epochs, then measures, through landscape's
curvature operators:
- the top Hessian and Gauss-Newton eigenvalues (scipy's eigsh on ``H.to_scipy()``),
- the Hessian trace by Hutchinson's estimator, with all probes in ONE pass over the data
  (``H @ Z`` for a block of Rademacher vectors),
- the learning-rate stability threshold 2 / lambda_max of gradient descent,
and saves a bar chart of the top eigenvalues to figures/digits_top_eigenvalues.png.

Run: ``make demo`` (or ``.venv/bin/python examples/digits_curvature.py [--quick]``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from scipy.sparse.linalg import eigsh
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
    k = 5
    start = time.perf_counter()
    top_h = np.sort(eigsh(H.to_scipy(), k=k, which="LA", return_eigenvectors=False))[::-1]
    t_h = time.perf_counter() - start
    top_g = np.sort(eigsh(G.to_scipy(), k=k, which="LA", return_eigenvectors=False))[::-1]

    num_probes = 16 if args.quick else 200
    gen = torch.Generator().manual_seed(0)
    Z = torch.randint(0, 2, (P, num_probes), generator=gen).float() * 2 - 1
    passes_before = H.num_passes
    samples = (Z * (H @ Z)).sum(0)  # z_i^T H z_i, all probes in one pass
    trace, stderr = samples.mean().item(), (samples.std() / num_probes**0.5).item()

    print(f"parameters P = {P}")
    print(
        f"top-{k} Hessian eigenvalues:      {np.array2string(top_h, precision=4)}"
        f"  ({H.num_matvecs - num_probes} HVPs, {t_h:.2f} s)"
    )
    print(f"top-{k} Gauss-Newton eigenvalues: {np.array2string(top_g, precision=4)}")
    print(
        f"Hessian trace (Hutchinson, {num_probes} probes in {H.num_passes - passes_before} pass): "
        f"{trace:.4f} +/- {stderr:.4f}"
    )
    print(
        f"gradient descent is stable here for lr < 2/lambda_max = {2 / top_h[0]:.3f} "
        f"(trained with lr = {lr})"
    )

    if not args.no_figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        FIGURES.mkdir(exist_ok=True)
        fig, ax = plt.subplots(figsize=(5, 3.2))
        idx = np.arange(1, k + 1)
        ax.bar(idx - 0.2, top_h, width=0.4, label="Hessian")
        ax.bar(idx + 0.2, top_g, width=0.4, label="Gauss-Newton")
        ax.set_xlabel("eigenvalue index")
        ax.set_ylabel("eigenvalue")
        ax.set_title("Top curvature of an MLP on sklearn digits")
        ax.legend()
        fig.tight_layout()
        path = FIGURES / "digits_top_eigenvalues.png"
        fig.savefig(path, dpi=120)
        print(f"figure written to {path}")


if __name__ == "__main__":
    main()
