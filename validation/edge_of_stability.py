r"""Validation: Edge of Stability for GD, heavy ball and Adam, through ``landscape``'s public API.

Reproduces two published phenomena with :class:`landscape.SharpnessTracker`:

1. **Edge of Stability** (Cohen, Kaur, Li, Kolter, Talwalkar, ICLR 2021). Full-batch gradient
   descent with step size :math:`\eta` sharpens until :math:`S = \lambda_{\max}(H)` reaches
   :math:`2/\eta` and then hovers there (for the square loss, just above it), while the loss
   keeps falling over long times, non-monotonically. With heavy-ball momentum :math:`\beta`
   the level is :math:`(2+2\beta)/\eta`. A negative control with a small step size never
   reaches :math:`2/\eta`, although it becomes sharper than the :math:`2/\eta` of the
   large-step runs (so those were held down by their own threshold).
2. **Adaptive Edge of Stability** (Cohen et al. 2022, "Adaptive Gradient Methods at the Edge
   of Stability"). For full-batch Adam the preconditioned sharpness
   :math:`\lambda_{\max}(P_t^{-1}H_t)` equilibrates at :math:`(2+2\beta_1)/((1-\beta_1)\eta)`
   (:math:`38/\eta` for :math:`\beta_1 = 0.9`), while the raw sharpness keeps growing.

Setup: a tanh MLP 64-64-64-10 (8,970 parameters, float64) on the first 500 sklearn digits
(bundled with scikit-learn, nothing downloaded; pixels scaled to [0, 1] and centred), trained
full-batch on Cohen et al.'s square loss :math:`\frac1n\sum_i \frac12\|f(x_i) -
\mathrm{onehot}(y_i)\|^2` (passed explicitly as ``loss_fn``: ``landscape``'s default for
floating targets is ``F.mse_loss``, the mean over all ``n * 10`` entries, whose Hessian is
5 times smaller). Every run starts from the same initialization. Sharpness is measured every
``every`` steps by the tracker (warm-started Lanczos, ``tol=1e-3``); at a few checkpoints it
is cross-checked against an independent cold-start computation (``ls.eigenvalues`` to
``tol=1e-8`` for the raw sharpness; for Adam, scipy ``eigsh`` on
:math:`P^{-1/2}HP^{-1/2}` with :math:`P` rebuilt here from the optimizer state).

Statistics per run: ``t*`` (first measured step with ratio :math:`\geq 0.95`), mean, standard
deviation, 5th/95th percentiles and maximum of the ratio :math:`R = S\eta/c` over the window
from ``t*`` to the end, and whether the loss kept decreasing (the medians of the per-step
training loss over four equal parts of the window decrease) while being non-monotone (the
fraction of steps whose loss rose). For Adam also the raw-sharpness growth factor
:math:`S(\text{end})/S(t^*)`.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python validation/edge_of_stability.py [--quick]``.
Full: about two minutes on 2 CPU cores; writes ``figures/validation/eos_{gd,momentum,adam}.png``
and ``validation/results/edge_of_stability.json``. ``--quick`` (300 digits, shorter runs,
fewer cross-checks; about 13 s of CPU time) writes ``*_quick`` files instead, so the committed full
results are never overwritten by it.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse.linalg as sla
import torch
from torch import Tensor, nn

import landscape as ls

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "figures" / "validation"
RESULTS = ROOT / "validation" / "results"
LEVEL = 0.95  # t*: first measured step with ratio >= LEVEL (REFERENCES §2)


@dataclass(frozen=True)
class RunConfig:
    """One full-batch training run.

    Attributes
    ----------
    name : str
        Identifier used in the results and figures.
    optimizer : {"gd", "momentum", "adam"}
        ``torch.optim.SGD`` (plain or heavy ball) or ``torch.optim.Adam``.
    lr : float
        Learning rate.
    steps : int
        Number of full-batch steps.
    every : int
        Tracker measurement interval.
    momentum : float
        Heavy-ball coefficient (``"momentum"`` only).
    betas : tuple of float
        Adam's ``(beta1, beta2)``.
    checks : int
        Number of measurements cross-checked by an independent cold-start eigensolver.
    role : str
        ``"eos"`` (should reach its threshold) or ``"control"`` (should not).
    """

    name: str
    optimizer: str
    lr: float
    steps: int
    every: int = 10
    momentum: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    checks: int = 4
    role: str = "eos"

    @property
    def coefficient(self) -> float:
        """Threshold coefficient :math:`c` (stable iff sharpness < c/lr), from ``ls``."""
        kind = {"gd": "sgd"}.get(self.optimizer, self.optimizer)
        return ls.stability_threshold(kind, 1.0, momentum=self.momentum, beta1=self.betas[0])


@dataclass(frozen=True)
class Setup:
    """Data size and the runs of one variant (full or quick).

    Attributes
    ----------
    num_samples : int
        Number of sklearn digits (the first ones) in the full batch.
    runs : tuple of RunConfig
        The runs.
    """

    num_samples: int
    runs: tuple[RunConfig, ...]


FULL = Setup(
    num_samples=500,
    runs=(
        RunConfig("gd_lr0.4", "gd", 0.4, 3000),
        RunConfig("gd_lr0.25", "gd", 0.25, 4000),
        # Same gradient-flow time as gd_lr0.4 (lr * steps = 1200): it sharpens past 2/0.4.
        RunConfig("gd_lr0.1_control", "gd", 0.1, 12000, every=50, role="control"),
        RunConfig("momentum0.9_lr0.5", "momentum", 0.5, 2000, every=5, momentum=0.9),
        RunConfig("adam_lr0.002", "adam", 2e-3, 3000),
    ),
)
QUICK = Setup(
    num_samples=300,
    runs=(
        RunConfig("gd_lr0.4", "gd", 0.4, 800, checks=1),
        RunConfig("gd_lr0.1_control", "gd", 0.1, 3200, every=200, checks=1, role="control"),
        RunConfig("momentum0.9_lr0.5", "momentum", 0.5, 500, every=10, momentum=0.9, checks=1),
        RunConfig("adam_lr0.002", "adam", 2e-3, 700, checks=1),
    ),
)

#: What the papers (and REFERENCES §2) say, for the table in edge_of_stability.md.
PUBLISHED = {
    "gd": "S hovers at, for MSE just above, 2/lr after progressive sharpening; loss non-monotone "
    "but decreasing over long times (Cohen et al. 2021)",
    "momentum": "S reaches (2+2*beta)/lr (Cohen et al. 2021); saw-tooth between about 0.85 and "
    "1.0 of it (REFERENCES §2)",
    "adam": "lambda_max(P^-1 H) equilibrates at (2+2*beta1)/((1-beta1)*lr) = 38/lr; raw "
    "lambda_max(H) keeps growing (Cohen et al. 2022)",
    "control": "with 2/lr out of reach, no Edge of Stability: S < 2/lr throughout",
}


def cohen_mse(outputs: Tensor, targets: Tensor) -> Tensor:
    r"""Return Cohen et al.'s square loss :math:`\frac1n \sum_i \frac12 \|f_i - y_i\|^2`.

    Parameters
    ----------
    outputs : Tensor
        Network outputs, shape ``(n, k)``.
    targets : Tensor
        One-hot targets, shape ``(n, k)``.

    Returns
    -------
    Tensor
        The scalar mean over samples (summed over the ``k`` outputs, halved).
    """
    return 0.5 * (outputs - targets).pow(2).sum(dim=1).mean()


def load_data(num_samples: int) -> tuple[Tensor, Tensor]:
    """Return the first ``num_samples`` sklearn digits (float64, centred) and one-hot targets.

    Parameters
    ----------
    num_samples : int
        How many digits (at most 1,797).

    Returns
    -------
    (Tensor, Tensor)
        Inputs ``(n, 64)`` in [0, 1] minus their mean, and one-hot targets ``(n, 10)``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data[:num_samples] / 16.0, dtype=torch.float64)
    y = torch.tensor(digits.target[:num_samples], dtype=torch.long)
    return x - x.mean(dim=0), nn.functional.one_hot(y, 10).double()


def make_model(seed: int = 0) -> nn.Module:
    """Return the tanh MLP 64-64-64-10 in float64, seeded (every run starts from the same one).

    Parameters
    ----------
    seed : int, optional
        Seed of the initialization.

    Returns
    -------
    torch.nn.Module
        The model (8,970 parameters).
    """
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10)
    ).double()


def make_optimizer(config: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Return the full-batch optimizer of a run.

    Parameters
    ----------
    config : RunConfig
        The run.
    model : torch.nn.Module
        The model.

    Returns
    -------
    torch.optim.Optimizer
        ``SGD`` (with ``momentum`` for heavy ball) or ``Adam``.
    """
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)


def independent_check(
    model: nn.Module, optimizer: torch.optim.Optimizer, X: Tensor, Y: Tensor, adam: bool
) -> dict[str, float]:
    r"""Recompute the sharpness cold (no warm start), to check the tracker's warm-started value.

    Parameters
    ----------
    model : torch.nn.Module
        The model at the measured step.
    optimizer : torch.optim.Optimizer
        Its optimizer (for Adam, the preconditioner is rebuilt from ``optimizer.state``).
    X, Y : Tensor
        The full batch.
    adam : bool
        Also compute :math:`\lambda_{\max}(P^{-1/2} H P^{-1/2})` with scipy ``eigsh``.

    Returns
    -------
    dict
        ``sharpness`` (``ls.eigenvalues``, random start, ``tol=1e-8``) and, for Adam,
        ``preconditioned_sharpness``.
    """
    H = ls.hessian(model, (X, Y), cohen_mse)
    out = {"sharpness": float(ls.eigenvalues(H, k=1, tol=1e-8, seed=12345).values[0])}
    if adam:
        # P_t = (1 - beta1^t) (sqrt(v_t / (1 - beta2^t)) + eps), written out here from the
        # optimizer state rather than taken from landscape (REFERENCES §1).
        (group,) = optimizer.param_groups
        beta1, beta2 = group["betas"]
        parts = []
        for p in model.parameters():
            state = optimizer.state[p]
            t = float(state["step"])
            v = state["exp_avg_sq"].detach().double().reshape(-1)
            parts.append((1 - beta1**t) * ((v / (1 - beta2**t)).sqrt() + group["eps"]))
        d = torch.cat(parts).rsqrt().numpy()
        Hs = H.to_scipy()
        op = sla.LinearOperator(Hs.shape, matvec=lambda v: d * Hs.matvec(d * v), dtype=np.float64)
        rng = np.random.default_rng(0)
        value = sla.eigsh(op, k=1, which="LA", tol=1e-8, v0=rng.standard_normal(Hs.shape[0]))[0]
        out["preconditioned_sharpness"] = float(value[0])
    return out


@dataclass
class RunResult:
    """What one run produced.

    Attributes
    ----------
    config : RunConfig
        The run.
    tracker : landscape.SharpnessTracker
        The tracker with its history.
    losses : numpy.ndarray
        Training loss at every step (before the update of that step).
    checks : list of dict
        Independent cold-start checks at some measured steps.
    seconds : float
        Wall-clock time of the run (training, tracking and checks).
    """

    config: RunConfig
    tracker: Any
    losses: np.ndarray
    checks: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def train(config: RunConfig, X: Tensor, Y: Tensor, seed: int = 0) -> RunResult:
    """Train full-batch and track sharpness with ``ls.SharpnessTracker``.

    Parameters
    ----------
    config : RunConfig
        The run.
    X, Y : Tensor
        The full batch.
    seed : int, optional
        Seed of the initialization.

    Returns
    -------
    RunResult
        Tracker, per-step losses and independent checks.
    """
    start = time.perf_counter()
    model = make_model(seed)
    optimizer = make_optimizer(config, model)
    tracker = ls.SharpnessTracker(model, (X, Y), cohen_mse, every=config.every)
    num_measurements = config.steps // config.every
    check_at = set()
    if config.checks:
        index = np.linspace(0, num_measurements - 1, config.checks + 1)[1:].round().astype(int)
        check_at = {int((i + 1) * config.every) for i in index}
    losses = np.empty(config.steps)
    checks = []
    for t in range(config.steps):
        loss = cohen_mse(model(X), Y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses[t] = loss.item()
        record = tracker.step(optimizer, loss=loss.detach())
        if record is not None and record["step"] in check_at:
            cold = independent_check(model, optimizer, X, Y, config.optimizer == "adam")
            entry = {"step": record["step"], "tracker_sharpness": record["sharpness"]}
            entry["cold_sharpness"] = cold["sharpness"]
            entry["rel_diff_sharpness"] = abs(record["sharpness"] / cold["sharpness"] - 1)
            if "preconditioned_sharpness" in cold:
                mine, ref = record["preconditioned_sharpness"], cold["preconditioned_sharpness"]
                entry["tracker_preconditioned"], entry["cold_preconditioned"] = mine, ref
                entry["rel_diff_preconditioned"] = abs(mine / ref - 1)
            checks.append(entry)
    return RunResult(config, tracker, losses, checks, time.perf_counter() - start)


def _quarter_medians(losses: np.ndarray) -> list[float]:
    parts = np.array_split(losses, 4)
    return [float(np.median(p)) for p in parts]


def statistics(result: RunResult) -> dict[str, Any]:
    """Summarize a run: ``t*``, ratio statistics over the EoS window, loss behaviour, checks.

    Parameters
    ----------
    result : RunResult
        A finished run.

    Returns
    -------
    dict
        ``threshold``, ``crossing_step`` (``t*`` or ``None``), ``ratio_mean``, ``ratio_std``,
        ``ratio_p05``, ``ratio_p95``, ``ratio_min`` (over ``t*`` .. end), the same over its
        second half (``settled_ratio_mean``, ``_std``, ``_min``, ``_max``; ``settled_steps``),
        the mean raw sharpness over the two halves of the window, ``max_ratio`` and
        ``max_ratio_step`` (whole run), ``final_ratio``, sharpness at the start, at ``t*``,
        at the end and its maximum (raw; and preconditioned for Adam),
        ``raw_growth_factor`` (raw sharpness at the end over that at ``t*``), loss summaries
        (``loss_at_crossing``, ``final_loss``, ``loss_window_quarter_medians``,
        ``loss_decreasing_long_term``, ``fraction_loss_increases``), the largest relative
        difference to the independent checks, HVPs and seconds.
    """
    config, tracker = result.config, result.tracker
    h = tracker.history
    summary = tracker.summary(level=LEVEL)
    steps, ratio = h["step"], h["ratio"]
    adam = config.optimizer == "adam"
    eff = h["preconditioned_sharpness"] if adam else h["sharpness"]
    out: dict[str, Any] = {
        "threshold": float(h["threshold"][0]),
        "coefficient": config.coefficient,
        "crossing_step": summary["crossing_step"],
        "ratio_mean": summary["ratio_mean"],
        "ratio_std": summary["ratio_std"],
        "max_ratio": summary["max_ratio"],
        "max_ratio_step": summary["max_ratio_step"],
        "final_ratio": summary["final_ratio"],
        "sharpness_initial": float(h["sharpness"][0]),
        "sharpness_final": float(h["sharpness"][-1]),
        "sharpness_max": float(h["sharpness"].max()),
        "initial_loss": float(result.losses[0]),
        "final_loss": float(result.losses[-1]),
        "all_converged": bool(h["converged"].all()),
        "total_matvecs": summary["total_matvecs"],
        "num_measurements": summary["num_measurements"],
        "seconds": round(result.seconds, 2),
    }
    if adam:
        out["preconditioned_initial"] = float(eff[0])
        out["preconditioned_final"] = float(eff[-1])
    crossing = summary["crossing_step"]
    if crossing is not None:
        first = int(np.flatnonzero(steps == crossing)[0])
        window = ratio[first:]
        out["ratio_p05"] = float(np.percentile(window, 5))
        out["ratio_p95"] = float(np.percentile(window, 95))
        out["ratio_min"] = float(window.min())
        # The second half of the window, after the overshoot that follows t* (Cohen et al.
        # 2021 see it too): where the ratio has settled.
        settled = window[len(window) // 2 :]
        out["settled_steps"] = [int(steps[first + len(window) // 2]), int(steps[-1])]
        out["settled_ratio_mean"] = float(settled.mean())
        out["settled_ratio_std"] = float(settled.std())
        out["settled_ratio_min"] = float(settled.min())
        out["settled_ratio_max"] = float(settled.max())
        raw = h["sharpness"][first:]
        out["raw_halves_mean"] = [
            float(raw[: len(raw) // 2].mean()),
            float(raw[len(raw) // 2 :].mean()),
        ]
        out["window_steps"] = [int(crossing), int(steps[-1])]
        out["sharpness_at_crossing"] = float(h["sharpness"][first])
        out["raw_growth_factor"] = float(h["sharpness"][-1] / h["sharpness"][first])
        losses = result.losses[crossing:]  # losses[t] is the loss before update t + 1
        out["loss_at_crossing"] = float(result.losses[crossing - 1])
    else:
        losses = result.losses[len(result.losses) // 4 :]
    quarters = _quarter_medians(losses)
    out["loss_window_quarter_medians"] = quarters
    out["loss_decreasing_long_term"] = bool((np.diff(quarters) < 0).all())
    out["fraction_loss_increases"] = float(np.mean(np.diff(losses) > 0))
    if result.checks:
        out["check_max_rel_diff_sharpness"] = max(c["rel_diff_sharpness"] for c in result.checks)
        if adam:
            out["check_max_rel_diff_preconditioned"] = max(
                c["rel_diff_preconditioned"] for c in result.checks
            )
    return out


def run_all(quick: bool = False, verbose: bool = True) -> dict[str, Any]:
    """Run every configuration of the variant and collect statistics.

    Parameters
    ----------
    quick : bool, optional
        The reduced variant (300 digits, shorter runs, one check per run).
    verbose : bool, optional
        Print one line per run.

    Returns
    -------
    dict
        ``{"setup": ..., "runs": {name: {"config", "stats", "checks", "history"}},
        "results": {name: RunResult}}`` (``results`` holds the trackers, for plotting).
    """
    setup = QUICK if quick else FULL
    X, Y = load_data(setup.num_samples)
    runs: dict[str, Any] = {}
    results: dict[str, RunResult] = {}
    for config in setup.runs:
        result = train(config, X, Y)
        stats = statistics(result)
        h = result.tracker.history
        history = {
            "step": h["step"].tolist(),
            "sharpness": h["sharpness"].tolist(),
            "ratio": h["ratio"].tolist(),
            "train_loss": h["train_loss"].tolist(),
        }
        if config.optimizer == "adam":
            history["preconditioned_sharpness"] = h["preconditioned_sharpness"].tolist()
        runs[config.name] = {
            "config": asdict(config),
            "stats": stats,
            "checks": result.checks,
            "history": history,
        }
        results[config.name] = result
        if verbose:
            print(_line(config, stats), flush=True)
    return {
        "setup": {
            "variant": "quick" if quick else "full",
            "num_samples": setup.num_samples,
            "data": "sklearn load_digits, first n, pixels/16 centred, one-hot targets",
            "model": "MLP 64-64-64-10 tanh, float64, torch.manual_seed(0), 8970 parameters",
            "loss": "(1/n) sum_i 0.5 ||f(x_i) - onehot(y_i)||^2 (full batch)",
            "tracker": "ls.SharpnessTracker(model, (X, Y), loss_fn, every=...), tol=1e-3",
            "level": LEVEL,
        },
        "runs": runs,
        "results": results,
    }


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _line(config: RunConfig, s: dict[str, Any]) -> str:
    text = (
        f"{config.name:20s} threshold {s['threshold']:9.3f}  t* {_fmt(s['crossing_step'], 'd'):>5}"
        f"  ratio {_fmt(s['ratio_mean'])} ± {_fmt(s['ratio_std'])}"
        f" [p05 {_fmt(s.get('ratio_p05'))}, p95 {_fmt(s.get('ratio_p95'))}]"
        f" settled {_fmt(s.get('settled_ratio_mean'))} ± {_fmt(s.get('settled_ratio_std'))}"
        f"  max {s['max_ratio']:.3f}  loss {s['initial_loss']:.4f} -> {s['final_loss']:.5f}"
        f" (long-term decrease: {s['loss_decreasing_long_term']},"
        f" rises {s['fraction_loss_increases']:.2f})  S {s['sharpness_initial']:.2f} ->"
        f" {s['sharpness_final']:.2f}"
    )
    if config.optimizer == "adam" and s["crossing_step"] is not None:
        text += f" (raw growth over window x{s['raw_growth_factor']:.2f})"
    if "check_max_rel_diff_sharpness" in s:
        text += f"  check {s['check_max_rel_diff_sharpness']:.1e}"
    if "check_max_rel_diff_preconditioned" in s:
        text += f"/{s['check_max_rel_diff_preconditioned']:.1e}"
    return text + f"  [{s['seconds']:.1f} s]"


def write_figures(results: dict[str, RunResult], suffix: str = "") -> list[Path]:
    """Draw sharpness, ratio (``tracker.plot``) and training loss per run, one figure per study.

    Parameters
    ----------
    results : dict of str to RunResult
        The runs, by name.
    suffix : str, optional
        Appended to the file names (``"_quick"`` for the reduced variant).

    Returns
    -------
    list of Path
        The figures written: ``eos_gd``, ``eos_momentum``, ``eos_adam``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGURES.mkdir(parents=True, exist_ok=True)
    groups = {
        "gd": [r for r in results.values() if r.config.optimizer == "gd"],
        "momentum": [r for r in results.values() if r.config.optimizer == "momentum"],
        "adam": [r for r in results.values() if r.config.optimizer == "adam"],
    }
    paths = []
    for study, runs in groups.items():
        if not runs:
            continue
        fig, axes = plt.subplots(
            3, len(runs), figsize=(5.0 * len(runs), 7.2), layout="constrained",
            sharex="col", squeeze=False, height_ratios=(3, 2, 2),
        )  # fmt: skip
        for i, r in enumerate(runs):
            c = r.config
            label = {
                "gd": "full-batch GD",
                "momentum": f"heavy ball β={c.momentum:g}",
                "adam": f"full-batch Adam β₁={c.betas[0]:g}",
            }[c.optimizer]
            extra = " (control)" if c.role == "control" else ""
            title = f"{label}, lr={c.lr:g}{extra}: c/lr={c.coefficient / c.lr:.4g}"
            r.tracker.plot(ax=(axes[0, i], axes[1, i]), title=title)
            axes[1, i].set_xlabel("")
            ax = axes[2, i]
            ax.semilogy(np.arange(1, len(r.losses) + 1), r.losses, linewidth=0.7)
            ax.set_xlabel("step")
            ax.set_ylabel("training loss")
        path = FIGURES / f"eos_{study}{suffix}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def write_results(report: dict[str, Any], path: Path, seconds: float) -> None:
    """Write the measured numbers (no trackers) as JSON.

    Parameters
    ----------
    report : dict
        The output of :func:`run_all`.
    path : Path
        Where to write.
    seconds : float
        Total wall-clock time.
    """
    payload = {
        "setup": report["setup"],
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "landscape": ls.__version__,
            "threads": torch.get_num_threads(),
        },
        "published": PUBLISHED,
        "total_seconds": round(seconds, 1),
        "runs": report["runs"],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(payload), indent=1) + "\n")


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


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
    parser.add_argument("--quick", action="store_true", help="reduced variant (~13 s CPU)")
    parser.add_argument("--no-output", action="store_true", help="write no figures nor JSON")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    report = run_all(quick=args.quick)
    seconds = time.perf_counter() - start
    print(f"total {seconds:.1f} s")
    if not args.no_output:
        suffix = "_quick" if args.quick else ""
        for path in write_figures(report["results"], suffix):
            print(f"figure written to {path.relative_to(ROOT)}")
        path = RESULTS / f"edge_of_stability{suffix}.json"
        write_results(report, path, seconds)
        print(f"results written to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
