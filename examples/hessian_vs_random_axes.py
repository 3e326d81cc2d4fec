"""Loss surfaces of a BatchNorm CNN: Hessian axes vs random axes, eval vs recomputed BN.

Li et al. (2018) plot the loss along two random, filter-normalized directions. In high
dimension such directions are almost orthogonal to the few sharp ones, so the surface shows
the flat bulk of the spectrum; plotting along the top two Hessian eigenvectors
(`ls.hessian_directions`) shows the sharpest slice instead (Böttcher & Wheeler 2024). The
random axes have the length of the weights (filter normalization); the Hessian axes are
scaled to r = sqrt(2 / lambda_1), where the quadratic model predicts a loss rise of 1 at
the edge of the plot: both panels then span comparable losses, and the printed lengths show
how much narrower the basin is along the sharpest directions. Near zero training loss the
cross-entropy is far from quadratic (the Hessian describes only a small neighbourhood): the
printed second differences d^2L/dt^2 on the grid are compared with lambda_i r^2.

With BatchNorm, the surface also depends on the BN policy: ``bn="eval"`` keeps the running
statistics of the trained model fixed (the model as deployed; Li et al.), ``bn="recompute"``
re-estimates them at every grid point (two extra passes per point), which removes part of
the apparent sharpness: a perturbed network with re-estimated statistics is a better network.

Run: ``.venv/bin/python examples/hessian_vs_random_axes.py [--quick] [--no-figure]``
(about 75 s on 2 CPU cores; ``--quick``: 7 x 7 grids on 256 samples).
Writes figures/hessian_vs_random_axes.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import landscape as ls
from landscape.demo import accuracy, cnn, digits_loaders, train

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def norm(direction: dict[str, torch.Tensor]) -> float:
    return float(torch.sqrt(sum(t.pow(2).sum() for t in direction.values())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced smoke-test mode")
    parser.add_argument("--no-figure", action="store_true", help="do not write the figure")
    args = parser.parse_args()

    samples, epochs, num = (256, 10, 7) if args.quick else (None, 20, 17)
    loader, test = digits_loaders(batch_size=64, num_samples=samples)
    torch.manual_seed(0)
    model = cnn(batchnorm=True)
    train(model, loader, optimizer="sgd", lr=0.05, momentum=0.9, epochs=epochs)
    _, acc = accuracy(model, test)
    print(f"BatchNorm CNN on digits ({len(loader.dataset)} samples): test accuracy {acc:.1%}")

    random = ls.random_directions(model, n=2, norm="filter", ignore="biasbn", seed=0)
    pairs = ls.eigenvalues(ls.hessian(model, loader), k=2)  # unit eigenvectors
    lam = pairs.values.tolist()
    radius = (2.0 / lam[0]) ** 0.5  # 0.5 * lambda_1 * radius**2 = 1
    hessian = [{n: t * radius for n, t in d.items()} for d in pairs.named_vectors]
    print(
        f"top Hessian eigenvalues {lam[0]:.4g}, {lam[1]:.4g}; axis lengths: Hessian "
        f"r = sqrt(2 / lambda_1) = {radius:.3g}, random (filter-normalized) "
        f"{norm(random[0]):.3g} and {norm(random[1]):.3g}"
    )

    coords = np.linspace(-1, 1, num)
    surfaces, labels = [], []
    for bn in ("eval", "recompute"):
        for axes, dirs in (("Hessian", hessian), ("random", random)):
            start = time.perf_counter()
            s = ls.surface(model, loader, directions=dirs, coords=coords, bn=bn, progress=False)
            curvature = [s.curvature_at_origin(axis=i) for i in (0, 1)]
            quadratic = ""
            if axes == "Hessian":
                quadratic = f" (quadratic model {lam[0] * radius**2:.3g}, {lam[1] * radius**2:.3g})"
            print(
                f"{axes:>7} axes, bn={bn!r:<11}: loss {s.origin_loss:.4f} at the origin, "
                f"max {np.nanmax(s.loss):.3g} on the grid; d^2L/dt^2 at the origin along the "
                f"axes {curvature[0]:.3g}, {curvature[1]:.3g}{quadratic} "
                f"({s.num_points} points, {time.perf_counter() - start:.1f} s)"
            )
            surfaces.append(s)
            length = radius if axes == "Hessian" else norm(random[0])
            labels.append(f"{axes} axes (length {length:.2g}), bn={bn!r}")

    if not args.no_figure:
        import matplotlib

        matplotlib.use("Agg")

        fig = ls.plot_surfaces(surfaces, labels, log=True)
        FIGURES.mkdir(exist_ok=True)
        path = FIGURES / "hessian_vs_random_axes.png"
        fig.savefig(path, dpi=110)
        print(f"figure written to {path}")


if __name__ == "__main__":
    main()
