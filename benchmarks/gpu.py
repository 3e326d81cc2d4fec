"""GPU timings: the HVP ratios of ``benchmarks/hvp.py`` and the grids of ``benchmarks/surfaces.py``.

What is measured
----------------
The workloads of ``benchmarks/hvp.py`` (an MLP on MNIST-1D, a small CNN on the sklearn
digits; float32), with the model and the batches on the GPU:

* the full-data gradient (one pass; the unit of every ratio), one HVP per backend
  (``ls.hessian(...).matvec``), and ``matmat`` with k = 8 and 32 columns per vector — the
  same rows as ``benchmarks/hvp.py``, with ``torch.cuda.synchronize()`` closing every timed
  call; a second table passes a ``DataLoader`` over CPU tensors, as users do (every gradient
  pass pays the host-to-device copy; ours pays it once, into the device cache);
* a ``steps x steps`` loss surface along filter-normalized directions with ``ls.surface``,
  vectorized (``vmap(functional_call)``, the CUDA default) and point by point, and with
  ``loss-landscapes`` where it runs on the device; the vectorized and point-by-point grids
  must agree;
* the peak GPU memory of each workload (``torch.cuda.max_memory_allocated``).

How to run
----------
``.venv/bin/python benchmarks/gpu.py`` (``--quick``, ``--repeats N``, ``--steps N``,
``--output PATH``). Results go to ``benchmarks/results/gpu.json``. Without a CUDA device it
prints why and exits with status 0, measuring nothing. ``--device cpu`` runs the same code
on the CPU (a dry run of this script; write it elsewhere with ``--output``).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hvp

import landscape as ls

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "gpu.json"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], repeats: int, device: torch.device) -> list[float]:
    """One warm-up call, then the synchronized wall-clock seconds of ``repeats`` calls."""
    fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def row(
    method: str, fn: Callable[[], Any], repeats: int, device: torch.device, per: int = 1, **info
) -> dict[str, Any]:
    """A result row: median seconds (divided by ``per``), or the error that stopped it."""
    try:
        times = timed(fn, repeats, device)
    except Exception as exc:  # report, don't abort the whole benchmark
        return {"method": method, "seconds": None, "error": f"{type(exc).__name__}: {exc}", **info}
    return {
        "method": method,
        "seconds": statistics.median(times) / per,
        "times": times,
        "error": None,
        **info,
    }


def on_device(w: hvp.Workload, device: torch.device) -> hvp.Workload:
    """The workload with the model and the batches on ``device``."""
    model = copy.deepcopy(w.model).to(device)
    batches = [(x.to(device), y.to(device)) for x, y in w.batches]
    return hvp.Workload(w.name, w.description, model, batches, w.loss_fn)


def with_loader(w: hvp.Workload, cpu: hvp.Workload) -> hvp.Workload:
    """The device model with a DataLoader over the CPU tensors (copied to the GPU per pass)."""
    loader = hvp.as_dataloader(cpu).batches
    device = next(w.model.parameters()).device

    class ToDevice:  # the gradient pass needs device batches; ours moves them itself
        def __len__(self) -> int:
            return len(loader)

        def __iter__(self):
            for x, y in loader:
                yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    return hvp.Workload(f"{w.name} [DataLoader]", w.description, w.model, ToDevice(), w.loss_fn)


def hvp_rows(w: hvp.Workload, repeats: int, device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    n = w.num_params
    v = torch.randn(n, generator=torch.Generator().manual_seed(0)).to(device)
    rows = [row("full-data gradient (1 pass)", hvp.gradient_pass(w), repeats, device)]
    products = {}
    for backend in hvp.BACKENDS:
        H = ls.hessian(w.model, w.batches, w.loss_fn, backend=backend, cache=True)
        r = row(
            f"ours HVP, {backend}",
            lambda H=H: H.matvec(v),
            repeats,
            device,
            backend=backend,
            k=1,
        )
        rows.append(r)
        if r["error"] is None:
            products[backend] = H.matvec(v)
        for k in hvp.BLOCK_SIZES:
            V = torch.randn(n, k, generator=torch.Generator().manual_seed(k)).to(device)
            rows.append(
                row(
                    f"ours matmat k={k} per vector, {backend}",
                    lambda H=H, V=V: H.matmat(V),
                    repeats,
                    device,
                    per=k,
                    backend=backend,
                    k=k,
                )
            )
    gradient = rows[0]["seconds"]
    for r in rows:
        r["ratio_to_gradient"] = (
            None if r["seconds"] is None or not gradient else r["seconds"] / gradient
        )
    reference = products.get("double_backward")
    agreement = {
        b: float((hv - reference).norm() / reference.norm().clamp_min(1e-30))
        for b, hv in products.items()
        if reference is not None
    }
    return {
        "name": w.name,
        "description": w.description,
        "num_samples": w.num_samples,
        "num_params": w.num_params,
        "batch_size": hvp.BATCH_SIZE,
        "rows": rows,
        "relative_difference_to_double_backward": agreement,
        "peak_gpu_memory_gib": peak_memory(device),
    }


def surface_rows(w: hvp.Workload, steps: int, device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model = w.model.eval()
    coords = np.linspace(-1.0, 1.0, steps)
    dirs = ls.random_directions(model, n=2, seed=0)
    rows, grids = [], {}
    for label, vectorize in (("vmap", True), ("point loop", False)):

        def run(vectorize=vectorize):
            grids[vectorize] = ls.surface(
                model,
                w.batches,
                directions=dirs,
                coords=coords,
                loss_fn=w.loss_fn,
                vectorize=vectorize,
                progress=False,
            )

        r = row(f"landscape surface ({label})", run, 1, device, points=steps * steps)
        if r["error"] is None:
            r["points_per_second"] = steps * steps / r["seconds"]
            r["points_per_chunk"] = grids[vectorize].settings["points_per_chunk"]
        rows.append(r)
    rows.append(peer_row(w, steps, device))
    agree = None
    if True in grids and False in grids:
        agree = bool(np.allclose(grids[True].loss, grids[False].loss, rtol=1e-4))
    return {
        "name": w.name,
        "steps": steps,
        "rows": rows,
        "vectorized_equals_loop": agree,
        "peak_gpu_memory_gib": peak_memory(device),
    }


def peer_row(w: hvp.Workload, steps: int, device: torch.device) -> dict[str, Any]:
    method = "loss-landscapes random_plane"
    try:
        import loss_landscapes
        import loss_landscapes.metrics
    except Exception as exc:
        return {"method": method, "seconds": None, "error": f"{type(exc).__name__}: {exc}"}
    X = torch.cat([x for x, _ in w.batches])
    y = torch.cat([t for _, t in w.batches])

    def run():
        loss_landscapes.random_plane(
            w.model,
            loss_landscapes.metrics.Loss(w.loss_fn, X, y),
            distance=1,
            steps=steps,
            normalization="filter",
            deepcopy_model=True,
        )

    r = row(method, run, 1, device, points=steps * steps)
    if r["error"] is None:
        r["points_per_second"] = steps * steps / r["seconds"]
    return r


def peak_memory(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def environment(device: torch.device, args: argparse.Namespace, repeats: int) -> dict[str, Any]:
    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "landscape": ls.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "dtype": "float32",
        "repeats": repeats,
        "statistic": "median after one warm-up call, each call synchronized",
        "quick": args.quick,
        "cpu": hvp.cpu_model(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=torch.cuda.get_device_name(device),
            gpu_memory_gib=props.total_memory / 2**30,
            cuda=torch.version.cuda,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
        )
    return env


def print_tables(result: dict[str, Any]) -> None:
    for w in result["hvp"]:
        print(f"\n{w['name']}: {w['num_samples']} samples, {w['num_params']} params")
        for r in w["rows"]:
            if r["error"] is not None:
                print(f"  {r['method']:<50} n/a ({r['error'].split(':')[0]})")
            else:
                print(
                    f"  {r['method']:<50} {r['seconds']:>10.5f} s {r['ratio_to_gradient']:>7.2f}x"
                )
    for w in result["surfaces"]:
        print(f"\n{w['name']}: {w['steps']}x{w['steps']} surface")
        for r in w["rows"]:
            if r["error"] is not None:
                print(f"  {r['method']:<50} n/a ({r['error'].split(':')[0]})")
            else:
                print(f"  {r['method']:<50} {r['points_per_second']:>10.0f} points/s")
        print(f"  vectorized == point loop: {w['vectorized_equals_loop']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu")
    parser.add_argument("--quick", action="store_true", help="small data, grid and repeats")
    parser.add_argument("--repeats", type=int, default=None, help="default 10, 2 with --quick")
    parser.add_argument("--steps", type=int, default=51, help="surface grid points per axis")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "benchmarks/gpu.py: no CUDA device is available (torch.cuda.is_available() is "
            f"False; torch {torch.__version__}), so nothing was measured and {args.output} "
            "was left as it is. Run it on a machine with a GPU, or pass --device cpu for a "
            "dry run."
        )
        return 0
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 10)
    if repeats < 1:
        sys.exit("--repeats must be at least 1")
    steps = 7 if args.quick else args.steps
    env = environment(device, args, repeats)
    print(f"torch {env['torch']} on {env.get('gpu', env['device'])}; median of {repeats}")
    result: dict[str, Any] = {"environment": env, "hvp": [], "surfaces": []}
    for make in (hvp.mnist1d_mlp, hvp.digits_cnn):
        cpu = make(args.quick)
        w = on_device(cpu, device)
        result["hvp"].append(hvp_rows(w, repeats, device))
        result["hvp"].append(hvp_rows(with_loader(w, cpu), repeats, device))
        result["surfaces"].append(surface_rows(w, steps, device))
    print_tables(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
