"""Outliers near the bulk edge, the BBP transition, and a heavy-tailed log-scale density.

Papyan, "Traces of class/cross-class structure pervade deep learning spectra" (JMLR 2020),
Fig. 15 (also curvlinops' verification example):

* 15a: Y = diag(5, 4, 3, 0, ...) + Z Z^T / 2000, n = 2000, Z i.i.d. N(0, 1): three outliers
  just above a Marchenko-Pastur bulk whose edge is near 4, every consecutive ratio small.
* 15b: Y = Z Z^T / 1000, Z in R^{500 x 1000} i.i.d. Pareto(alpha = 1): a heavy-tailed
  spectrum over six decades, readable only on a log axis.

And the spiked Wigner model W + theta u u^T (W GOE, semicircle on [-2, 2]): an outlier at
theta + 1/theta exactly when theta > 1 (Baik, Ben Arous & Peche 2005; Peche 2006).

Everything through ``ls.spectral_density`` (10 probes x 80 steps) against ``eigvalsh``.
How to run: ``.venv/bin/python validation/papyan_outliers.py``; writes
``validation/results/papyan_outliers.json`` and ``figures/validation/papyan_outliers.png``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

import landscape as ls

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "validation" / "results"
FIGURES = ROOT / "figures" / "validation"


def papyan_15a(n: int = 2000, seed: int = 0) -> torch.Tensor:
    """Build Fig. 15a's matrix.

    Returns
    -------
    Tensor
        ``diag(5, 4, 3, 0, ...) + Z Z^T / n``, float64.
    """
    g = torch.Generator().manual_seed(seed)
    Z = torch.randn(n, n, generator=g, dtype=torch.float64)
    Y = Z @ Z.T / n
    Y[0, 0] += 5.0
    Y[1, 1] += 4.0
    Y[2, 2] += 3.0
    return Y


def papyan_15b(seed: int = 0) -> torch.Tensor:
    """Build Fig. 15b's matrix.

    Returns
    -------
    Tensor
        ``Z Z^T / 1000`` with ``Z`` 500 x 1000 i.i.d. Pareto(1), float64.
    """
    rng = np.random.default_rng(seed)
    Z = torch.tensor(rng.pareto(1.0, (500, 1000)) + 1.0)
    return Z @ Z.T / 1000


def spiked_wigner(theta: float, n: int = 1000, seed: int = 0) -> torch.Tensor:
    """Build ``W + theta u u^T``.

    Returns
    -------
    Tensor
        The matrix, float64.
    """
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, n, generator=g, dtype=torch.float64)
    W = (W + W.T) / (2 * n) ** 0.5
    u = torch.randn(n, generator=g, dtype=torch.float64)
    return W + theta * torch.outer(u, u) / u.norm() ** 2


def run_all() -> dict[str, Any]:
    """Measure the three settings.

    Returns
    -------
    dict
        Exact and estimated outliers, edges, separations, the BBP sweep and the log-scale
        Kolmogorov distance.
    """
    Y = papyan_15a()
    exact = torch.linalg.eigvalsh(Y).flip(0)
    d = ls.spectral_density(Y, num_probes=10, num_steps=80)
    ratio_rule = ls.find_outliers(exact[:12], gap=1.3)[0].numel()
    a = {
        "exact_top4": exact[:4].tolist(),
        "outliers": d.outliers.tolist(),
        "bulk_edge": d.bulk_edge,
        "separations_sigma": d.outlier_separations.tolist(),
        "sigma": d.sigma,
        "ratio_rule_count": ratio_rule,
        "_density": d,
    }
    sweep = []
    for theta in (0.5, 0.8, 0.9, 1.5, 2.0, 3.0):
        A = spiked_wigner(theta, seed=int(theta * 10))
        top = float(torch.linalg.eigvalsh(A)[-1])
        dw = ls.spectral_density(A, num_probes=10, num_steps=80)
        sweep.append(
            {
                "theta": theta,
                "theory_outliers": int(theta > 1),
                "theory_location": theta + 1 / theta if theta > 1 else None,
                "exact_top": top,
                "found": dw.num_outliers,
                "found_values": dw.outliers.tolist(),
            }
        )
    B = papyan_15b()
    log_exact = torch.log10(torch.linalg.eigvalsh(B))
    db = ls.spectral_density(B, num_probes=10, num_steps=80)
    u, psi, below = db.log_density()
    cdf = torch.cumulative_trapezoid(psi, u)
    empirical = (log_exact[None, :] <= u[1:, None]).double().mean(1)
    b = {
        "decades": float(log_exact.max() - log_exact.min()),
        "kolmogorov_distance": float((cdf - empirical).abs().max()),
        "mass_below_floor": below,
        "_log": (u, psi, log_exact),
    }
    return {"papyan_15a": a, "bbp": sweep, "papyan_15b": b}


def plot(results: dict[str, Any]) -> Path:
    """Draw 15a's density with its outliers and 15b's log-scale density with the histogram.

    Returns
    -------
    Path
        The figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    d = results["papyan_15a"]["_density"]
    left.semilogy(d.grid, d.density.clamp_min(1e-8), lw=1)
    for x in results["papyan_15a"]["exact_top4"][:3]:
        left.axvline(x, color="C3", ls=":", lw=0.8)
    left.axvline(d.bulk_edge, color="0.4", ls="--", lw=0.8, label="bulk edge")
    left.set_ylim(1e-6, None)
    left.set_title("Papyan 15a: 3 outliers above the edge (dotted: exact)", fontsize="medium")
    left.set_xlabel("eigenvalue")
    left.legend()
    u, psi, log_exact = results["papyan_15b"]["_log"]
    right.hist(log_exact.numpy(), bins=60, density=True, alpha=0.4, label="exact")
    right.plot(u, psi, label="SLQ, log-scale density")
    right.set_xlabel("log10 eigenvalue")
    right.set_title("Papyan 15b: Pareto(1) data", fontsize="medium")
    right.legend()
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / "papyan_outliers.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def main() -> None:
    """Run, plot, print and write the JSON."""
    results = run_all()
    print(f"figure: {plot(results)}")
    a = results["papyan_15a"]
    print(
        f"15a: outliers {[round(x, 3) for x in a['outliers']]} (exact "
        f"{[round(x, 3) for x in a['exact_top4'][:3]]}), edge {a['bulk_edge']:.3f}, "
        f"separations {[round(x, 1) for x in a['separations_sigma']]} sigma; ratio rule "
        f"alone: {a['ratio_rule_count']}"
    )
    for row in results["bbp"]:
        print(f"BBP theta {row['theta']}: found {row['found']}, theory {row['theory_outliers']}")
    b = results["papyan_15b"]
    print(f"15b: {b['decades']:.1f} decades, Kolmogorov distance {b['kolmogorov_distance']:.3f}")
    a.pop("_density")
    b.pop("_log")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "papyan_outliers.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
