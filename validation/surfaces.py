r"""Validation: loss surfaces, filter normalization and the BatchNorm policy, via the public API.

Reproduces with ``landscape``'s public functions (``ls.random_directions``,
``ls.hessian_directions``, ``ls.surface``, ``Surface.width``, ``Surface.curvature_at_origin``,
``ls.hessian``, ``ls.eigenvalues``, ``ls.plot_surface_1d``, ``ls.plot_surfaces``):

A. **Scale invariance** (Dinh, Pascanu, Bengio, Bengio 2017; the motivation of Li et al.'s
   filter normalization). Multiplying a ReLU layer by :math:`\alpha` and the next by
   :math:`1/\alpha` leaves the function unchanged; along filter-normalized random directions
   (same seed) the two surfaces are identical, while raw Gaussian directions
   (``norm=None``) see different widths.
B. **The sharp-vs-flat dilemma** (Li, Xu, Taylor, Studer, Goldstein, NeurIPS 2018, §4-5).
   Small-batch (SB) and large-batch (LB) SGD, without and with weight decay, plus Adam and
   AdamW: weight decay shrinks the weights of the many-step SB run most, and unnormalized
   plots then make the SB minimum look *sharper* than the LB one; with filter normalization
   the comparison is no longer driven by the weight scale. Measured: widths of 1-D surfaces
   (``Surface.width`` at a loss increase of 0.1, geometric mean over random directions) and
   grid curvatures at the origin, for ``norm=None`` and ``norm="filter"``.
C. **BatchNorm policy**. ``bn="eval"`` keeps the running statistics fixed at every grid point
   (the deployed model, as in Li et al.'s code); ``bn="recompute"`` re-estimates them at every
   point (as mode-connectivity work does). Frozen statistics cannot absorb the shift and
   rescaling that a perturbation of a filter causes before its BatchNorm, so minima look
   sharper. ``landscape``'s README and ``surface`` docstring say "about 8x on a small BN
   model"; we measure the ratio of curvatures eval/recompute along the top-2 Hessian
   eigenvectors (the sharpest directions of the eval-mode function, ``ls.hessian_directions``),
   along filter-normalized random directions, and between the top eigenvalues of the two
   functions (the recompute function's Hessian is ``ls.hessian(..., mode="train")`` on one
   full batch: batch statistics of the whole training set, which is what recomputing the
   running statistics gives up to the n/(n-1) variance factor).

Setup: a small BN CNN (conv8-BN-ReLU-conv16-BN-ReLU-maxpool-fc32-ReLU-fc10, 9,850
parameters) on 1,438 of sklearn's 8x8 digits (bundled; seeded 80 % split, 359 test images),
trained 20 epochs with momentum 0.9 from one initialization: SB = batch 16, lr 0.02; LB =
batch 512, lr 0.1; weight decay 0 or 5e-3 (SGD, coupled L2); Adam lr 1e-3 batch 16; AdamW lr
1e-3, weight decay 0.5 (decoupled), batch 16. Surfaces are training-loss surfaces. Part C
uses a float64 copy of the models (second differences with h = 0.01).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python validation/surfaces.py [--quick]``. Full: a few
minutes on 2 CPU cores; writes ``figures/validation/surfaces_{scale,widths,bn,bn_plane}.png`` and
``validation/results/surfaces.json``. ``--quick`` (SB SGD without and with weight
decay only, trained and evaluated on 512 samples, 2 directions, part C on one minimum without
widths or 2-D plots; about 15 s) writes ``*_quick`` files instead.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import landscape as ls

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "figures" / "validation"
RESULTS = ROOT / "validation" / "results"
THRESHOLD = 0.1  # loss increase that defines a basin's width
ALPHA = 4.0  # Dinh et al. rescaling factor in part A (a power of 2: the rescaling is exact)
# Step of the second differences in part C. ReLU and max-pool kinks are dense (about a million
# unit-sample pairs): at h <= 1e-4 the second difference jumps with the kinks it happens to
# cross; h = 1e-2 averages over them and stays within ~15-50 % of the Hessian's d^T H d.
H_STEP = 1e-2

PUBLISHED = {
    "li_2018": (
        "VGG-9/CIFAR-10, batch 128 vs 8192: without weight decay SB looks flatter in both "
        "unnormalized and filter-normalized plots; with weight decay 5e-4 unnormalized plots "
        "make SB look sharper (its weights are smaller), filter-normalized plots show SB "
        "flatter again, and filter-normalized sharpness tracks test error"
    ),
    "dinh_2017": "function-preserving layer rescaling changes unnormalized sharpness arbitrarily",
    "landscape_readme_bn": "bn='eval' made a small BN model's minimum look about 8x sharper "
    "than bn='recompute' (no setup given)",
}


@dataclass(frozen=True)
class Recipe:
    """How one minimum is trained.

    Attributes
    ----------
    name : str
        Identifier.
    optimizer : {"sgd", "adam", "adamw"}
        ``torch.optim.SGD`` (momentum 0.9), ``Adam`` or ``AdamW``.
    batch_size : int
        Mini-batch size.
    lr : float
        Learning rate.
    weight_decay : float
        Coupled L2 (SGD, Adam) or decoupled (AdamW) weight decay.
    epochs : int
        Training epochs.
    """

    name: str
    optimizer: str
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    epochs: int = 20


SGD_SB = Recipe("sgd_sb", "sgd", 16, 0.02)
SGD_LB = Recipe("sgd_lb", "sgd", 512, 0.1)
SGD_SB_WD = Recipe("sgd_sb_wd", "sgd", 16, 0.02, 5e-3)
SGD_LB_WD = Recipe("sgd_lb_wd", "sgd", 512, 0.1, 5e-3)
ADAM = Recipe("adam", "adam", 16, 1e-3)
ADAMW = Recipe("adamw", "adamw", 16, 1e-3, 0.5)

#: Pairs compared in part B: (name, first, second, what differs).
PAIRS = (
    ("SB vs LB, no weight decay", "sgd_sb", "sgd_lb"),
    ("SB vs LB, weight decay 5e-3", "sgd_sb_wd", "sgd_lb_wd"),
    ("SGD vs Adam, no weight decay", "sgd_sb", "adam"),
    ("SGD vs AdamW (decoupled wd 0.5)", "sgd_sb", "adamw"),
    ("SB: weight decay 0 vs 5e-3", "sgd_sb", "sgd_sb_wd"),
)


@dataclass(frozen=True)
class Variant:
    """Sizes of the full or quick variant.

    Attributes
    ----------
    recipes : tuple of Recipe
        Minima trained.
    pairs : tuple of str
        Labels of the ``PAIRS`` compared.
    samples : int or None
        Training samples used for training and for the surfaces (None: all 1,438).
    directions : int
        Random directions per model and normalization.
    filter_coords, raw_coords : numpy.ndarray
        1-D grids for ``norm="filter"`` and ``norm=None``.
    bn_models : tuple of str
        Minima examined in part C.
    bn_hessian : int
        Top Hessian eigenvectors used as directions in part C.
    bn_random : int
        Filter-normalized random directions in part C.
    plane : str or None
        Minimum whose widths (1-D surfaces) and 2-D top-Hessian-plane surfaces (17 x 17) are
        also computed for both policies in part C (the others get curvatures only).
    """

    recipes: tuple[Recipe, ...]
    pairs: tuple[str, ...]
    samples: int | None
    directions: int
    filter_coords: np.ndarray
    raw_coords: np.ndarray
    bn_models: tuple[str, ...]
    bn_hessian: int
    bn_random: int
    plane: str | None


FULL = Variant(
    recipes=(SGD_SB, SGD_LB, SGD_SB_WD, SGD_LB_WD, ADAM, ADAMW),
    pairs=tuple(p[0] for p in PAIRS),
    samples=None,
    directions=4,
    filter_coords=np.linspace(-1.0, 1.0, 61),
    raw_coords=np.linspace(-0.25, 0.25, 51),
    bn_models=tuple(r.name for r in (SGD_SB, SGD_LB, SGD_SB_WD, SGD_LB_WD, ADAM, ADAMW)),
    bn_hessian=2,
    bn_random=4,
    plane="sgd_lb",
)
QUICK = Variant(
    recipes=(SGD_SB, SGD_SB_WD),
    pairs=("SB: weight decay 0 vs 5e-3",),
    samples=512,
    directions=2,
    filter_coords=np.linspace(-1.0, 1.0, 41),
    raw_coords=np.linspace(-0.25, 0.25, 51),
    bn_models=("sgd_sb_wd",),
    bn_hessian=1,
    bn_random=2,
    plane=None,
)


def load_digits() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Return sklearn's digits as float32 ``(X_train, y_train, X_test, y_test)``.

    Returns
    -------
    tuple of Tensor
        1,438 training and 359 test images of shape ``(1, 8, 8)`` (seeded split), in [0, 1].
    """
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    X = torch.tensor(digits.data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
    split = int(0.8 * len(X))
    train, test = order[:split], order[split:]
    return X[train], y[train], X[test], y[test]


def make_model(seed: int = 0) -> nn.Sequential:
    """Return the small BN CNN (9,850 parameters), initialized from ``seed``.

    Parameters
    ----------
    seed : int, optional
        Initialization seed (every recipe starts from the same weights).

    Returns
    -------
    torch.nn.Sequential
        ``conv1-bn1-relu-conv2-bn2-relu-pool-flatten-fc1-relu-fc2``.
    """
    torch.manual_seed(seed)
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 8, 3, padding=1),
            bn1=nn.BatchNorm2d(8),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(8, 16, 3, padding=1),
            bn2=nn.BatchNorm2d(16),
            relu2=nn.ReLU(),
            pool=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc1=nn.Linear(256, 32),
            relu3=nn.ReLU(),
            fc2=nn.Linear(32, 10),
        )
    )


def train(recipe: Recipe, X: Tensor, y: Tensor) -> nn.Module:
    """Train the CNN with one recipe (seeded data order); return it in eval mode.

    Parameters
    ----------
    recipe : Recipe
        Optimizer, batch size, learning rate, weight decay and epochs.
    X, y : Tensor
        Training data.

    Returns
    -------
    torch.nn.Module
        The trained model.
    """
    model = make_model()
    params = model.parameters()
    if recipe.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay)
    elif recipe.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    gen = torch.Generator().manual_seed(0)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X), recipe.batch_size):
            idx = order[i : i + recipe.batch_size]
            opt.zero_grad()
            loss_fn(model(X[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def weight_norm(model: nn.Module) -> float:
    r"""Return the Euclidean norm of the conv and linear weights (tensors with dim >= 2).

    Parameters
    ----------
    model : torch.nn.Module
        The model.

    Returns
    -------
    float
        :math:`\lVert W\rVert_2` over all weight matrices and filters.
    """
    return float(
        torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.dim() > 1]).norm()
    )


def _gmean(values: list[float]) -> float:
    return float(np.exp(np.mean(np.log(np.abs(values)))))


def widths(model: nn.Module, data: list, variant: Variant, seeds: range) -> dict[str, Any]:
    """1-D surfaces along random directions: widths and grid curvatures per normalization.

    Parameters
    ----------
    model : torch.nn.Module
        The minimum.
    data : list of batches
        Training data for the surfaces.
    variant : Variant
        Grids and direction count.
    seeds : range
        Direction seeds (shared by all models, so every model sees the same Gaussian draws).

    Returns
    -------
    dict
        For ``"filter"`` and ``"none"``: per-direction widths and curvatures, their geometric
        means, and the surfaces (under ``"_surfaces"``, for the figures).
    """
    out: dict[str, Any] = {}
    for label, norm, coords in (
        ("filter", "filter", variant.filter_coords),
        ("none", None, variant.raw_coords),
    ):
        ws, cs, surfaces = [], [], []
        for seed in seeds:
            dirs = ls.random_directions(model, n=1, norm=norm, seed=seed)
            s = ls.surface(model, data, directions=dirs, coords=coords, progress=False)
            ws.append(s.width(THRESHOLD))
            cs.append(s.curvature_at_origin())
            surfaces.append(s)
        out[label] = {
            "widths": ws,
            "curvatures": cs,
            "width": _gmean(ws),
            "curvature": _gmean(cs),
            "hits_grid_end": any(w >= coords[-1] - coords[0] - 1e-12 for w in ws),
            "_surfaces": surfaces,
        }
    return out


def rescaled(model: nn.Module, alpha: float) -> nn.Module:
    """Return a copy computing the same function: fc1 times ``alpha``, fc2 weights over it.

    Parameters
    ----------
    model : torch.nn.Module
        The CNN (``fc1 -> ReLU -> fc2``; ReLU is positively homogeneous).
    alpha : float
        Scale factor.

    Returns
    -------
    torch.nn.Module
        The rescaled copy.
    """
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.fc1.weight.mul_(alpha)
        other.fc1.bias.mul_(alpha)
        other.fc2.weight.div_(alpha)
    return other


def scale_invariance(model: nn.Module, data: list, variant: Variant) -> dict[str, Any]:
    """Part A: surfaces of a model and of its function-preserving rescaling.

    Parameters
    ----------
    model : torch.nn.Module
        A trained minimum.
    data : list of batches
        Training data for the surfaces.
    variant : Variant
        Grids and direction count.

    Returns
    -------
    dict
        Output difference of the two models, per-normalization width ratios and the largest
        loss difference between the two surfaces on the grid.
    """
    other = rescaled(model, ALPHA)
    X = data[0][0]
    with torch.no_grad():
        output_diff = float((model(X) - other(X)).abs().max())
    seeds = range(variant.directions)
    a, b = widths(model, data, variant, seeds), widths(other, data, variant, seeds)
    out: dict[str, Any] = {"alpha": ALPHA, "max_output_difference": output_diff}
    for label in ("filter", "none"):
        diffs = [
            float(np.max(np.abs(sa.loss - sb.loss)))
            for sa, sb in zip(a[label]["_surfaces"], b[label]["_surfaces"])
        ]
        out[label] = {
            "width_original": a[label]["width"],
            "width_rescaled": b[label]["width"],
            "width_ratio": b[label]["width"] / a[label]["width"],
            "curvature_ratio": b[label]["curvature"] / a[label]["curvature"],
            "max_loss_difference": max(diffs),
            "_pair": (a[label]["_surfaces"][0], b[label]["_surfaces"][0]),
        }
    return out


def bn_policy(model: nn.Module, data: list, variant: Variant, plane: bool) -> dict[str, Any]:
    r"""Part C: curvature under frozen (eval) vs recomputed BatchNorm statistics.

    Parameters
    ----------
    model : torch.nn.Module
        A trained BN minimum (evaluated in a float64 copy).
    data : list of batches
        Training data (one batch: recomputed statistics are then the full-data ones).
    variant : Variant
        Direction counts.
    plane : bool
        Also measure widths, and the 2-D surfaces on the plane of the top-2 Hessian
        eigenvectors.

    Returns
    -------
    dict
        Along the top eval-Hessian eigenvectors and along filter-normalized random
        directions: curvature at the origin (h = ``H_STEP``; widths too with ``plane``)
        for both policies and their ratios, with the operators' Rayleigh quotients
        :math:`d^\top H d` (eval, and batch statistics of the full data) as cross-checks;
        the top eigenvalues of both Hessians.
    """
    start = time.perf_counter()
    m64 = copy.deepcopy(model).double()
    data64 = [(x.double(), t) for x, t in data]
    h = H_STEP
    H_eval = ls.hessian(m64, data64)
    H_batch = ls.hessian(m64, data64, mode="train")
    eig_dirs = ls.hessian_directions(m64, data64, k=max(variant.bn_hessian, 2 if plane else 1))
    lam_batch = float(ls.eigenvalues(H_batch, k=1, tol=1e-6).values[0])
    rand_dirs = [ls.random_directions(m64, n=1, seed=100 + s)[0] for s in range(variant.bn_random)]
    out: dict[str, Any] = {}
    for kind, dirs, coords in (
        ("hessian", eig_dirs[: variant.bn_hessian], np.linspace(-0.5, 0.5, 41)),
        ("random", rand_dirs, variant.filter_coords),
    ):
        rows = []
        for d in dirs:
            v = H_eval.params_to_vector(d)
            row: dict[str, Any] = {
                "rayleigh_eval": float(v @ (H_eval @ v)),
                "rayleigh_batch_statistics": float(v @ (H_batch @ v)),
            }
            for bn in ("eval", "recompute"):
                local = ls.surface(
                    m64,
                    data64,
                    directions=d,
                    coords=[-h, 0.0, h],
                    bn=bn,
                    progress=False,
                )
                row[f"curvature_{bn}"] = local.curvature_at_origin()
                row[f"origin_loss_{bn}"] = local.origin_loss
                if plane:
                    wide = ls.surface(
                        m64,
                        data64,
                        directions=d,
                        coords=coords,
                        bn=bn,
                        progress=False,
                    )
                    row[f"width_{bn}"] = wide.width(THRESHOLD)
                    row[f"_surface_{bn}"] = wide
            row["curvature_ratio"] = row["curvature_eval"] / row["curvature_recompute"]
            if plane:
                row["width_ratio"] = row["width_recompute"] / row["width_eval"]
            rows.append(row)
        out[kind] = {
            "directions": rows,
            "curvature_ratio_gmean": _gmean([r["curvature_ratio"] for r in rows]) if rows else None,
        }
        if plane and rows:
            out[kind]["width_ratio_gmean"] = _gmean([r["width_ratio"] for r in rows])
    lam_eval = out["hessian"]["directions"][0]["rayleigh_eval"]
    out["lambda_max_eval"] = lam_eval
    out["lambda_max_batch_statistics"] = lam_batch
    out["lambda_max_ratio"] = lam_eval / lam_batch
    if plane:
        coords = np.linspace(-0.5, 0.5, 17)
        out["_plane"] = {
            bn: ls.surface(
                m64,
                data64,
                directions=eig_dirs[:2],
                coords=coords,
                bn=bn,
                progress=False,
            )
            for bn in ("eval", "recompute")
        }
    out["seconds"] = time.perf_counter() - start
    return out


def run_all(quick: bool = False, verbose: bool = True) -> dict[str, Any]:
    """Train the minima and run parts A, B and C.

    Parameters
    ----------
    quick : bool, optional
        Reduced variant.
    verbose : bool, optional
        Print progress.

    Returns
    -------
    dict
        ``{"variant", "setup", "models", "scale", "pairs", "bn"}``.
    """
    variant = QUICK if quick else FULL
    X, y, X_test, y_test = load_digits()
    n = variant.samples or len(X)
    X, y = X[:n], y[:n]
    data = [(X, y)]
    loss_fn = nn.CrossEntropyLoss()
    models, results = {}, {}
    seeds = range(variant.directions)
    for recipe in variant.recipes:
        start = time.perf_counter()
        model = train(recipe, X, y)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            train_loss = float(loss_fn(model(X), y))
            test_acc = float((model(X_test).argmax(1) == y_test).float().mean())
        start = time.perf_counter()
        w = widths(model, data, variant, seeds)
        models[recipe.name] = model
        results[recipe.name] = {
            "recipe": asdict(recipe),
            "train_seconds": seconds,
            "surface_seconds": time.perf_counter() - start,
            "train_loss": train_loss,
            "test_accuracy": test_acc,
            "weight_norm": weight_norm(model),
            **w,
        }
        if verbose:
            print(
                f"{recipe.name:10s} train loss {train_loss:.4f} test acc {test_acc:.3f} "
                f"|W| {results[recipe.name]['weight_norm']:.2f} | width filter "
                f"{w['filter']['width']:.3f} none {w['none']['width']:.4f} | curvature filter "
                f"{w['filter']['curvature']:.3g} none {w['none']['curvature']:.3g} "
                f"({seconds:.1f} s + {results[recipe.name]['surface_seconds']:.1f} s)"
            )
    pairs = {}
    for label, first, second in PAIRS:
        if label not in variant.pairs:
            continue
        a, b = results[first], results[second]
        pairs[label] = {
            "first": first,
            "second": second,
            "weight_norm_ratio": a["weight_norm"] / b["weight_norm"],
            **{f"width_ratio_{k}": a[k]["width"] / b[k]["width"] for k in ("filter", "none")},
            **{
                f"curvature_ratio_{k}": a[k]["curvature"] / b[k]["curvature"]
                for k in ("filter", "none")
            },
        }
        if verbose:
            p = pairs[label]
            print(
                f"  {label:32s} |W| ratio {p['weight_norm_ratio']:.2f} | width ratio "
                f"none {p['width_ratio_none']:.2f} filter {p['width_ratio_filter']:.2f} | "
                f"curvature ratio none {p['curvature_ratio_none']:.2f} "
                f"filter {p['curvature_ratio_filter']:.2f}"
            )
    scale_model = variant.recipes[0].name
    scale = scale_invariance(models[scale_model], data, variant)
    scale["model"] = scale_model
    if verbose:
        print(
            f"A. rescaling fc1 x{ALPHA:g}, fc2 / {ALPHA:g} ({scale_model}; outputs differ by "
            f"{scale['max_output_difference']:.1e}): width ratio none "
            f"{scale['none']['width_ratio']:.3f}, filter {scale['filter']['width_ratio']:.3f}; "
            f"max loss difference filter {scale['filter']['max_loss_difference']:.1e}"
        )
    bn = {}
    for name in variant.bn_models:
        bn[name] = bn_policy(models[name], data, variant, plane=name == variant.plane)
        if verbose:
            r = bn[name]
            print(
                f"C. {name}: eval/recompute curvature, top-2 Hessian directions "
                + ", ".join(f"{d['curvature_ratio']:.2f}" for d in r["hessian"]["directions"])
                + f"; random (gmean) {r['random']['curvature_ratio_gmean']:.2f}; "
                f"lambda_max eval {r['lambda_max_eval']:.3g} vs batch statistics "
                f"{r['lambda_max_batch_statistics']:.3g} (x{r['lambda_max_ratio']:.2f}) "
                f"[{r['seconds']:.1f} s]"
            )
    setup = {
        "data": f"sklearn digits 8x8, seeded split: {n} training samples (for training and "
        "surfaces), 359 test images",
        "model": "conv8-BN-ReLU-conv16-BN-ReLU-maxpool-fc32-ReLU-fc10 (9,850 parameters)",
        "threshold": THRESHOLD,
        "directions": variant.directions,
        "filter_coords": [
            float(variant.filter_coords[0]),
            float(variant.filter_coords[-1]),
            len(variant.filter_coords),
        ],
        "raw_coords": [
            float(variant.raw_coords[0]),
            float(variant.raw_coords[-1]),
            len(variant.raw_coords),
        ],
    }
    return {
        "variant": "quick" if quick else "full",
        "setup": setup,
        "models": results,
        "pairs": pairs,
        "scale": scale,
        "bn": bn,
        "bn_figure_model": variant.plane or variant.bn_models[0],
    }


def write_figures(report: dict[str, Any], suffix: str = "") -> list[Path]:
    """Write the scale-invariance, width-comparison and BatchNorm figures.

    Parameters
    ----------
    report : dict
        Result of :func:`run_all`.
    suffix : str, optional
        Appended to the file names (``"_quick"`` for the reduced variant).

    Returns
    -------
    list of Path
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGURES.mkdir(parents=True, exist_ok=True)
    paths = []

    scale = report["scale"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    for ax, label in zip(axes, ("none", "filter")):
        a, b = scale[label]["_pair"]
        ax.plot(a.coords[0], a.loss, label="original")
        ax.plot(b.coords[0], b.loss, "--", label=f"fc1 x{ALPHA:g}, fc2 / {ALPHA:g} (same function)")
        ax.set_xlabel("coordinate along the direction (seed 0)")
        ax.set_ylabel("training loss")
        ax.set_title(
            f"norm={'None' if label == 'none' else repr(label)}: width ratio "
            f"{scale[label]['width_ratio']:.3f}",
            fontsize="medium",
        )
        ax.legend(fontsize="small")
    paths.append(FIGURES / f"surfaces_scale{suffix}.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    models = report["models"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), layout="constrained")
    for ax, label in zip(axes[:2], ("none", "filter")):
        for name, r in models.items():
            s = r[label]["_surfaces"][0]
            ax.plot(s.coords[0], s.loss, label=f"{name} (|W| {r['weight_norm']:.1f})")
        ax.set_ylim(0, 1.5)
        ax.set_xlabel("coordinate (direction seed 0)")
        ax.set_ylabel("training loss")
        ax.set_title(f"norm={'None' if label == 'none' else repr(label)}", fontsize="medium")
        ax.legend(fontsize="small")
    ax = axes[2]
    names = list(models)
    x = np.arange(len(names))
    for offset, label in ((-0.2, "none"), (0.2, "filter")):
        values = [models[n][label]["width"] / models[names[0]][label]["width"] for n in names]
        ax.bar(x + offset, values, 0.4, label=f"norm={'None' if label == 'none' else repr(label)}")
    ax.axhline(1.0, color="0.4", linewidth=0.8)
    ax.set_xticks(x, names, rotation=20)
    ax.set_ylabel(f"width at +{THRESHOLD} loss / width of {names[0]}")
    ax.set_title("geometric mean over random directions", fontsize="medium")
    ax.legend(fontsize="small")
    paths.append(FIGURES / f"surfaces_widths{suffix}.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    bn = report["bn"]
    wide = any("_surface_eval" in r["hessian"]["directions"][0] for r in bn.values())
    fig, axes = plt.subplots(
        1, 2 if wide else 1, figsize=(13 if wide else 7, 4.2), layout="constrained"
    )
    axes = np.atleast_1d(axes)
    ax = axes[0]
    names = list(bn)
    x = np.arange(len(names))
    bars = {
        "top Hessian eigenvector": [
            r["hessian"]["directions"][0]["curvature_ratio"] for r in bn.values()
        ],
        "random filter-normalized (gmean)": [
            r["random"]["curvature_ratio_gmean"] or np.nan for r in bn.values()
        ],
        "λ_max(eval) / λ_max(batch statistics)": [r["lambda_max_ratio"] for r in bn.values()],
    }
    for i, (label, values) in enumerate(bars.items()):
        ax.bar(x + (i - 1) * 0.27, values, 0.27, label=label)
    ax.axhline(1.0, color="0.4", linewidth=0.8)
    ax.axhline(8.0, color="0.4", linestyle=":", linewidth=0.8, label="README: about 8x")
    ax.set_yscale("log")
    ax.set_xticks(x, names, rotation=20)
    ax.set_ylabel("curvature ratio bn='eval' / bn='recompute'")
    ax.set_title("BatchNorm policy: how much sharper frozen statistics look", fontsize="medium")
    ax.legend(fontsize="small")
    if wide:
        ax = axes[1]
        name = report["bn_figure_model"]
        row = bn[name]["hessian"]["directions"][0]
        for policy in ("eval", "recompute"):
            s = row[f"_surface_{policy}"]
            ax.plot(
                s.coords[0], s.loss, label=f"bn={policy!r} (width {row[f'width_{policy}']:.2f})"
            )
        ax.set_xlabel("coordinate along the top Hessian eigenvector (unit norm)")
        ax.set_ylabel("training loss")
        ax.set_title(f"{name}: 1-D surface along the top eigenvector", fontsize="medium")
        ax.legend(fontsize="small")
    paths.append(FIGURES / f"surfaces_bn{suffix}.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    for name, r in bn.items():
        if "_plane" not in r:
            continue
        planes = r["_plane"]
        fig = ls.plot_surfaces(
            [planes["eval"], planes["recompute"]],
            labels=[f"{name}: bn='eval'", f"{name}: bn='recompute'"],
            log=True,
        )
        fig.suptitle(f"{name}: plane of the top-2 eval-Hessian eigenvectors", fontsize="medium")
        paths.append(FIGURES / f"surfaces_bn_plane{suffix}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_results(report: dict[str, Any], path: Path, seconds: float) -> None:
    """Write the results (without the surface objects) as JSON.

    Parameters
    ----------
    report : dict
        Result of :func:`run_all`.
    path : Path
        Output file.
    seconds : float
        Wall time of the run.
    """
    payload = {
        "variant": report["variant"],
        "setup": report["setup"],
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "landscape": ls.__version__,
            "threads": torch.get_num_threads(),
        },
        "published": PUBLISHED,
        "total_seconds": round(seconds, 1),
        **{k: report[k] for k in ("models", "pairs", "scale", "bn")},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(payload), indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status (0).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced variant (~15 s)")
    parser.add_argument("--no-output", action="store_true", help="write no figures nor JSON")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    report = run_all(quick=args.quick)
    seconds = time.perf_counter() - start
    print(f"total {seconds:.1f} s")
    if not args.no_output:
        suffix = "_quick" if args.quick else ""
        for path in write_figures(report, suffix):
            print(f"figure written to {path.relative_to(ROOT)}")
        path = RESULTS / f"surfaces{suffix}.json"
        write_results(report, path, seconds)
        print(f"results written to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
