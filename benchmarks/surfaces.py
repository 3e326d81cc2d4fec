"""Loss-surface timings: ``landscape.surface`` against the ``loss-landscapes`` package, in one run.

What is measured
----------------
For each workload (the MNIST-1D MLP and the sklearn-digits CNN of ``benchmarks/hvp.py``,
float32, CPU, all data in memory), the wall-clock time of a ``steps x steps`` grid of losses
around the model along two filter-normalized random directions:

* ``loss_landscapes.random_plane(model, Loss(criterion, X, y), distance=1, steps=steps,
  normalization="filter", deepcopy_model=True)`` — the peer evaluates one point at a time by
  writing the perturbed weights into the (copied) model; it gets the whole data as one batch,
  its fastest setting;
* ``landscape.surface(model, batches, directions, coords)`` — on CPU by default one point
  after another on a private copy of the model over device-cached batches, and with
  ``vectorize=True`` (``vmap(functional_call)`` over chunks of points, the GPU default).

Correctness: our value at a few grid points is compared with the loss of a copy of the
model whose weights were set by hand to the perturbed values (a plain loop), and the
origin with the plain loss. The peers' directions differ from ours (``loss-landscapes``
draws them from U[0, 1) and scales biases by ``|w|``), so only times are compared across
libraries.

How to run
----------
``make bench`` or ``.venv/bin/python benchmarks/surfaces.py`` (``--steps N``, ``--quick``,
``--output PATH``). Results go to ``benchmarks/results/surfaces.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hvp

import landscape as ls

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "surfaces.json"
TARGET_SPEEDUP = 5.0


def plain_loss(model: torch.nn.Module, batches: hvp.Batches, loss_fn: torch.nn.Module) -> float:
    with torch.no_grad():
        total = sum(len(y) * float(loss_fn(model(x), y)) for x, y in batches)
    return total / sum(len(y) for _, y in batches)


def check_points(workload: hvp.Workload, dirs: list, surface: ls.Surface) -> float:
    """Largest relative difference between surface values and a hand-perturbed model."""
    worst = 0.0
    coords = surface.coords
    for i, j in ((0, 0), (len(coords[0]) // 2, len(coords[1]) // 2), (-1, 3), (5, -2)):
        a, b = float(coords[0][i]), float(coords[1][j])
        moved = copy.deepcopy(workload.model)
        with torch.no_grad():
            for name, p in moved.named_parameters():
                p.add_(a * dirs[0][name] + b * dirs[1][name])
        expected = plain_loss(moved.eval(), workload.batches, workload.loss_fn)
        worst = max(worst, abs(float(surface.loss[i, j]) - expected) / abs(expected))
    return worst


def run_workload(workload: hvp.Workload, steps: int) -> dict:
    import loss_landscapes
    import loss_landscapes.metrics

    model, batches, loss_fn = workload.model.eval(), workload.batches, workload.loss_fn
    X = torch.cat([x for x, _ in batches])
    y = torch.cat([t for _, t in batches])
    coords = np.linspace(-1.0, 1.0, steps)
    dirs = ls.random_directions(model, n=2, seed=0)
    rows = []

    start = time.perf_counter()
    peer = loss_landscapes.random_plane(
        model,
        loss_landscapes.metrics.Loss(loss_fn, X, y),
        distance=1,
        steps=steps,
        normalization="filter",
        deepcopy_model=True,
    )
    t_peer = time.perf_counter() - start
    rows.append({"method": "loss-landscapes random_plane", "seconds": t_peer, "points": peer.size})

    start = time.perf_counter()
    ours = ls.surface(
        model, batches, directions=dirs, coords=coords, loss_fn=loss_fn, progress=False
    )
    t_ours = time.perf_counter() - start
    rows.append(
        {
            "method": "landscape surface (default: point loop on CPU)",
            "seconds": t_ours,
            "points": ours.loss.size,
        }
    )

    start = time.perf_counter()
    single = ls.surface(
        model,
        batches,
        directions=dirs,
        coords=coords,
        loss_fn=loss_fn,
        vectorize=True,
        progress=False,
    )
    t_single = time.perf_counter() - start
    chunk = single.settings["points_per_chunk"]
    rows.append(
        {
            "method": f"landscape surface (vmap, {chunk} points/chunk)",
            "seconds": t_single,
            "points": single.loss.size,
        }
    )

    error = check_points(workload, dirs, ours)
    origin_error = abs(ours.origin_loss - plain_loss(model, batches, loss_fn)) / ours.origin_loss
    for row in rows:
        row["speedup_vs_peer"] = t_peer / row["seconds"]
    return {
        "name": workload.name,
        "description": workload.description,
        "num_params": workload.num_params,
        "num_samples": workload.num_samples,
        "steps": steps,
        "rows": rows,
        "max_relative_error_vs_plain_loop": error,
        "origin_relative_error": origin_error,
        "vectorized_equals_loop": bool(np.allclose(ours.loss, single.loss, rtol=1e-5)),
        "target": {
            "claim": f"51x51 surface >= {TARGET_SPEEDUP:g}x faster than loss-landscapes",
            "speedup": t_peer / t_ours,
            "passed": t_peer / t_ours >= TARGET_SPEEDUP,
        },
    }


def print_result(result: dict) -> None:
    print(
        f"\n{result['name']}: {result['description']}; {result['num_samples']} samples, "
        f"{result['num_params']} params, {result['steps']}x{result['steps']} grid"
    )
    print(f"{'method':<48}{'seconds':>10}{'points/s':>10}{'speedup':>10}")
    for row in result["rows"]:
        print(
            f"{row['method']:<48}{row['seconds']:>10.2f}{row['points'] / row['seconds']:>10.0f}"
            f"{row['speedup_vs_peer']:>9.1f}x"
        )
    target = result["target"]
    print(
        f"target: {target['claim']}: {'PASS' if target['passed'] else 'FAIL'} "
        f"({target['speedup']:.1f}x)"
    )
    print(
        f"correctness: max relative error vs a hand-perturbed model "
        f"{result['max_relative_error_vs_plain_loop']:.1e}; origin vs plain loss "
        f"{result['origin_relative_error']:.1e}; vectorized == point loop: "
        f"{result['vectorized_equals_loop']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=51, help="grid points per axis")
    parser.add_argument("--quick", action="store_true", help="small data and grid (smoke test)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    steps = 7 if args.quick else args.steps
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    hvp.warn_if_busy()
    results = [run_workload(make(args.quick), steps) for make in (hvp.mnist1d_mlp, hvp.digits_cnn)]
    for result in results:
        print_result(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "environment": {
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "cpu": hvp.cpu_model(),
                },
                "workloads": results,
            },
            indent=2,
        )
    )
    print(f"\nresults written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
