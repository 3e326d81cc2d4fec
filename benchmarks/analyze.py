"""How long ``landscape.analyze`` takes per budget, stage by stage.

What is measured
----------------
A 1-D CNN with about 100k parameters on 2,000 MNIST-1D samples (generated locally with the
``mnist1d`` package, no download), briefly trained with SGD, float32, CPU. For each budget
the wall time of ``ls.analyze(model, loader, budget=...)`` and the cost of each stage (HVPs,
passes over the data, seconds) as recorded in the report. The issue's target: ``"fast"``
well under a minute on a 2-core CPU.

With ``--time-budgets S1 S2 ...``: ``ls.analyze(..., budget="standard", time_budget=S)`` for
each, with its plan — the settings it scaled, and per stage the predicted and the measured
seconds and their ratio (the target: within 1.5x) — and the total against the budget.

How to run
----------
``.venv/bin/python benchmarks/analyze.py [--budgets fast standard] [--output PATH]``;
results go to ``benchmarks/results/analyze.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import landscape as ls
from landscape.records import jsonable

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "analyze.json"


def mnist1d_loader(n: int = 2000, batch_size: int = 128) -> DataLoader:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = max(n + 500, 4000)
    data = make_dataset(args)  # generated locally
    X = torch.tensor(data["x"][:n], dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data["y"][:n], dtype=torch.long)
    return DataLoader(TensorDataset(X, y), batch_size=batch_size, shuffle=False)


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(1, 32, 5, padding=2),
        nn.ReLU(),
        nn.Conv1d(32, 64, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Flatten(),
        nn.Linear(64 * 20, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budgets", nargs="+", default=["fast", "standard"])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--time-budgets", nargs="*", type=float, default=[])
    args = parser.parse_args()
    torch.manual_seed(0)
    loader = mnist1d_loader()
    model = cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(5):
        for x, y in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    params = sum(p.numel() for p in model.parameters())
    rows = []
    for budget in args.budgets:
        start = time.perf_counter()
        report = ls.analyze(model, loader, budget=budget, optimizer=opt, progress=False)
        seconds = time.perf_counter() - start
        stages = {name: cost.to_dict() for name, cost in report.costs.items()}
        rows.append({"budget": budget, "seconds": seconds, "stages": stages})
        print(f"{budget}: {seconds:.1f} s ({params} parameters, 2000 samples)")
        for stage, cost in report.costs.items():
            print(
                f"  {stage:<14} {cost.seconds:7.2f} s  {cost.num_matvecs:5d} HVPs  "
                f"{cost.passes:5d} passes"
            )
    planned = []
    for seconds_allowed in args.time_budgets:
        start = time.perf_counter()
        report = ls.analyze(
            model, loader, budget="standard", optimizer=opt, progress=False,
            time_budget=seconds_allowed,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        plan = report.plan
        planned.append({"time_budget": seconds_allowed, "seconds": seconds,
                        "plan": jsonable(plan)})  # fmt: skip
        print(f"time_budget {seconds_allowed:.0f} s (standard): took {seconds:.1f} s")
        for name, (a, b) in plan.scaled.items():
            print(f"  scaled {name}: {a} -> {b}")
        for stage, guess in plan.predicted.items():
            actual = plan.measured[stage]
            print(f"  {stage:<14} predicted {guess:7.2f} s  measured {actual:7.2f} s  "
                  f"ratio {actual / guess:5.2f}")  # fmt: skip
    out = {
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads()},
        "model": {"params": params, "samples": 2000},
        "runs": rows,
        "time_budgets": planned,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
