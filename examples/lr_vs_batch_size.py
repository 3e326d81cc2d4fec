"""The largest stable learning rate against the batch size, for SGD and for Adam.

One initialization of a 64-64-10 tanh MLP is trained on sklearn digits twice, with plain SGD
and with Adam. At each minimum, `ls.max_learning_rate` measures the top eigenvalue of
mini-batch Hessians (for Adam: preconditioned by the optimizer's own second-moment state)
over a sweep of batch sizes and turns it into lr_max(B) = c / lambda_1(B) (c = 2 for SGD,
(2 + 2 beta1) / (1 - beta1) = 38 for Adam). Expect lr_max to grow about linearly with B for
SGD and more slowly for Adam while gradient noise dominates, and to saturate beyond the
batch size B* of the fitted law lambda_1(B) = a + b/B (Granziol et al., JMLR 2022). For
plain SGD the exact mean-square threshold (Mulayoff & Michaeli 2023) is printed beside the
heuristic. In full mode, short training bursts at multiples of the prediction check it
(``verify=True``).

Run: ``.venv/bin/python examples/lr_vs_batch_size.py [--quick] [--no-figure]``
(about 20 s on 2 CPU cores; ``--quick``: three batch sizes, no verification).
Writes figures/lr_vs_batch_size.png.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

import landscape as ls
from landscape.demo import accuracy, digits_loaders, mlp, train

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced smoke-test mode")
    parser.add_argument("--no-figure", action="store_true", help="do not write the figure")
    args = parser.parse_args()

    if args.quick:
        samples, epochs, batch_sizes, num_batches = 256, 10, (8, 32, "full"), 3
    else:
        samples, epochs, batch_sizes, num_batches = None, 30, (4, 16, 64, 256, "full"), 8
    loader, test = digits_loaders(batch_size=32, num_samples=samples)
    torch.manual_seed(0)
    initial = mlp(64, (64,), 10)

    results = {}
    for name, kind, lr in (("SGD", "sgd", 0.1), ("Adam", "adam", 1e-3)):
        model = copy.deepcopy(initial)
        trained = train(model, loader, optimizer=kind, lr=lr, epochs=epochs)
        _, acc = accuracy(model, test)
        print(f"{name}: trained {epochs} epochs at lr = {lr:g}, batch 32: test accuracy {acc:.1%}")
        start = time.perf_counter()
        result = ls.max_learning_rate(
            model,
            loader,
            batch_sizes=batch_sizes,
            optimizer=trained.optimizer,  # its lr, betas and (Adam) preconditioner state
            num_batches=num_batches,
            exact_samples=32 if args.quick else 96,
            verify=not args.quick and ls.VerifySettings(steps=100),
            seed=0,
        )
        print(result.table())
        for v in result.verification:
            i = list(result.batch_sizes).index(v.batch_size)
            low, high = v.lr_stable or 0.0, v.lr_diverged or float("inf")
            verdict = "inside" if low <= result.lr_max[i] <= high else "outside"
            print(
                f"  B = {v.batch_size}: prediction {result.lr_max[i]:.3g} is {verdict} the "
                f"verified bracket [{low:.3g}, {high:.3g}]"
            )
        print(f"({time.perf_counter() - start:.1f} s)\n")
        results[name] = result

    sgd, adam = results["SGD"], results["Adam"]
    print(
        f"scaling d log lr_max / d log B: SGD {sgd.scaling_exponent:.2f}, "
        f"Adam {adam.scaling_exponent:.2f} (theory: about 1 and 1/2 for B << B*, "
        "tending to 0 beyond B*)"
    )

    if not args.no_figure:
        import matplotlib

        matplotlib.use("Agg")

        fig = ls.plot_learning_rates([sgd, adam], labels=["SGD", "Adam"])
        fig.axes[0].set_title("Largest stable learning rate vs batch size (digits MLP)")
        FIGURES.mkdir(exist_ok=True)
        path = FIGURES / "lr_vs_batch_size.png"
        fig.savefig(path, dpi=110)
        print(f"figure written to {path}")


if __name__ == "__main__":
    main()
