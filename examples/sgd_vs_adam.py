"""SGD vs Adam from one initialization: are their minima different, and how?

Trains the demo's MLP on sklearn digits from ONE initialization twice (SGD with momentum
0.9, and Adam; same batch order), then:

* `ls.compare` analyzes both minima with the same budget and random choices (each with its
  own optimizer for the learning-rate analysis) and prints them side by side. Measures that
  are not invariant to function-preserving rescalings (lambda_max, trace, ...) are flagged:
  a difference there may be a scale artifact (Dinh et al. 2017); ASAM and PAC-Bayes-mag are
  the invariant ones.
* The linear path between the two minima gives the loss barrier (linear mode connectivity,
  Frankle et al. 2020): from a shared initialization, both optimizers often land in one
  connected basin.
* `ls.plane` draws the loss on the plane through the initialization and the two minima
  (Garipov et al. 2018), with Euclidean coordinates: how far each optimizer travelled, and
  in which direction.

Run: ``.venv/bin/python examples/sgd_vs_adam.py [--quick] [--no-figure]``
(about 30 s on 2 CPU cores; ``--quick``: the demo's reduced mode).
Writes figures/sgd_vs_adam.png (plane and interpolation) and figures/sgd_vs_adam_surfaces.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import landscape as ls
from landscape.demo import train_pair

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced smoke-test mode")
    parser.add_argument("--no-figure", action="store_true", help="do not write the figures")
    args = parser.parse_args()

    pair = train_pair("digits", quick=args.quick, seed=0)
    sgd, adam = pair.models["SGD"], pair.models["Adam"]
    comparison = ls.compare(
        pair.models,
        pair.train,
        budget="fast" if args.quick else "standard",
        optimizers=pair.optimizers,
        progress=False,
    )
    print(comparison.summary())

    distances = {
        name: torch.cat(
            [(p - q).flatten() for p, q in zip(m.parameters(), pair.initial.parameters())]
        ).norm()
        for name, m in pair.models.items()
    }
    between = torch.cat([(p - q).flatten() for p, q in zip(sgd.parameters(), adam.parameters())])
    print(
        f"\ndistance travelled from the initialization: SGD {distances['SGD']:.3g}, "
        f"Adam {distances['Adam']:.3g}; between the minima: {between.norm():.3g}"
    )
    barrier = comparison.interpolation.barrier
    print(f"loss barrier on the straight line SGD -> Adam: {barrier:.4g}")

    num = 15 if args.quick else 41
    plane = ls.plane(pair.initial, sgd, adam, pair.train, num=num, progress=False)
    coords = plane.settings["model_coords"]
    print(
        f"plane through (init, SGD, Adam): {num} x {num} points; models at "
        + ", ".join(f"({x:.2f}, {y:.2f})" for x, y in coords)
    )

    if not args.no_figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
        ls.plot_surface_2d(plane, ax=axes[0], kind="filled", log=True)
        axes[0].set_title("loss on the plane through A = init, B = SGD, C = Adam")
        line = comparison.interpolation.path
        axes[1].plot(line.coords[0], line.loss, "o-", markersize=3)
        axes[1].set_xlabel("t   (θ = (1 - t) θ_SGD + t θ_Adam)")
        axes[1].set_ylabel("training loss")
        axes[1].set_title(f"linear interpolation SGD → Adam (barrier {barrier:.3g})")
        FIGURES.mkdir(exist_ok=True)
        path = FIGURES / "sgd_vs_adam.png"
        fig.savefig(path, dpi=110)
        print(f"figure written to {path}")
        surfaces = comparison.plot("surfaces_2d")
        path = FIGURES / "sgd_vs_adam_surfaces.png"
        surfaces.savefig(path, dpi=110)
        print(f"figure written to {path}")


if __name__ == "__main__":
    main()
