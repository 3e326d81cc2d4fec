"""SGD, AdamW and Muon from one initialization: three minima, and how each optimizer is judged.

Trains the demo's MLP on sklearn digits from ONE initialization three times, on the same
batches: SGD with momentum 0.9, AdamW, and Muon for the weight matrices with AdamW for the
biases (torch's Muon takes 2-D parameters only). Then:

* `ls.compare` analyzes the three minima with the same budget and random choices, each with
  its own optimizer(s) for the learning-rate analysis, and prints them side by side with
  the findings. Each optimizer gets the answer that fits its update rule
  (`ls.describe_optimizer`): SGD a threshold on the Hessian itself, AdamW a threshold on the
  Hessian preconditioned by its own second-moment state (exact for the frozen dynamics),
  Muon + AdamW the critical sharpness along their own update — where the next step starts
  to raise the loss, which is not a divergence threshold for a normalized update.
* The loss barrier between the SGD and AdamW minima (linear mode connectivity).

Run: ``.venv/bin/python examples/three_optimizers.py [--quick] [--no-figure]``
(about 1.5 minutes on 2 CPU cores; ``--quick``: a smaller model and budget, under a minute).
Writes figures/three_optimizers.png (the 2-D surfaces on one color scale).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

import landscape as ls
from landscape.demo import accuracy, digits_loaders, mlp

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def optimizers_for(name: str, model: nn.Module) -> list[torch.optim.Optimizer]:
    """The optimizer(s) one run trains with."""
    if name == "SGD":
        return [torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)]
    if name == "AdamW":
        return [torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)]
    matrices = [p for p in model.parameters() if p.dim() == 2]
    rest = [p for p in model.parameters() if p.dim() != 2]
    return [torch.optim.Muon(matrices, lr=0.02), torch.optim.AdamW(rest, lr=2e-3)]


def train(model: nn.Module, loader, optimizers, epochs: int, seed: int) -> float:
    """Train in place on reshuffled batches (the same order for every run); return the loss."""
    generator = torch.Generator().manual_seed(seed)
    batches = torch.utils.data.DataLoader(
        loader.dataset, batch_size=loader.batch_size, shuffle=True, generator=generator
    )
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        for inputs, targets in batches:
            for opt in optimizers:
                opt.zero_grad()
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            for opt in optimizers:
                opt.step()
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    model.eval()
    return accuracy(model, loader)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced smoke-test mode")
    parser.add_argument("--no-figure", action="store_true", help="do not write the figure")
    args = parser.parse_args()

    samples, hidden, epochs = (384, (32,), 15) if args.quick else (None, (64,), 40)
    train_loader, test_loader = digits_loaders(batch_size=64, num_samples=samples)
    torch.manual_seed(0)
    initial = mlp(64, hidden, 10)
    models, optimizers = {}, {}
    for name in ("SGD", "AdamW", "Muon"):
        model = copy.deepcopy(initial)
        opts = optimizers_for(name, model)
        loss = train(model, train_loader, opts, epochs, seed=0)
        test_loss, test_acc = accuracy(model, test_loader)
        print(
            f"trained {name:<5} ({' + '.join(type(o).__name__ for o in opts)}, {epochs} epochs):"
            f" train loss {loss:.4f}, test loss {test_loss:.4f}, test accuracy {test_acc:.1%}"
        )
        models[name] = model
        optimizers[name] = opts if len(opts) > 1 else opts[0]

    print("\nwhich answer each optimizer gets:")
    for name in ("SGD", "AdamW", "Muon"):
        support = ls.describe_optimizer(optimizers_for(name, copy.deepcopy(initial))[0])
        print(f"  {name:<5} {support.measure} ({support.exactness}): {support.reason}")

    comparison = ls.compare(
        models,
        train_loader,
        budget="fast" if args.quick else "standard",
        optimizers=optimizers,
        progress=False,
    )
    print()
    print(comparison.summary())

    print("\nlargest stable learning rate at the loader's batch size, per optimizer in use:")
    for name, report in comparison.reports.items():
        rates = report.learning_rate
        own = rates.own
        i = int(np.argmin(np.abs(np.log(own.batch_sizes / rates.loader_batch_size))))
        print(
            f"  {name:<5} lr {own.current_lr:.3g}  lr_max {own.lr_max[i]:.4g} at B = "
            f"{own.batch_sizes[i]} ({own.measure}; rests on {own.rests_on})"
        )
    barrier = comparison.interpolation.barrier
    print(f"loss barrier on the straight line SGD -> AdamW: {barrier:.4g}")

    if not args.no_figure:
        import matplotlib

        matplotlib.use("Agg")
        figure = comparison.plot("surfaces_2d")
        FIGURES.mkdir(exist_ok=True)
        path = FIGURES / "three_optimizers.png"
        figure.savefig(path, dpi=110)
        print(f"figure written to {path}")


if __name__ == "__main__":
    main()
