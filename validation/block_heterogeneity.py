"""Block heterogeneity of Hessian spectra: a transformer vs a ResNet-style CNN at initialization.

Zhang et al., "Why transformers need Adam: a Hessian perspective" (NeurIPS 2024,
arXiv:2402.16788): the spectra of a transformer's parameter blocks (embeddings, query/key/
value, attention output, MLP) differ strongly from block to block, a CNN's (ResNet-18,
VGG-16) do not. They measure it by JS^0, the mean Jensen-Shannon distance between the blocks'
SLQ densities at initialization, each spectrum normalized by its 10th-largest eigenvalue.

Here, through ``ls.block_spectra`` (all blocks in ``num_steps`` passes), both models at
initialization in float64, one block per weight matrix or kernel (biases and norms left out):

* transformer: ``transformers``' ``LlamaForCausalLM`` from a small config (no download):
  2 layers, d = 32, 4 heads, MLP 64, vocabulary 64, eager attention, untied embeddings; random
  token sequences of length 16. 16 blocks: the token embedding, q/k/v/o and gate/up/down of
  each layer, the output head - the paper's per-parameter blocks.
* CNN: a ResNet-style network on sklearn's 8 x 8 digits (10 classes, real images): a 3 x 3
  stem convolution to 16 channels, three basic blocks (6 middle 3 x 3 convolutions of equal
  width 16, BatchNorm, identity shortcuts), global average pooling, a linear head;
  torchvision's ResNet initialization. 8 blocks, the 6 equal middle ones making 15 of the 28
  pairs. BatchNorm in eval mode (``mode="eval"``, the library's default and the paper's
  ``model.eval()``): at initialization its running statistics are 0 and 1.

Besides the library's JS^0 (one Gaussian kernel of width 0.05 in units of each block's
10th-largest eigenvalue, shared by all blocks), each row records two diagnostics: per block
the ratio of its top to its 10th-largest eigenvalue, and JS^0 at other shared widths
(``common_width``), to show how much the verdict depends on the broadening.

What differs from the paper: 10^4-10^5 parameters instead of 10^7-10^8, digits and random
tokens instead of ImageNet and OpenWebText, 6 middle convolutions instead of ResNet-18's 16,
2-4 probes x 30-60 Lanczos steps instead of the paper's 10 x 100 (densities converged enough
to rank; see validation/block_heterogeneity.md). The claim tested is the ordering,
JS^0(transformer) > JS^0(CNN), seed by seed.

How to run: ``.venv/bin/python validation/block_heterogeneity.py [--quick] [--seeds 0 1 2]``;
writes ``validation/results/block_heterogeneity_{quick,full}.json`` and
``figures/validation/block_heterogeneity.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import landscape as ls
from landscape.linalg.block_density import js_distances, kth_largest, mean_js

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "validation" / "results"
FIGURES = ROOT / "figures" / "validation"

# (probes, Lanczos steps, CNN images, token sequences) per variant.
VARIANTS = {"quick": (2, 30, 64, 32), "full": (4, 60, 128, 64)}
# Diagnostic kernel widths, in units of each block's 10th-largest Ritz value.
COMMON_WIDTHS = (0.02, 0.05, 0.1, 0.2)


def transformer(seed: int, sequences: int) -> tuple[nn.Module, list[dict[str, torch.Tensor]]]:
    """Build a 2-layer Llama (d = 32, 4 heads) and batches of 8 random sequences of 16 tokens.

    Parameters
    ----------
    seed : int
        Seeds the initialization and the tokens.
    sequences : int
        Number of sequences (a multiple of 8).

    Returns
    -------
    tuple
        ``(model, batches)``, float64, eval mode, labels = input ids (HF shifts them).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=32,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(config).double().eval()
    g = torch.Generator().manual_seed(seed + 100)
    batches = []
    for _ in range(sequences // 8):
        ids = torch.randint(0, 64, (8, 16), generator=g)
        batches.append({"input_ids": ids, "labels": ids})
    return model, batches


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3 x 3 convolutions with BatchNorm and an identity shortcut."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Returns
        -------
        Tensor
            ``relu(x + bn2(conv2(relu(bn1(conv1(x))))))``.
        """
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(out)))


class ResNet(nn.Module):
    """A small ResNet: stem, ``depth`` basic blocks of one width, global pooling, linear head.

    Parameters
    ----------
    width, depth, channels, classes : int
        Channels of every convolution, basic blocks, input channels, classes.
    """

    def __init__(self, width: int = 16, depth: int = 3, channels: int = 1, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layers = nn.Sequential(*[BasicBlock(width) for _ in range(depth)])
        self.fc = nn.Linear(width, classes)
        for module in self.modules():  # torchvision's ResNet initialization
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the network.

        Returns
        -------
        Tensor
            The logits.
        """
        x = self.layers(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def digits(images: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``images`` of sklearn's 8 x 8 digits (a seeded choice), standardized, float64.

    Returns
    -------
    tuple of Tensor
        ``(X, y)``, ``X`` of shape ``(images, 1, 8, 8)``.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    order = torch.randperm(len(data.target), generator=torch.Generator().manual_seed(seed + 100))
    chosen = order[:images]
    X = torch.tensor(data.data, dtype=torch.float64)[chosen].reshape(-1, 1, 8, 8)
    return (X - X.mean()) / X.std(), torch.tensor(data.target)[chosen]


def cnn(seed: int, images: int) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Build the ResNet-style CNN and batches of 64 digits.

    Returns
    -------
    tuple
        ``(model, batches)``, float64.
    """
    torch.manual_seed(seed)
    model = ResNet().double()
    X, y = digits(images, seed)
    return model, [(X[i : i + 64], y[i : i + 64]) for i in range(0, images, 64)]


def weight_blocks(model: nn.Module) -> dict[str, list[str]]:
    """Map each weight matrix or kernel (two or more dimensions) to a block of its own.

    Returns
    -------
    dict
        ``{name: [name]}``.
    """
    return {n: [n] for n, p in model.named_parameters() if p.ndim >= 2}


def top_to_kth(result: ls.BlockSpectra, k: int = 10) -> list[float]:
    """Return each block's top Ritz value over its k-th largest (the normalizer's).

    Returns
    -------
    list of float
        One ratio per block.
    """
    return [kth_largest(d, 1) / kth_largest(d, k) for d in result.densities]


def common_width_js0(result: ls.BlockSpectra, width: float) -> float:
    """Recompute JS^0 with another shared kernel width (normalized units).

    Returns
    -------
    float
        JS^0 with the library's normalization and JS definition at that width.
    """
    return mean_js(js_distances(result.densities, normalize=result.normalize, width=width))


def measure(kind: str, seed: int, variant: str) -> dict[str, Any]:
    """Run ``ls.block_spectra`` on one model kind at one seed.

    Returns
    -------
    dict
        JS^0, the diagnostics, block names and sizes, costs, the distance matrix.
    """
    probes, steps, images, sequences = VARIANTS[variant]
    model, batches = transformer(seed, sequences) if kind == "transformer" else cnn(seed, images)
    start = time.process_time()
    result = ls.block_spectra(
        model, batches, blocks=weight_blocks(model), num_probes=probes, num_steps=steps, seed=seed
    )
    seconds = time.process_time() - start
    return {
        "heterogeneity": result.heterogeneity,
        "common_width": {str(w): common_width_js0(result, w) for w in COMMON_WIDTHS},
        "top_to_10th": top_to_kth(result),
        "names": list(result.names),
        "sizes": list(result.sizes),
        "num_passes": result.num_passes,
        "num_matvecs": result.num_matvecs,
        "cpu_seconds": seconds,
        "distances": result.distances.tolist(),
    }


def run_all(
    quick: bool = False, seeds: tuple[int, ...] = (0,), verbose: bool = True
) -> dict[str, Any]:
    """Measure both model kinds at each seed.

    Parameters
    ----------
    quick : bool, optional
        The quick variant (2 probes x 30 steps, 64 images, 32 sequences) instead of the
        full one (4 probes x 60 steps, 128 images, 64 sequences).
    seeds : tuple of int, optional
        Seeds of the initializations, the data choice and the probes.
    verbose : bool, optional
        Print a line per seed.

    Returns
    -------
    dict
        Settings and one row per seed.
    """
    variant = "quick" if quick else "full"
    probes, steps, images, sequences = VARIANTS[variant]
    rows = []
    for seed in seeds:
        row = {"seed": seed}
        for kind in ("transformer", "cnn"):
            row[kind] = measure(kind, seed, variant)
        rows.append(row)
        if verbose:
            t, c = row["transformer"], row["cnn"]
            print(
                f"seed {seed}: JS^0 transformer {t['heterogeneity']:.3f} "
                f"({len(t['names'])} blocks, {t['cpu_seconds']:.0f} s), CNN "
                f"{c['heterogeneity']:.3f} ({len(c['names'])} blocks, {c['cpu_seconds']:.0f} s); "
                f"width 0.2: {t['common_width']['0.2']:.3f} vs {c['common_width']['0.2']:.3f}",
                flush=True,
            )
    return {
        "variant": variant,
        "probes": probes,
        "steps": steps,
        "images": images,
        "sequences": sequences,
        "rows": rows,
    }


def short(name: str) -> str:
    """Shorten a parameter name for a tick label.

    Returns
    -------
    str
        The name without ``model.``, ``layers.``, ``.self_attn``, ``.mlp`` and ``.weight``.
    """
    for prefix in ("model.layers.", "model.", "layers."):
        name = name.replace(prefix, "")
    for part in (".self_attn", ".mlp", ".weight"):
        name = name.replace(part, "")
    return name


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
        labels = [short(n) for n in r["names"]]
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
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    results = run_all(quick=args.quick, seeds=tuple(args.seeds))
    print(f"figure: {plot(results)}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"block_heterogeneity_{results['variant']}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
