r"""Validation: bulk + outliers in Hessian spectra (Sagun et al.; Papyan), via the public API.

Reproduces the spectrum structure of trained classifiers with ``landscape``'s public functions
(``ls.hessian``, ``ls.gauss_newton``, ``ls.eigenvalues``, ``ls.find_outliers``,
``ls.spectral_density``, ``ls.plot_spectral_density``):

1. **C outliers** (Sagun, Bottou, LeCun 2016; Sagun, Evci, Güney, Dauphin, Bottou 2017;
   Papyan 2019, 2020). The Hessian spectrum of a trained classifier is a bulk near zero plus
   about C outliers (C = number of classes). For the square loss on one-hot targets the
   mechanism is exact (REFERENCES §6): the Hessian block of the linear output layer is
   :math:`\frac{2}{C} I_C \otimes M` for ``nn.MSELoss()`` (mean over the :math:`nC` entries),
   :math:`M = \frac1n\sum_i a_i a_i^\top`, :math:`a_i = [\text{penultimate features}; 1]`.
   ReLU features have a large common mean, so :math:`M` has one dominant eigenvalue and
   :math:`H` has C near-degenerate outliers. With softmax cross-entropy the logits matter only
   up to a common shift, so C - 1 outliers are expected (Papyan).
2. **Honest "no clear gap"**. Without the common-mean structure (tanh features of
   standardized inputs, no biases anywhere: odd activation, centred inputs, no constant
   coordinate) :math:`M` has no dominant eigenvalue, and the tool must report no clear gap
   rather than invent outliers. Two ablations (ReLU without biases on standardized inputs:
   ReLU features still have a positive mean; tanh with biases on raw [0, 1] pixels: the
   constant coordinate and the feature means are back) show that the common mean, not the
   activation, decides.

Setup: MLP 64-32-32-10 (3,466 parameters with biases, 3,392 without), float64, trained with
plain SGD (lr 0.1, batch 64, 30 epochs, seed 0) on 1,438 of sklearn's 8x8 digits (bundled
with scikit-learn; a seeded 80 % split, the other 359 images for test accuracy). Outlier count
by the log-gap rule of REFERENCES §6 on the top k = 3C converged Lanczos eigenvalues
(``ls.eigenvalues`` + ``ls.find_outliers``, gap ratio > 1.3) and independently inside
``ls.spectral_density`` (SLQ; first probe's converged Ritz values); cross-check: the SLQ
quadrature mass above the bulk edge should be about c/P (within a factor 2: with n_v probes
the estimate is a chi-square-like average over n_v·c degrees of freedom). The exact
mechanism is checked on the output-layer block (``ls.hessian(..., params="4")``, block
Lanczos with ``block_size=C`` so the C-fold eigenvalue is found with its multiplicity)
against :math:`\frac{2}{C}\lambda_1(M)` computed directly from the features. The full variant
also follows the ReLU/MSE count along training (0 to 300 epochs).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python validation/spectrum.py [--quick]``. Full: about a
minute on 2 CPU cores; writes ``figures/validation/spectrum_{density,top}.png`` and
``validation/results/spectrum.json``. ``--quick`` (three settings, 4 x 40 SLQ, no ablations
and no training trajectory; about 10 s) writes ``*_quick`` files instead.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
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
CLASSES = 10
GAP = 1.3  # minimum ratio lambda_c / lambda_{c+1} accepted as a gap (REFERENCES §6)

PUBLISHED = {
    "sagun_2016_2017": "bulk near 0 plus about C outliers; the data (classes) set the outliers",
    "papyan_2019_2020": (
        "C outliers from the class means of the Gauss-Newton term; C - 1 visible with "
        "softmax cross-entropy; outlier mass ~ c/P, visible only on a log-density axis"
    ),
    "references_md_s6_slq_mass": {
        "measured": 5.4e-4,
        "c_over_P": 5.7e-4,
        "note": "5 probes; error chi-square-like, give a 2x band",
    },
}


@dataclass(frozen=True)
class Setting:
    """One trained network whose spectrum is analysed.

    Attributes
    ----------
    name : str
        Identifier used in the results and figures.
    activation : {"relu", "tanh"}
        Hidden nonlinearity.
    loss : {"mse", "ce"}
        ``nn.MSELoss()`` on one-hot targets or ``nn.CrossEntropyLoss()``.
    standardize : bool
        Standardize the input pixels (zero mean, unit variance per pixel) instead of [0, 1].
    bias : bool
        Biases in every linear layer.
    predicted : int
        Outlier count the theory predicts (0: no clear gap).
    role : str
        Short description for the tables.
    """

    name: str
    activation: str
    loss: str
    standardize: bool
    bias: bool
    predicted: int
    role: str


RELU_MSE = Setting("relu_mse", "relu", "mse", False, True, CLASSES, "ReLU, MSE: C outliers")
RELU_CE = Setting("relu_ce", "relu", "ce", False, True, CLASSES - 1, "ReLU, CE: C-1 outliers")
CONTROL = Setting(
    "tanh_mse_centred", "tanh", "mse", True, False, 0, "control: no common mean, no gap"
)
ABLATIONS = (
    Setting(
        "relu_mse_centred", "relu", "mse", True, False, CLASSES, "ablation: ReLU, no bias, centred"
    ),
    Setting("tanh_mse_raw", "tanh", "mse", False, True, CLASSES, "ablation: tanh, bias, raw"),
)


@dataclass(frozen=True)
class Variant:
    """Sizes of the full or quick variant.

    Attributes
    ----------
    settings : tuple of Setting
        Networks analysed.
    epochs : int
        Training epochs of every network.
    k : int
        Top eigenvalues computed for the log-gap rule.
    probes, steps : int
        SLQ probes and Lanczos steps.
    trajectory : tuple of int
        Epochs at which the ReLU/MSE count is followed (empty: skipped).
    """

    settings: tuple[Setting, ...]
    epochs: int = 30
    k: int = 3 * CLASSES
    probes: int = 10
    steps: int = 80
    trajectory: tuple[int, ...] = ()


FULL = Variant(
    settings=(RELU_MSE, RELU_CE, CONTROL, *ABLATIONS), trajectory=(0, 1, 3, 10, 30, 100, 300)
)
QUICK = Variant(settings=(RELU_MSE, RELU_CE, CONTROL), probes=4, steps=40)


def load_digits() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Return sklearn's digits as float64 ``(X_train, y_train, X_test, y_test)``.

    Returns
    -------
    tuple of Tensor
        1,438 training and 359 test images (seeded split), pixels in [0, 1].
    """
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    X = torch.tensor(digits.data / 16.0, dtype=torch.float64)
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
    split = int(0.8 * len(X))
    train, test = order[:split], order[split:]
    return X[train], y[train], X[test], y[test]


def make_model(setting: Setting, seed: int = 0) -> nn.Sequential:
    """Return the MLP 64-32-32-10 of a setting in float64 (indices 0, 2, 4 are linear).

    Parameters
    ----------
    setting : Setting
        Activation and biases.
    seed : int, optional
        Initialization seed.

    Returns
    -------
    torch.nn.Sequential
        The model.
    """
    torch.manual_seed(seed)
    act = {"relu": nn.ReLU, "tanh": nn.Tanh}[setting.activation]
    b = setting.bias
    model = nn.Sequential(
        nn.Linear(64, 32, bias=b),
        act(),
        nn.Linear(32, 32, bias=b),
        act(),
        nn.Linear(32, 10, bias=b),
    )
    return model.double()


def _inputs(setting: Setting, X: Tensor, X_train: Tensor) -> Tensor:
    if not setting.standardize:
        return X
    return (X - X_train.mean(0)) / (X_train.std(0) + 1e-8)


def _targets(setting: Setting, y: Tensor) -> Tensor:
    return nn.functional.one_hot(y, CLASSES).double() if setting.loss == "mse" else y


def _loss_fn(setting: Setting) -> nn.Module:
    return nn.MSELoss() if setting.loss == "mse" else nn.CrossEntropyLoss()


def _epochs(model: nn.Module, setting: Setting, X: Tensor, T: Tensor, epochs: int, gen: Any):
    loss_fn = _loss_fn(setting)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X), 64):
            idx = order[i : i + 64]
            opt.zero_grad()
            loss_fn(model(X[idx]), T[idx]).backward()
            opt.step()


def output_block_check(model: nn.Module, X: Tensor, T: Tensor, setting: Setting) -> dict:
    r"""Check the exact output-layer mechanism :math:`H_{\text{out}} = \frac{2}{C} I_C\otimes M`.

    Parameters
    ----------
    model : torch.nn.Module
        Trained MLP (output layer ``"4"``).
    X, T : Tensor
        Training inputs and targets.
    setting : Setting
        Its setting (MSE only gives the Kronecker form).

    Returns
    -------
    dict
        Eigenvalues of :math:`M` (top 3, ratio :math:`\lambda_1/\lambda_2`), the common-mean
        share :math:`\lVert\bar a\rVert^2/\operatorname{tr}M`, and for MSE the top ``C + 1``
        block eigenvalues from ``ls.eigenvalues`` with their relative deviation from
        :math:`\frac2C\lambda_1(M)` (first C) and :math:`\frac2C\lambda_2(M)` (the next).
    """
    with torch.no_grad():
        feats = model[:4](X)
    if model[4].bias is not None:
        feats = torch.cat([feats, torch.ones(len(X), 1, dtype=feats.dtype)], 1)
    M = feats.T @ feats / len(X)
    m_eig = torch.linalg.eigvalsh(M).flip(0)
    mean = feats.mean(0)
    out: dict[str, Any] = {
        "M_top3": m_eig[:3].tolist(),
        "M_ratio_1_2": float(m_eig[0] / m_eig[1]),
        "common_mean_share": float(mean @ mean / torch.trace(M)),
    }
    if setting.loss == "mse":
        block = ls.hessian(model, [(X, T)], loss_fn=_loss_fn(setting), params="4")
        ev = ls.eigenvalues(block, k=CLASSES + 1, block_size=CLASSES, tol=1e-10)
        expected = 2 / CLASSES * torch.cat([m_eig[:1].expand(CLASSES), m_eig[1:2]])
        out["block_top"] = ev.values.tolist()
        out["block_rel_error"] = float(((ev.values - expected).abs() / expected).max())
    return out


def analyse(model: nn.Module, X: Tensor, T: Tensor, setting: Setting, variant: Variant) -> dict:
    """Top eigenvalues, outlier count, SLQ density and Gauss-Newton count of a trained network.

    Parameters
    ----------
    model : torch.nn.Module
        The trained network.
    X, T : Tensor
        Training inputs and targets (one batch: the operators are exact means over it).
    setting : Setting
        The network's setting.
    variant : Variant
        Sizes (k, probes, steps).

    Returns
    -------
    dict
        Results (JSON-ready) plus the ``SpectralDensity`` under ``"_density"``.
    """
    data = [(X, T)]
    loss_fn = _loss_fn(setting)
    P = sum(p.numel() for p in model.parameters())
    H = ls.hessian(model, data, loss_fn=loss_fn)
    start = time.perf_counter()
    top = ls.eigenvalues(H, k=variant.k, tol=1e-6)
    lanczos_seconds = time.perf_counter() - start
    outliers, edge, ratio = ls.find_outliers(top.values, gap=GAP)
    values = top.values.double()
    ratios = (values[:-1] / values[1:]).tolist()
    start = time.perf_counter()
    density = ls.spectral_density(H, num_probes=variant.probes, num_steps=variant.steps, seed=0)
    slq_seconds = time.perf_counter() - start
    mass = None
    if density.bulk_edge is not None:
        # midway between the top bulk Ritz value and the lowest outlier: other probes' top
        # bulk Ritz values may lie a little above the first probe's
        threshold = 0.5 * (density.bulk_edge + float(density.outliers.min()))
        above = (density.nodes > threshold).to(density.weights.dtype)
        mass = float((density.weights * above).sum(1).mean())
    G = ls.gauss_newton(model, data, loss_fn=loss_fn)
    g_top = ls.eigenvalues(G, k=variant.k, tol=1e-6)
    g_outliers, _, g_ratio = ls.find_outliers(g_top.values, gap=GAP)
    c = density.num_outliers
    return {
        "P": P,
        "top_eigenvalues": values.tolist(),
        "top_residuals": top.residuals.tolist(),
        "top_converged": top.all_converged,
        "consecutive_ratios": ratios,
        "lanczos": {
            "num_outliers": int(outliers.numel()),
            "gap_ratio": ratio,
            "bulk_edge": edge,
            "num_matvecs": top.num_matvecs,
            "seconds": lanczos_seconds,
        },
        "slq": {
            "num_outliers": c,
            "gap_ratio": density.gap_ratio,
            "bulk_edge": density.bulk_edge,
            "outliers": density.outliers.tolist(),
            "mass_above_edge": mass,
            "c_over_P": c / P if c else None,
            "mass_over_c_over_P": mass / (c / P) if c and mass is not None else None,
            "probes": variant.probes,
            "steps": variant.steps,
            "sigma": density.sigma,
            "negative_mass_ratio": density.negative_mass_ratio,
            "num_passes": density.num_passes,
            "seconds": slq_seconds,
        },
        "gauss_newton": {
            "num_outliers": int(g_outliers.numel()),
            "gap_ratio": g_ratio,
            "top": g_top.values.tolist()[:12],
        },
        "_density": density,
        "_top": top,
    }


def run_setting(
    setting: Setting, data: tuple[Tensor, ...], variant: Variant, verbose: bool = True
) -> dict:
    """Train one network, analyse its spectrum and check the output-layer mechanism.

    Parameters
    ----------
    setting : Setting
        The network and loss.
    data : tuple of Tensor
        ``load_digits()``.
    variant : Variant
        Sizes.
    verbose : bool, optional
        Print a summary line.

    Returns
    -------
    dict
        Training metrics, ``analyse`` results and the mechanism check.
    """
    X_train, y_train, X_test, y_test = data
    X, Xt = _inputs(setting, X_train, X_train), _inputs(setting, X_test, X_train)
    T = _targets(setting, y_train)
    model = make_model(setting)
    start = time.perf_counter()
    _epochs(model, setting, X, T, variant.epochs, torch.Generator().manual_seed(0))
    train_seconds = time.perf_counter() - start
    with torch.no_grad():
        train_loss = float(_loss_fn(setting)(model(X), T))
        train_acc = float((model(X).argmax(1) == y_train).double().mean())
        test_acc = float((model(Xt).argmax(1) == y_test).double().mean())
    result = {
        "setting": asdict(setting),
        "train_loss": train_loss,
        "train_accuracy": train_acc,
        "test_accuracy": test_acc,
        "train_seconds": train_seconds,
        **analyse(model, X, T, setting, variant),
        "mechanism": output_block_check(model, X, T, setting),
    }
    mech = result["mechanism"]
    if "block_top" in mech:
        # Cauchy interlacing: the output block is a principal submatrix of H, so
        # lambda_C(H) >= lambda_C(block) = (2/C) lambda_1(M).
        lam_C = result["top_eigenvalues"][CLASSES - 1]
        mech["interlacing_lambda_C"] = lam_C
        mech["interlacing_holds"] = lam_C >= mech["block_top"][CLASSES - 1] * (1 - 1e-9)
    if verbose:
        lz, slq = result["lanczos"], result["slq"]
        mass = slq["mass_over_c_over_P"]
        print(
            f"{setting.name:18s} P={result['P']} loss {train_loss:.4f} "
            f"train/test acc {train_acc:.3f}/{test_acc:.3f} | predicted {setting.predicted:2d} "
            f"| Lanczos+log-gap {lz['num_outliers']:2d} (ratio {lz['gap_ratio']:.2f}) "
            f"| SLQ {slq['num_outliers']:2d} (ratio {slq['gap_ratio']:.2f}"
            + (f", mass/(c/P) {mass:.2f})" if mass is not None else ")")
            + f" | GN {result['gauss_newton']['num_outliers']:2d} "
            f"| M l1/l2 {result['mechanism']['M_ratio_1_2']:.1f}"
        )
    return result


def trajectory(data: tuple[Tensor, ...], epochs: tuple[int, ...], k: int) -> list[dict]:
    """Follow the ReLU/MSE outlier count along training (one run, checkpoints at ``epochs``).

    Parameters
    ----------
    data : tuple of Tensor
        ``load_digits()``.
    epochs : tuple of int
        Increasing checkpoint epochs.
    k : int
        Top eigenvalues per checkpoint.

    Returns
    -------
    list of dict
        Per checkpoint: epoch, training loss and accuracy, outlier count, gap ratio, top 12.
    """
    X_train, y_train, _, _ = data
    T = _targets(RELU_MSE, y_train)
    model = make_model(RELU_MSE)
    gen = torch.Generator().manual_seed(0)
    rows, done = [], 0
    for epoch in epochs:
        _epochs(model, RELU_MSE, X_train, T, epoch - done, gen)
        done = epoch
        H = ls.hessian(model, [(X_train, T)], loss_fn=nn.MSELoss())
        top = ls.eigenvalues(H, k=k, tol=1e-6)
        outliers, _, ratio = ls.find_outliers(top.values, gap=GAP)
        with torch.no_grad():
            out = model(X_train)
        rows.append(
            {
                "epoch": epoch,
                "train_loss": float(nn.MSELoss()(out, T)),
                "train_accuracy": float((out.argmax(1) == y_train).double().mean()),
                "num_outliers": int(outliers.numel()),
                "gap_ratio": ratio,
                "ratio_at_C": float(top.values[CLASSES - 1] / top.values[CLASSES]),
                "top": top.values.tolist()[:12],
            }
        )
    return rows


def run_all(quick: bool = False, verbose: bool = True) -> dict[str, Any]:
    """Run every setting of the variant (and the training trajectory in the full variant).

    Parameters
    ----------
    quick : bool, optional
        Reduced variant (three settings, smaller SLQ, no trajectory).
    verbose : bool, optional
        Print progress.

    Returns
    -------
    dict
        ``{"variant", "setup", "settings": {name: result}, "trajectory": [...]}``.
    """
    variant = QUICK if quick else FULL
    data = load_digits()
    settings = {s.name: run_setting(s, data, variant, verbose) for s in variant.settings}
    rows = trajectory(data, variant.trajectory, variant.k) if variant.trajectory else []
    if verbose:
        for row in rows:
            print(
                f"  relu_mse epoch {row['epoch']:3d}: loss {row['train_loss']:.4f} acc "
                f"{row['train_accuracy']:.3f} -> {row['num_outliers']} outliers "
                f"(largest ratio {row['gap_ratio']:.2f}, "
                f"lambda_C/lambda_C+1 {row['ratio_at_C']:.2f})"
            )
    setup = {
        "data": "sklearn digits 8x8, 1438 train / 359 test (seeded split), float64",
        "model": "MLP 64-32-32-10",
        "training": f"SGD lr 0.1, batch 64, {variant.epochs} epochs, seed 0",
        "classes": CLASSES,
        "gap": GAP,
        "k": variant.k,
        "slq": {"probes": variant.probes, "steps": variant.steps},
    }
    return {
        "variant": "quick" if quick else "full",
        "setup": setup,
        "settings": settings,
        "trajectory": rows,
    }


def write_figures(report: dict[str, Any], suffix: str = "") -> list[Path]:
    """Write the density and top-eigenvalue figures.

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
    settings = report["settings"]
    shown = [n for n in ("relu_mse", "relu_ce", "tanh_mse_centred") if n in settings]
    fig, axes = plt.subplots(1, len(shown), figsize=(5.2 * len(shown), 3.8), layout="constrained")
    for ax, name in zip(np.atleast_1d(axes), shown):
        r = settings[name]
        ls.plot_spectral_density(r["_density"], ax=ax)
        slq = r["slq"]
        verdict = (
            f"{slq['num_outliers']} outliers, mass/(c/P) = {slq['mass_over_c_over_P']:.2f}"
            if slq["num_outliers"]
            else f"no clear gap (largest ratio {slq['gap_ratio']:.2f})"
        )
        ax.set_title(f"{r['setting']['role']}\nSLQ: {verdict}", fontsize="medium")
    density_path = FIGURES / f"spectrum_density{suffix}.png"
    fig.savefig(density_path, dpi=110)
    plt.close(fig)

    ncols = 2 if report["trajectory"] else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.5 * ncols, 4.2), layout="constrained")
    axes = np.atleast_1d(axes)
    ax = axes[0]
    for name, r in settings.items():
        v = np.asarray(r["top_eigenvalues"])
        ax.semilogy(
            np.arange(1, len(v) + 1),
            v,
            "o-",
            markersize=3,
            label=f"{name}: {r['lanczos']['num_outliers']} (pred. {r['setting']['predicted']})",
        )
    ax.axvline(CLASSES + 0.5, color="0.5", linestyle="--", linewidth=0.8)
    ax.axvline(CLASSES - 0.5, color="0.7", linestyle=":", linewidth=0.8)
    ax.set_xlabel("index j (dashed: between C and C+1; dotted: C-1 and C)")
    ax.set_ylabel("Hessian eigenvalue λ_j (Lanczos, converged)")
    ax.set_title("Top 3C eigenvalues; legend: outliers by the log-gap rule", fontsize="medium")
    ax.legend(fontsize="small")
    if report["trajectory"]:
        ax = axes[1]
        rows = report["trajectory"]
        x = [max(r["epoch"], 0.5) for r in rows]
        ax.semilogx(x, [r["gap_ratio"] for r in rows], "o-", label="largest ratio λ_c/λ_c+1")
        ax.semilogx(x, [r["ratio_at_C"] for r in rows], "s--", label="λ_C/λ_C+1 (C = 10)")
        ax.axhline(GAP, color="0.5", linestyle=":", label=f"gap threshold {GAP}")
        for xi, r in zip(x, rows):
            ax.annotate(
                str(r["num_outliers"]),
                (xi, r["gap_ratio"]),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
            )
        ax.set_xlabel("epoch (0 plotted at 0.5); labels: outlier count")
        ax.set_ylabel("gap ratio")
        ax.set_title("ReLU/MSE along training", fontsize="medium")
        ax.legend(fontsize="small")
    top_path = FIGURES / f"spectrum_top{suffix}.png"
    fig.savefig(top_path, dpi=110)
    plt.close(fig)
    return [density_path, top_path]


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_results(report: dict[str, Any], path: Path, seconds: float) -> None:
    """Write the results (without the density objects) as JSON.

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
        "settings": report["settings"],
        "trajectory": report["trajectory"],
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
    parser.add_argument("--quick", action="store_true", help="reduced variant (~10 s)")
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
        path = RESULTS / f"spectrum{suffix}.json"
        write_results(report, path, seconds)
        print(f"results written to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
