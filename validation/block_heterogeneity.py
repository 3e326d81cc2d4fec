"""Block heterogeneity of Hessian spectra: a transformer vs a CNN at initialization.

Zhang et al., "Why transformers need Adam: a Hessian perspective" (NeurIPS 2024,
arXiv:2402.16788): the spectra of a transformer's parameter blocks (embeddings, query/key/
value, attention output, MLP) differ strongly from block to block, a CNN's do not. They
measure it by JS^0, the mean Jensen-Shannon distance between the blocks' SLQ densities at
initialization, each normalized by its 10th-largest eigenvalue.

Here, through ``ls.block_spectra`` (all blocks in ``num_steps`` passes): a 2-layer GPT-2
built from a small ``transformers`` config (no download) on a synthetic token corpus, and a
3-layer CNN on 512 random 12x12 images, both at initialization with the same seeds; blocks are
the weight matrices and convolution kernels (biases and norms left out), float64.

What differs from the paper: models of 10^4-10^5 parameters instead of GPT-2 124M / ResNet-18,
random data instead of OpenWebText / ImageNet, so the values are not the paper's; the claim
tested is the ordering, JS^0(transformer) > JS^0(CNN), seed by seed.

How to run: ``.venv/bin/python validation/block_heterogeneity.py [--quick]``; writes
``validation/results/block_heterogeneity.json`` and
``figures/validation/block_heterogeneity.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

import landscape as ls

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "validation" / "results"
FIGURES = ROOT / "figures" / "validation"


def transformer(seed: int) -> tuple[nn.Module, list[dict[str, torch.Tensor]]]:
    """Build a 2-layer GPT-2 (d = 32, 2 heads) and 4 batches of 8 random sequences of 16.

    Returns
    -------
    tuple
        ``(model, batches)``, float64, eval mode, labels = input ids (HF shifts them).
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2, attn_implementation="eager"
    )
    model = GPT2LMHeadModel(config).double().eval()
    g = torch.Generator().manual_seed(seed + 100)
    batches = []
    for _ in range(4):
        ids = torch.randint(0, 64, (8, 16), generator=g)
        batches.append({"input_ids": ids, "labels": ids})
    return model, batches


def cnn(seed: int) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Build a 3-layer CNN and 4 batches of 128 random 12x12 images with 10 classes.

    8, 16, 16 channels, global average pooling, a 16 x 10 head: 512 samples give the
    Gauss-Newton part of every block full rank (512 x 9 > 2304), as a large dataset would.

    Returns
    -------
    tuple
        ``(model, batches)``, float64.
    """
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    ).double()
    g = torch.Generator().manual_seed(seed + 100)
    batches = [
        (
            torch.randn(128, 3, 12, 12, generator=g, dtype=torch.float64),
            torch.randint(0, 10, (128,), generator=g),
        )
        for _ in range(4)
    ]
    return model, batches


def weight_blocks(model: nn.Module) -> dict[str, list[str]]:
    """Map each weight matrix or kernel (two or more dimensions) to a block of its own.

    Returns
    -------
    dict
        ``{name: [name]}``.
    """
    return {n: [n] for n, p in model.named_parameters() if p.ndim >= 2}


def measure(kind: str, seed: int, probes: int, steps: int) -> dict[str, Any]:
    """Run ``ls.block_spectra`` on one model kind at one seed.

    Returns
    -------
    dict
        JS^0, block names and sizes, costs, the distance matrix.
    """
    model, batches = transformer(seed) if kind == "transformer" else cnn(seed)
    result = ls.block_spectra(
        model, batches, blocks=weight_blocks(model), num_probes=probes, num_steps=steps, seed=seed
    )
    return {
        "heterogeneity": result.heterogeneity,
        "names": list(result.names),
        "sizes": list(result.sizes),
        "num_passes": result.num_passes,
        "num_matvecs": result.num_matvecs,
        "distances": result.distances.tolist(),
        "_result": result,
    }


def run_all(quick: bool = False, verbose: bool = True) -> dict[str, Any]:
    """Measure both model kinds over the seeds (quick: one seed, 2 probes x 30 steps).

    Returns
    -------
    dict
        Settings and one row per seed.
    """
    seeds = (0,) if quick else (0, 1, 2)
    probes, steps = (2, 30) if quick else (4, 60)
    rows = []
    for seed in seeds:
        row = {"seed": seed}
        for kind in ("transformer", "cnn"):
            row[kind] = measure(kind, seed, probes, steps)
        rows.append(row)
        if verbose:
            print(
                f"seed {seed}: JS^0 transformer {row['transformer']['heterogeneity']:.3f} "
                f"({len(row['transformer']['names'])} blocks), CNN "
                f"{row['cnn']['heterogeneity']:.3f} ({len(row['cnn']['names'])} blocks)"
            )
    return {"quick": quick, "probes": probes, "steps": steps, "rows": rows}


def plot(results: dict[str, Any]) -> Path:
    """Draw the first seed's distance matrices side by side.

    Returns
    -------
    Path
        The figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    row = results["rows"][0]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, kind in zip(axes, ("transformer", "cnn"), strict=True):
        r = row[kind]
        image = ax.imshow(r["distances"], vmin=0, vmax=1, cmap="viridis")
        ax.set_title(f"{kind}: JS^0 = {r['heterogeneity']:.3f}", fontsize="medium")
        labels = [n.replace("transformer.", "").replace(".weight", "") for n in r["names"]]
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
    fig.colorbar(image, ax=axes, shrink=0.8, label="Jensen-Shannon distance")
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / "block_heterogeneity.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def main() -> None:
    """Run, plot and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    results = run_all(quick=args.quick)
    print(f"figure: {plot(results)}")
    for row in results["rows"]:
        for kind in ("transformer", "cnn"):
            row[kind].pop("_result")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"block_heterogeneity{'_quick' if args.quick else ''}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
