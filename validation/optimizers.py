r"""Validation: predicted against observed divergence learning rates of every torch.optim class.

Two small networks on sklearn's digits (bundled, nothing downloaded; float64, full-batch
steps): the tanh MLP 60-32-10 of ``landscape.demo.mlp`` on the 1,438 training digits (the pixels
that are 0 in every training image left out: 60 inputs), and a small CNN on the first 512: at
the minimum a smooth one (conv 4, conv 8, tanh, average pooling, fc 16), mid-training the
ReLU/max-pool CNN of ``landscape.demo.cnn`` (channels 4, 8; hidden 16). Two regimes:

* **minimum** — the loss is cross-entropy plus :math:`\tfrac{w}{2}\lVert\theta\rVert^2`
  (:math:`w = 10^{-3}`, so that a strict minimum exists), minimized by L-BFGS to a gradient
  norm of about 1e-8 (its smallest Hessian Ritz value is recorded). Two copies
  run in lockstep from :math:`\theta^*` and :math:`\theta^* + \delta`
  (:math:`\lVert\delta\rVert = 10^{-6}`); a burst *diverges* when their difference ends
  longer than :math:`\delta`: the regime the linear theory is exact for.
* **trained** — plain cross-entropy at a point reached by Adam (lr 3e-3, batches of 64, 20
  epochs for the MLP, 30 for the CNN); bursts start there and *diverge* when the final loss is
  above twice the start loss (or not finite): what a user sees mid-training.

For every optimizer, a fresh instance takes 100 mini-batch steps (batches of 64) at a
negligible learning rate (1e-8) at the start point, so that its state (second moments, sums,
step counters) is that of this point, and its momentum buffers are zeroed (Rprop and L-BFGS
start fresh: their learning rate sets their state). Then:

* **predicted** — for optimizers with a linear frozen-state step: ``linearize`` and
  ``frozen_stability`` on the full-data Hessian, the learning rate at which
  :math:`\lambda_{\max}(P^{-1}H)` reaches the optimizer's threshold. For the others (Muon on
  the weight matrices, Rprop, L-BFGS): the critical learning rate along the optimizer's own
  next update (``critical_sharpness``).
* **observed, frozen state** — the optimizer's own ``step`` for ``steps`` full-batch steps
  with its accumulators held at their values (set before every step so that the step's own
  update lands on them; counters reset).
* **observed, free** — the same bursts with the optimizer left alone, as in training.

The bisection brackets the divergence learning rate by factors of 4 around the prediction (at
most 64x either way), then halves the log-bracket 6 times (resolution about 2.2 %).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python validation/optimizers.py [--quick]``. Writes
``validation/results/optimizers.json`` (``--quick``: the MLP on 300 digits at its minimum, a
few optimizers, ``optimizers_quick.json``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import landscape as ls
from landscape.demo import cnn, digits_loaders, mlp
from landscape.metrics.optimizers import (
    NotLinearizable,
    critical_sharpness,
    describe_optimizer,
    frozen_stability,
    linearize,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "validation" / "results"
DTYPE = torch.float64


# -- holding an optimizer's accumulators fixed (from torch 2.13's update rules) -------------------
def _coupled(group: dict, p: torch.Tensor) -> torch.Tensor:
    g = p.grad
    wd = group.get("weight_decay", 0.0)
    if wd and not group.get("decoupled_weight_decay", False):
        g = g + wd * p.detach()
    return g


def _counter(state: dict, frozen: dict, key: str = "step") -> None:
    if isinstance(state.get(key), torch.Tensor):
        state[key].copy_(frozen[key])
    elif key in frozen:
        state[key] = frozen[key]


def _hold(opt: torch.optim.Optimizer, frozen: dict) -> None:
    name = type(opt).__name__
    for group in opt.param_groups:
        for p in group["params"]:
            if p.grad is None or p not in frozen:
                continue
            state, fr = opt.state[p], frozen[p]
            _counter(state, fr)
            if name in ("Adam", "AdamW", "NAdam", "RAdam"):
                beta2 = group["betas"][1]
                g = _coupled(group, p)
                state["exp_avg_sq"].copy_((fr["exp_avg_sq"] - (1 - beta2) * g * g) / beta2)
                if "max_exp_avg_sq" in state:
                    state["max_exp_avg_sq"].copy_(fr["max_exp_avg_sq"])
                if "mu_product" in state:
                    _counter(state, fr, "mu_product")
            elif name == "RMSprop":
                alpha, g = group["alpha"], _coupled(group, p)
                state["square_avg"].copy_((fr["square_avg"] - (1 - alpha) * g * g) / alpha)
                if group["centered"]:
                    state["grad_avg"].copy_((fr["grad_avg"] - (1 - alpha) * g) / alpha)
            elif name == "Adagrad":
                g = _coupled(group, p)
                state["sum"].copy_(fr["sum"] - g * g)
            elif name == "Adadelta":
                rho, g = group["rho"], _coupled(group, p)
                state["square_avg"].copy_((fr["square_avg"] - (1 - rho) * g * g) / rho)
                state["acc_delta"].copy_(fr["acc_delta"])
            elif name == "Adamax":
                # max(beta2 u', |g| + eps) = u while |g| + eps <= u; else the max binds
                state["exp_inf"].copy_(fr["exp_inf"] / group["betas"][1])
            elif name == "ASGD":
                lr, lambd, alpha = group["lr"], group["lambd"], group["alpha"]
                t = float(fr["step"])
                state["eta"].copy_(torch.as_tensor(lr / ((1 + lambd * lr * t) ** alpha)))
            elif name == "Adafactor":
                g = p.grad
                beta = (float(fr["step"]) + 1) ** group["beta2_decay"]
                if p.dim() > 1:
                    rows = (g * g).mean(dim=-1, keepdim=True)
                    cols = (g * g).mean(dim=-2, keepdim=True)
                    state["row_var"].copy_((fr["row_var"] - beta * rows) / (1 - beta))
                    state["col_var"].copy_((fr["col_var"] - beta * cols) / (1 - beta))
                else:
                    state["variance"].copy_((fr["variance"] - beta * g * g) / (1 - beta))


# -- the optimizers -------------------------------------------------------------------------------
def _matrices(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.ndim == 2]


OPTIMIZERS: dict[str, tuple[Callable[[list], torch.optim.Optimizer], str]] = {
    "SGD": (lambda ps: torch.optim.SGD(ps, lr=1e-8), "all"),
    "SGD momentum 0.9": (lambda ps: torch.optim.SGD(ps, lr=1e-8, momentum=0.9), "all"),
    "SGD Nesterov 0.9": (
        lambda ps: torch.optim.SGD(ps, lr=1e-8, momentum=0.9, nesterov=True),
        "all",
    ),
    "ASGD": (lambda ps: torch.optim.ASGD(ps, lr=1e-8), "all"),
    "Adam": (lambda ps: torch.optim.Adam(ps, lr=1e-8), "all"),
    "AdamW": (lambda ps: torch.optim.AdamW(ps, lr=1e-8, weight_decay=0.01), "all"),
    "RMSprop": (lambda ps: torch.optim.RMSprop(ps, lr=1e-8), "all"),
    "RMSprop centered, momentum 0.9": (
        lambda ps: torch.optim.RMSprop(ps, lr=1e-8, centered=True, momentum=0.9),
        "all",
    ),
    "Adagrad": (lambda ps: torch.optim.Adagrad(ps, lr=1e-8), "all"),
    "Adadelta": (lambda ps: torch.optim.Adadelta(ps, lr=1e-8), "all"),
    "Adamax": (lambda ps: torch.optim.Adamax(ps, lr=1e-8), "all"),
    "NAdam": (lambda ps: torch.optim.NAdam(ps, lr=1e-8), "all"),
    "RAdam": (lambda ps: torch.optim.RAdam(ps, lr=1e-8), "all"),
    "Adafactor": (lambda ps: torch.optim.Adafactor(ps, lr=1e-8), "all"),
    "Muon (matrices)": (lambda ps: torch.optim.Muon(ps, lr=1e-8), "matrices"),
    "Rprop": (lambda ps: torch.optim.Rprop(ps, lr=1e-8), "all"),
    "LBFGS": (lambda ps: torch.optim.LBFGS(ps, lr=1e-8, max_iter=1), "all"),
}
QUICK = ("SGD momentum 0.9", "Adam", "RMSprop", "RAdam", "Muon (matrices)")


# -- bursts and bisection -------------------------------------------------------------------------
WEIGHT_DECAY = 1e-3  # the L2 term that gives the "minimum" regime a strict minimum


class Setup:
    """A network at its start point, its data, its loss, and bursts from there.

    Parameters
    ----------
    name : str
        ``"mlp"`` or ``"cnn"``.
    regime : {"minimum", "trained"}
        Bursts from a perturbed strict minimum (escape criterion), or from a trained point
        (loss-doubling criterion).
    model : nn.Module
        The network at the start point.
    X, y : Tensor
        The data.
    steps : int
        Steps per burst.
    """

    def __init__(
        self, name: str, regime: str, model: nn.Module, X: torch.Tensor, y: torch.Tensor, steps: int
    ) -> None:
        self.name, self.regime, self.model = name, regime, model
        self.X, self.y, self.steps = X, y, steps
        self.decay = WEIGHT_DECAY if regime == "minimum" else 0.0
        with torch.no_grad():
            self.loss0 = float(self.loss(model))
        gen = torch.Generator().manual_seed(7)
        noise = [torch.randn(p.shape, generator=gen, dtype=DTYPE) for p in model.parameters()]
        norm = math.sqrt(sum(float(u.square().sum()) for u in noise))
        self.delta = [1e-6 * u / norm for u in noise] if regime == "minimum" else None

    def batch_loss(self, model: nn.Module, batch: tuple) -> torch.Tensor:
        """Cross-entropy of a batch, plus the L2 term in the minimum regime.

        Returns
        -------
        Tensor
            The scalar loss.
        """
        X, y = batch
        value = nn.functional.cross_entropy(model(X), y)
        if self.decay:
            value = value + 0.5 * self.decay * sum(p.square().sum() for p in model.parameters())
        return value

    def loss(self, model: nn.Module) -> torch.Tensor:
        """Return the full-data loss.

        Returns
        -------
        Tensor
            The scalar loss.
        """
        return self.batch_loss(model, (self.X, self.y))

    def problem(self, model: nn.Module, names: list[str] | None) -> ls.Problem:
        """Return the full-data problem over the parameters ``names`` (all if ``None``).

        Returns
        -------
        Problem
            One batch, this setup's loss.
        """
        return ls.Problem(model, [(self.X, self.y)], batch_loss=self.batch_loss, params=names)

    def fresh(self, spec: str) -> tuple[nn.Module, list]:
        """Return a copy of the network and the parameters an optimizer of ``spec`` trains.

        Returns
        -------
        tuple
            ``(model, parameters)``.
        """
        model = copy.deepcopy(self.model)
        names = [n for n, _ in model.named_parameters()]
        chosen = set(_matrices(model) if spec == "matrices" else names)
        for n, p in model.named_parameters():
            p.requires_grad_(n in chosen)
        return model, [p for n, p in model.named_parameters() if n in chosen]

    def warm(self, make: Callable, spec: str, seed: int = 0) -> tuple[nn.Module, Any, dict]:
        """Return an optimizer whose state is that of the start point (see the module doc).

        Returns
        -------
        tuple
            ``(model, optimizer, state_dict)``.
        """
        model, params = self.fresh(spec)
        opt = make(params)
        gen = torch.Generator().manual_seed(seed)
        n = len(self.y)
        if not isinstance(opt, torch.optim.LBFGS | torch.optim.Rprop):  # lr sets their state
            for _ in range(100):
                index = torch.randperm(n, generator=gen)[:64]
                opt.zero_grad()
                self.batch_loss(model, (self.X[index], self.y[index])).backward()
                opt.step()
        opt.zero_grad()
        with torch.no_grad():  # back to the start point exactly
            for p, q in zip(model.parameters(), self.model.parameters()):
                p.copy_(q)
        for state in opt.state.values():
            for key in ("exp_avg", "momentum_buffer", "ax"):
                if isinstance(state.get(key), torch.Tensor):
                    state[key].zero_()
        return model, opt, copy.deepcopy(opt.state_dict())

    def _start(self, make: Callable, spec: str, state: dict, lr: float, frozen: bool) -> tuple:
        model, params = self.fresh(spec)
        opt = make(params)
        if isinstance(opt, torch.optim.LBFGS | torch.optim.Rprop):
            opt.param_groups[0]["lr"] = lr
        else:
            opt.load_state_dict(copy.deepcopy(state))
            for group in opt.param_groups:
                group["lr"] = lr
        held = {p: copy.deepcopy(s) for p, s in opt.state.items()} if frozen else None
        return model, opt, held

    def _step(self, model: nn.Module, opt: torch.optim.Optimizer, held: dict | None) -> float:
        def closure() -> torch.Tensor:
            opt.zero_grad()
            value = self.loss(model)
            value.backward()
            return value

        opt.zero_grad()
        value = self.loss(model)
        value.backward()
        if held is not None:
            _hold(opt, held)
        opt.step(closure)
        return float(value.detach())

    def diverges(self, make: Callable, spec: str, state: dict, lr: float, frozen: bool) -> bool:
        r"""Run one burst at ``lr``; say whether it diverged (see the module doc).

        In the minimum regime two copies run in lockstep, from :math:`\theta^*` and from
        :math:`\theta^* + \delta`; their difference follows the linearized dynamics (the
        drift of both from a residual gradient cancels), and the burst diverged when it ends
        longer than :math:`\delta`.

        Returns
        -------
        bool
            Diverged.
        """
        model, opt, held = self._start(make, spec, state, lr, frozen)
        twin = None
        if self.delta is not None:
            twin, twin_opt, twin_held = self._start(make, spec, state, lr, frozen)
            with torch.no_grad():
                for p, u in zip(model.parameters(), self.delta):
                    p.add_(u)
        size = 1e-6

        def gap() -> float:
            return math.sqrt(
                sum(
                    float((p.detach() - q.detach()).square().sum())
                    for p, q in zip(model.parameters(), twin.parameters())
                )
            )

        for _ in range(self.steps):
            current = self._step(model, opt, held)
            if not math.isfinite(current) or current > 1e3 * self.loss0:
                return True
            if twin is not None:
                self._step(twin, twin_opt, twin_held)
                if not gap() < 1e3 * size:
                    return True
        if twin is not None:
            return not gap() <= size
        with torch.no_grad():
            final = float(self.loss(model))
        return not final <= 2.0 * self.loss0


def bisect(
    diverges: Callable[[float], bool], guess: float, span: float = 64.0, halvings: int = 6
) -> dict[str, Any]:
    """Bracket the divergence learning rate around ``guess`` and narrow it geometrically.

    Returns
    -------
    dict
        ``observed`` (the geometric middle of the final bracket) and ``bracket``; or
        ``no_divergence_up_to`` / ``diverges_below`` where no bracket was found.
    """
    lo, hi = guess / 4, guess * 4
    while diverges(lo):
        hi, lo = lo, lo / 4
        if lo < guess / span:
            return {"observed": None, "bracket": [None, hi], "diverges_below": hi}
    while not diverges(hi):
        lo, hi = hi, hi * 4
        if hi > guess * span:
            return {"observed": None, "bracket": [lo, None], "no_divergence_up_to": lo}
    for _ in range(halvings):
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if diverges(mid) else (mid, hi)
    return {"observed": math.sqrt(lo * hi), "bracket": [lo, hi]}


# -- one network ----------------------------------------------------------------------------------
def prepare(name: str, regime: str, quick: bool) -> Setup:
    """Train the network to its start point.

    Returns
    -------
    Setup
        The network at the start point of the regime.
    """
    train, _ = digits_loaders(batch_size=64)
    X = train.dataset.tensors[0].to(DTYPE)
    y = train.dataset.tensors[1]
    torch.manual_seed(0)
    if name == "mlp":
        n = 300 if quick else len(y)
        # pixels that are 0 in every training image would give weights that see only the L2
        # term, a zero second moment and P = eps (see validation/optimizers.md): left out
        X = X[:, X[:n].std(0) > 0]
        model = mlp(X.shape[1], (32,), 10).to(DTYPE)
        epochs, steps = 20, 200
    elif regime == "minimum":  # smooth (tanh, average pooling), so that a minimum is reached
        n = 512
        model = smooth_cnn().to(DTYPE)
        epochs, steps = 30, 150
    else:
        n = 512
        model = cnn(channels=(4, 8), hidden=16).to(DTYPE)
        epochs, steps = 30, 150
    X, y = X[:n], y[:n]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, 64):
            index = order[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(X[index]), y[index]).backward()
            opt.step()
    setup = Setup(name, regime, model, X, y, steps)
    if regime == "minimum":
        lbfgs = torch.optim.LBFGS(
            model.parameters(), lr=1.0, max_iter=5000, tolerance_grad=1e-10,
            tolerance_change=1e-16, history_size=50, line_search_fn="strong_wolfe",
        )  # fmt: skip

        def closure() -> torch.Tensor:
            lbfgs.zero_grad()
            value = setup.loss(model)
            value.backward()
            return value

        for _ in range(5):
            lbfgs.step(closure)
        setup = Setup(name, regime, model, X, y, steps)
        grad = torch.autograd.grad(setup.loss(model), list(model.parameters()))
        setup.gradient_norm = math.sqrt(sum(float(g.square().sum()) for g in grad))
        H = ls.hessian(model, [(X, y)], batch_loss=setup.batch_loss)
        setup.smallest_eigenvalue = float(ls.eigenvalues(H, k=1, which="smallest").values[0])
    return setup


def smooth_cnn() -> nn.Sequential:
    """Return a small CNN with tanh and average pooling (twice differentiable everywhere).

    Returns
    -------
    nn.Sequential
        ``8x8 image -> conv 4 -> tanh -> conv 8 -> tanh -> avg pool 2 -> fc 16 -> tanh -> fc 10``.
    """
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 4, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(4, 8, 3, padding=1),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(128, 16),
        nn.Tanh(),
        nn.Linear(16, 10),
    )


def run_network(setup: Setup, names: list[str]) -> list[dict[str, Any]]:
    """Predict and observe every optimizer on one network.

    Returns
    -------
    list of dict
        One row per optimizer.
    """
    rows = []
    for label in names:
        make, spec = OPTIMIZERS[label]
        start = time.perf_counter()
        model, opt, state = setup.warm(make, spec)
        chosen = _matrices(model) if spec == "matrices" else None
        problem = setup.problem(model, chosen)
        support = describe_optimizer(opt)
        row: dict[str, Any] = {
            "optimizer": label,
            "class": type(opt).__name__,
            "measure": support.measure,
            "exactness": support.exactness,
        }

        def frozen_burst(lr: float, make: Callable = make, spec: str = spec, state: dict = state):
            return setup.diverges(make, spec, state, lr, frozen=True)

        def free_burst(lr: float, make: Callable = make, spec: str = spec, state: dict = state):
            return setup.diverges(make, spec, state, lr, frozen=False)

        try:
            lin = linearize(opt, problem)
        except NotLinearizable:
            lin = None
        if lin is not None:
            H = ls.hessian(model, [(setup.X, setup.y)], batch_loss=setup.batch_loss, params=chosen)
            result = frozen_stability(H, lin, tol=1e-6)
            row.update(
                predicted=result.lr_max,
                preconditioned_sharpness=result.sharpness,
                coefficient=result.coefficient,
                label=result.label,
                step=lin.step,
            )
            row["frozen"] = bisect(frozen_burst, result.lr_max)
        else:
            for group in opt.param_groups:
                group["lr"] = 1e-2
            critical = critical_sharpness(problem, optimizer=opt)
            row.update(
                predicted=critical.critical_lr,
                critical_sharpness=critical.sharpness,
                label="critical sharpness of the update at lr 1e-2",
            )
        guess = row["predicted"] if 0 < row["predicted"] < math.inf else 1e-2
        row["free"] = bisect(free_burst, guess)
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        print(_line(f"{setup.name}, {setup.regime}", row), flush=True)
    return rows


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def _observed(r: dict | None) -> str:
    if r is None:
        return "-"
    if r.get("observed") is not None:
        return f"{r['observed']:.4g} [{r['bracket'][0]:.4g}, {r['bracket'][1]:.4g}]"
    if r.get("no_divergence_up_to") is not None:
        return f"none up to {r['no_divergence_up_to']:.3g}"
    return f"below {r['diverges_below']:.3g}"


def _line(where: str, row: dict) -> str:
    ratio = ""
    frozen = row.get("frozen")
    if frozen and frozen.get("observed"):
        ratio = f" ({frozen['observed'] / row['predicted']:.3f}x)"
    return (
        f"[{where}] {row['optimizer']:<30} predicted {_fmt(row['predicted'])}  frozen "
        f"{_observed(frozen)}{ratio}  free {_observed(row.get('free'))}  ({row['seconds']:.1f} s)"
    )


def run_all(quick: bool = False) -> dict[str, Any]:
    """Run every regime, network and optimizer (the quick variant: the MLP at its minimum).

    Returns
    -------
    dict
        The results, as written to the JSON file.
    """
    torch.set_num_threads(1)
    start = time.perf_counter()
    results: dict[str, Any] = {
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "runs": {},
    }
    runs = (
        [("mlp", "minimum")]
        if quick
        else [("mlp", "minimum"), ("cnn", "minimum"), ("mlp", "trained"), ("cnn", "trained")]
    )
    names = list(QUICK) if quick else list(OPTIMIZERS)
    for network, regime in runs:
        setup = prepare(network, regime, quick)
        results["runs"][f"{network}, {regime}"] = {
            "start_loss": setup.loss0,
            "gradient_norm": getattr(setup, "gradient_norm", None),
            "smallest_eigenvalue": getattr(setup, "smallest_eigenvalue", None),
            "samples": len(setup.y),
            "parameters": sum(p.numel() for p in setup.model.parameters()),
            "burst_steps": setup.steps,
            "rows": run_network(setup, names),
        }
        print(
            f"[{network}, {regime}] start loss {setup.loss0:.4g}, gradient norm "
            f"{getattr(setup, 'gradient_norm', None)}, smallest eigenvalue "
            f"{getattr(setup, 'smallest_eigenvalue', None)}",
            flush=True,
        )
    results["seconds"] = time.perf_counter() - start
    return results


def main() -> None:
    """Run the validation and write its results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    results = run_all(args.quick)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("optimizers_quick.json" if args.quick else "optimizers.json")
    out.write_text(json.dumps(results, indent=1, default=float))
    print(f"wrote {out} in {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
