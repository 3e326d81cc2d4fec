"""Hessian-vector product timings: ``landscape`` against PyHessian, on CPU, in one run.

What is measured
----------------
For each workload (an MLP on MNIST-1D, a small CNN on the sklearn digits; float32, CPU,
data generated or bundled locally, nothing downloaded), the median wall-clock time over
``--repeats`` runs, after one warm-up call, of:

* the full-data gradient: one loop over the batches with ``torch.autograd.grad`` of the
  sample-weighted batch losses. This is the unit ("one pass") every ratio refers to;
* ours, one HVP: ``ls.hessian(...).matvec(v)`` for ``backend="double_backward"`` and
  ``backend="forward_over_reverse"``;
* ours, blocks of vectors: ``H.matmat(V)`` with k = 8 and k = 32 columns (one pass over the
  data serves all k), reported per vector (time / k);
* PyHessian's full-data HVP, ``hessian(...).dataloader_hv_product(v)``, on a deep copy of the
  model (its constructor switches the model to eval mode and leaves graphs on ``.grad``).

Both libraries get the same list of ``(inputs, targets)`` batches, and ours runs with
``cache=True``, so data loading is timed for neither. A second table per workload passes a
``DataLoader`` instead, as users do: then every gradient pass and every PyHessian product
pays the loader's indexing and collation, while ours pays it once (device cache). The table
gives seconds, the ratio to the gradient pass and, for our rows, PyHessian's time per vector
divided by ours (PyHessian has no block product, so its cost per vector is its single-HVP
time). A summary line per workload checks the targets "single HVP <= 1.5x gradient" and
"matmat per vector at k=32 <= 0.35x gradient" with the faster backend. As a sanity check the
relative difference between our HVP and PyHessian's on the same vector is printed too.

How to run
----------
``make bench`` or ``.venv/bin/python benchmarks/hvp.py`` (options: ``--repeats N``,
``--threads N``, ``--quick`` for a < 60 s smoke run, ``--output PATH``). Results are written
as JSON to ``benchmarks/results/hvp.json`` by default.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import landscape as ls

BACKENDS = ("auto", "double_backward", "forward_over_reverse")
BLOCK_SIZES = (8, 32)
BATCH_SIZE = 250
QUICK_SAMPLES = 500
TARGET_SINGLE = 1.5  # single HVP <= 1.5x gradient
TARGET_BLOCK = 0.35  # matmat per vector at k=32 <= 0.35x gradient
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "hvp.json"

Batches = list[tuple[Tensor, Tensor]]


# -- workloads -----------------------------------------------------------------------------------
@dataclass
class Workload:
    name: str
    description: str
    model: nn.Module
    batches: Batches
    loss_fn: nn.Module

    @property
    def num_samples(self) -> int:
        return sum(len(y) for _, y in self.batches)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def as_dataloader(w: Workload) -> Workload:
    """The same workload as users usually pass it: a DataLoader over a TensorDataset.

    Each pass then pays the loader's per-sample indexing and collation: the gradient loop and
    PyHessian pay it on every pass, ours only on the first (``cache="auto"`` keeps the
    device batches). Reported as a second table so both views are visible.
    """
    from torch.utils.data import DataLoader, TensorDataset

    x = torch.cat([b[0] for b in w.batches])
    y = torch.cat([b[1] for b in w.batches])
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH_SIZE)
    return Workload(f"{w.name} [DataLoader]", w.description, w.model, loader, w.loss_fn)


def split_batches(x: Tensor, y: Tensor, batch_size: int = BATCH_SIZE) -> Batches:
    return list(zip(x.split(batch_size), y.split(batch_size)))


def mnist1d_mlp(quick: bool) -> Workload:
    import mnist1d.data

    args = mnist1d.data.get_dataset_args()
    args.num_samples = 2500  # 2000 train + 500 test, generated locally
    ds = mnist1d.data.make_dataset(args)
    x = torch.tensor(ds["x"], dtype=torch.float32)
    y = torch.tensor(ds["y"], dtype=torch.long)
    if quick:
        x, y = x[:QUICK_SAMPLES], y[:QUICK_SAMPLES]
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(40, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(), nn.Linear(48, 10)
    )
    return Workload(
        "mnist1d-mlp",
        "MLP 40-48-48-10 (ReLU), MNIST-1D",
        model,
        split_batches(x, y),
        nn.CrossEntropyLoss(),
    )


def digits_cnn(quick: bool) -> Workload:
    from sklearn.datasets import load_digits

    digits = load_digits()  # bundled with scikit-learn, no download
    x = torch.tensor(digits.images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    if quick:
        x, y = x[:QUICK_SAMPLES], y[:QUICK_SAMPLES]
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )
    return Workload(
        "digits-cnn",
        "CNN conv8-conv16-maxpool-fc32-fc10 (ReLU), sklearn digits 8x8",
        model,
        split_batches(x, y),
        nn.CrossEntropyLoss(),
    )


# -- timing --------------------------------------------------------------------------------------
def wall_times(fn: Callable[[], Any], repeats: int) -> list[float]:
    """One warm-up call, then the wall-clock seconds of each of ``repeats`` calls."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


@dataclass
class Row:
    method: str
    seconds: float | None = None  # median; per vector for HVP rows
    times: list[float] = field(
        default_factory=list
    )  # every timed call (whole call, not per vector)
    ratio_to_gradient: float | None = None
    pyhessian_over_ours: float | None = None
    error: str | None = None  # "ErrorClass: message" when the method failed
    info: dict[str, Any] = field(default_factory=dict)


def timed_row(method: str, fn: Callable[[], Any], repeats: int, per: int = 1, **info: Any) -> Row:
    """Time ``fn`` (median seconds divided by ``per``); an exception gives an "n/a" row."""
    try:
        times = wall_times(fn, repeats)
    except Exception as exc:  # report, don't abort the whole benchmark
        return Row(method, error=f"{type(exc).__name__}: {exc}", info=info)
    return Row(method, statistics.median(times) / per, times, info=info)


def gradient_pass(w: Workload) -> Callable[[], list[Tensor]]:
    params = [p for p in w.model.parameters() if p.requires_grad]
    n = w.num_samples

    def run() -> list[Tensor]:
        total = [torch.zeros_like(p) for p in params]
        for x, y in w.batches:
            grads = torch.autograd.grad(w.loss_fn(w.model(x), y) * len(y) / n, params)
            for t, g in zip(total, grads):
                t.add_(g)
        return total

    return run


def ours_rows(w: Workload, v: Tensor, repeats: int) -> tuple[list[Row], dict[str, Tensor]]:
    """Rows for ``matvec`` and ``matmat`` per backend, and each backend's ``H v``."""
    rows, products = [], {}
    for backend in BACKENDS:
        H = ls.hessian(w.model, w.batches, w.loss_fn, backend=backend, cache=True)
        row = timed_row(
            f"ours HVP, {backend}", lambda H=H: H.matvec(v), repeats, backend=backend, k=1
        )
        rows.append(row)
        if row.error is None:
            products[backend] = H.matvec(v)
        for k in BLOCK_SIZES:
            V = torch.randn(v.numel(), k, generator=torch.Generator().manual_seed(k))
            rows.append(
                timed_row(
                    f"ours matmat k={k} per vector, {backend}",
                    lambda H=H, V=V: H.matmat(V),
                    repeats,
                    per=k,
                    backend=backend,
                    k=k,
                )
            )
    return rows, products


def pyhessian_row(w: Workload, v: Tensor, repeats: int) -> tuple[Row, Tensor | None]:
    """PyHessian's full-data HVP, on a deep copy of the model, and its ``H v`` (flat)."""
    method = "PyHessian HVP (dataloader_hv_product)"
    try:
        from pyhessian import hessian as PyHessian

        # A deep copy: PyHessian calls model.eval() and leaves graphs on .grad.
        h = PyHessian(copy.deepcopy(w.model), w.loss_fn, dataloader=w.batches, cuda=False)
    except Exception as exc:  # not installed or broken: report "n/a"
        return Row(method, error=f"{type(exc).__name__}: {exc}"), None
    v_list = [t.view_as(p) for t, p in zip(v.split([p.numel() for p in h.params]), h.params)]
    with warnings.catch_warnings():
        # PyHessian's own ``loss.backward(create_graph=True)`` warns about a reference cycle.
        warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
        row = timed_row(method, lambda: h.dataloader_hv_product(v_list), repeats, k=1)
        if row.error is not None:
            return row, None
        _, hv = h.dataloader_hv_product(v_list)
    return row, torch.cat([t.reshape(-1) for t in hv]).detach()


def relative_difference(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def add_ratios(rows: list[Row], gradient: float, pyhessian: float | None) -> None:
    for row in rows:
        if row.seconds is None:
            continue
        row.ratio_to_gradient = row.seconds / gradient
        if pyhessian is not None and row.method.startswith("ours"):
            row.pyhessian_over_ours = pyhessian / row.seconds


def target_checks(rows: list[Row]) -> dict[str, dict[str, Any]]:
    """The two targets of the issue, each with the faster of our backends."""

    def best(k: int) -> Row | None:
        ok = [r for r in rows if r.info.get("k") == k and "backend" in r.info and r.seconds]
        return min(ok, key=lambda r: r.seconds, default=None)

    checks = {}
    for label, k, limit in (
        (f"single HVP <= {TARGET_SINGLE}x gradient", 1, TARGET_SINGLE),
        (
            f"matmat per vector at k={BLOCK_SIZES[-1]} <= {TARGET_BLOCK}x gradient",
            BLOCK_SIZES[-1],
            TARGET_BLOCK,
        ),
    ):
        row = best(k)
        ratio = None if row is None else row.ratio_to_gradient
        checks[label] = {
            "ratio": ratio,
            "backend": None if row is None else row.info["backend"],
            "passed": ratio is not None and ratio <= limit,
        }
    return checks


def run_workload(w: Workload, repeats: int) -> dict[str, Any]:
    v = torch.randn(w.num_params, generator=torch.Generator().manual_seed(0))
    grad_row = timed_row("full-data gradient (1 pass)", gradient_pass(w), repeats)
    rows, products = ours_rows(w, v, repeats)
    py_row, py_product = pyhessian_row(w, v, repeats)
    all_rows = [grad_row, *rows, py_row]
    add_ratios(all_rows, grad_row.seconds, py_row.seconds)
    agreement = {
        backend: relative_difference(hv, py_product)
        for backend, hv in products.items()
        if py_product is not None
    }
    return {
        "name": w.name,
        "description": w.description,
        "num_samples": w.num_samples,
        "num_batches": len(list(w.batches)),
        "batch_size": BATCH_SIZE,
        "num_params": w.num_params,
        "rows": [asdict(r) for r in all_rows],
        "checks": target_checks(all_rows),
        "relative_difference_to_pyhessian": agreement,
    }


# -- reporting -----------------------------------------------------------------------------------
METHOD_WIDTH = 52


def ratio_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table_line(method: str, seconds: str, ratio: str, pyhessian: str) -> str:
    return f"{method:<{METHOD_WIDTH}} {seconds:>10} {ratio:>11} {pyhessian:>15}"


def print_table(result: dict[str, Any]) -> None:
    print(
        f"\n{result['name']}: {result['description']}; {result['num_samples']} samples in "
        f"{result['num_batches']} batches of {result['batch_size']}, {result['num_params']} params"
    )
    header = table_line("method", "seconds", "x gradient", "PyHessian/ours")
    print(header)
    print("-" * len(header))
    for row in result["rows"]:
        if row["error"] is not None:
            error_class = row["error"].split(":", 1)[0]
            print(table_line(row["method"], f"n/a ({error_class})", "-", "-"))
            continue
        print(
            table_line(
                row["method"],
                f"{row['seconds']:.5f}",
                ratio_cell(row["ratio_to_gradient"]),
                ratio_cell(row["pyhessian_over_ours"]),
            )
        )
    checks = []
    for label, check in result["checks"].items():
        verdict = "PASS" if check["passed"] else "FAIL"
        detail = "n/a" if check["ratio"] is None else f"{check['ratio']:.2f}x, {check['backend']}"
        checks.append(f"{label}: {verdict} ({detail})")
    print(f"targets [{result['name']}]: " + "; ".join(checks))
    if result["relative_difference_to_pyhessian"]:
        diffs = ", ".join(
            f"{b} {d:.1e}" for b, d in result["relative_difference_to_pyhessian"].items()
        )
        print(f"||Hv_ours - Hv_PyHessian|| / ||Hv_PyHessian||: {diffs}")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def warn_if_busy() -> None:
    load = load_average()
    if load is not None and load > 0.5:
        print(f"warning: 1-minute load average {load:.2f}; other jobs may distort the timings")


def environment(args: argparse.Namespace, repeats: int) -> dict[str, Any]:
    try:
        from importlib.metadata import version

        pyhessian_version = version("pyhessian")
    except Exception:
        pyhessian_version = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "pyhessian": pyhessian_version,
        "landscape": ls.__version__,
        "python": platform.python_version(),
        "num_threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "device": "cpu",
        "dtype": "float32",
        "repeats": repeats,
        "statistic": "median after one warm-up call",
        "quick": args.quick,
        "load_average_at_start": load_average(),
    }


# -- main ----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed calls per method, median reported (default 5, 2 with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_SAMPLES} samples per workload, fewer repeats",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="JSON file to write (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 5)
    if repeats < 1:
        sys.exit("--repeats must be at least 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    env = environment(args, repeats)
    print(
        f"torch {env['torch']}, {env['num_threads']} threads, {env['cpu']}; "
        f"median of {repeats} after a warm-up"
    )
    warn_if_busy()
    results = []
    for make in (mnist1d_mlp, digits_cnn):
        workload = make(args.quick)
        for variant in (workload, as_dataloader(workload)):
            result = run_workload(variant, repeats)
            print_table(result)
            results.append(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"environment": env, "workloads": results}, indent=2) + "\n")
    print(f"\nresults written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
