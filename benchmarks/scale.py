"""GPT-2 small (124M parameters) here: landscape next to hessian-eigenthings and PyHessian.

The model is ``transformers.GPT2LMHeadModel(GPT2Config())``, built offline (random weights,
seed 0), float32, eval mode, on one batch of 2 sequences x 64 tokens with ``labels =
input_ids`` (the model's own shifted cross-entropy over 126 scored tokens). Every step runs
in its own process (``--worker STEP``), so its peak resident set size (``ru_maxrss``) is
its own; a watchdog stops a step whose RSS passes ``--rss-limit-gb`` (default 14) and the
row says so instead of the kernel's OOM killer ending the run.

Steps (``--steps``, comma-separated; default all):

* ``gradient`` — ``torch.autograd.grad`` of the loss (the unit of cost);
* ``product:<backend>`` — ``ls.hessian(model, batches, backend=...) @ v``: first call (with
  ``auto``'s measurement or the finite-difference step search) and later calls;
* ``top1``, ``top5`` — ``ls.eigenvalues(H, k)`` with default settings, split into the time
  in products and the algorithm's own time (its "step" cost next to the product's);
  ``top1:1e-6`` with a tighter tolerance (a converged reference);
* ``trace`` — ``ls.trace(H)`` (Hutch++, 99 products); ``density`` — ``ls.spectral_density(H,
  2, 20)`` (``density:10x30``: 10 probes x 30 steps);
* ``eigenthings:*`` — hessian-eigenthings 1.0.0a5 ``HessianOperator`` with ``hf_lm_loss``:
  ``product``, ``top1`` / ``top5`` (``lanczos(which="LA")``, defaults otherwise), ``trace``
  (``hutch_plus_plus``, 99), ``density`` (``spectral_density(num_runs=2, lanczos_steps=20)``);
* ``pyhessian:*`` — PyHessian 0.1 on logits and shifted labels (eager attention):
  ``product``, ``top1`` (power iteration, ``tol=1e-3``), ``trace`` (Hutchinson,
  ``maxIter=100``), ``density`` (needs ``torch.eig``, removed in torch 2: reported as such);
* ``analyze`` (``analyze:SECONDS``, default 900) — ``ls.analyze(model, batches,
  time_budget=SECONDS)``: wall time against the budget, the plan's own time, the stages
  left out and why, and each stage's predicted and measured seconds.

Results go to ``benchmarks/results/scale.json`` (``--output``), with ratios printed:
each step over one product, our top-1 step over the product, peers over ours. Timings are
wall-clock seconds with ``--threads`` (default 2) threads; on a shared machine repeat them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SEQUENCES, TOKENS = 2, 64
BACKENDS = (
    "auto",
    "double_backward",
    "double_backward_loop",
    "forward_over_reverse",
    "finite_difference",
)
OURS = ("gradient", *(f"product:{b}" for b in BACKENDS), "top1", "top5", "trace", "density")
PEERS = (
    "eigenthings:product",
    "eigenthings:top1",
    "eigenthings:top5",
    "eigenthings:trace",
    "eigenthings:density",
    "pyhessian:product",
    "pyhessian:top1",
    "pyhessian:trace",
    "pyhessian:density",
)
STEPS = (*OURS, *PEERS, "analyze:900")


# -- the workload ---------------------------------------------------------------------------------


def build(attention: str = "sdpa") -> tuple[nn.Module, list[dict[str, Tensor]]]:
    """GPT-2 small from its default config, seed 0, float32, eval mode, and one batch."""
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.GPT2Config()
    config._attn_implementation = attention
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.randint(
        0, config.vocab_size, (SEQUENCES, TOKENS), generator=torch.Generator().manual_seed(1)
    )
    return model, [{"input_ids": ids, "labels": ids}]


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def probe(P: int, seed: int = 0) -> Tensor:
    return torch.randn(P, 1, generator=torch.Generator().manual_seed(seed))


class Timed:
    """Wraps an operator's ``matmat`` to count the seconds spent in products (wall and CPU)."""

    def __init__(self, A: Any) -> None:
        self.A, self.seconds, self.cpu_seconds, self.calls = A, 0.0, 0.0, 0
        original = A._matmat

        def matmat(V: Tensor) -> Tensor:
            start, cpu = time.perf_counter(), time.process_time()
            out = original(V)
            self.seconds += time.perf_counter() - start
            self.cpu_seconds += time.process_time() - cpu
            self.calls += 1
            return out

        A._matmat = matmat


# -- our steps ------------------------------------------------------------------------------------


def step_gradient(model: nn.Module, batches: list) -> dict[str, Any]:
    params = list(model.parameters())
    times = []
    for _ in range(3):
        start = time.perf_counter()
        loss = model(**batches[0]).loss
        torch.autograd.grad(loss, params)
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times[1:]), "first_call": times[0], "times": times}


def step_product(model: nn.Module, batches: list, backend: str) -> dict[str, Any]:
    import landscape as ls

    H = ls.hessian(model, batches, backend=backend)
    v = probe(H.shape[0])
    times, cpu = [], []
    for _ in range(3):
        start, clock = time.perf_counter(), time.process_time()
        H @ v
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - clock)
    return {
        "seconds": statistics.median(times[1:]),
        "first_call": times[0],
        "times": times,
        "cpu_times": cpu,
        "backend_choices": H.backend_choices,
    }


def step_eigenvalues(model: nn.Module, batches: list, k: int, tol: float = 1e-3) -> dict[str, Any]:
    import landscape as ls

    H = ls.hessian(model, batches)
    timer = Timed(H)
    start, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ev = ls.eigenvalues(H, k=k, tol=tol)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    own = seconds - timer.seconds
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "product_cpu_seconds": timer.cpu_seconds,
        "cpu_step_over_product": cpu / max(timer.cpu_seconds, 1e-9),
        "values": ev.values.tolist(),
        "residuals": ev.residuals.tolist(),
        "converged": ev.converged.tolist(),
        "num_matvecs": ev.num_matvecs,
        "product_seconds": timer.seconds,
        "algorithm_seconds": own,
        "step_over_product": seconds / max(timer.seconds, 1e-9),
        "backend_choices": H.backend_choices,
        "warnings": [str(w.message)[:200] for w in caught],
    }


def step_trace(model: nn.Module, batches: list) -> dict[str, Any]:
    import landscape as ls

    H = ls.hessian(model, batches)
    timer = Timed(H)
    start = time.perf_counter()
    est = ls.trace(H)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "value": est.value,
        "stderr": est.stderr,
        "num_matvecs": est.num_matvecs,
        "num_passes": est.num_passes,
        "product_seconds": timer.seconds,
    }


def step_density(
    model: nn.Module, batches: list, probes: int = 2, steps: int = 20
) -> dict[str, Any]:
    import landscape as ls

    H = ls.hessian(model, batches)
    timer = Timed(H)
    start = time.perf_counter()
    d = ls.spectral_density(H, probes, steps)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "num_matvecs": d.num_matvecs,
        "num_passes": d.num_passes,
        "moments": [d.moment(p) for p in (1, 2)],
        "outliers": d.outliers.tolist(),
        "product_seconds": timer.seconds,
    }


# -- peers ----------------------------------------------------------------------------------------


class ShiftedLogits(nn.Module):
    """``input_ids -> logits of positions 0..T-2`` (B (T-1), V): PyHessian's view of the LM."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor) -> Tensor:
        logits = self.model(input_ids=input_ids).logits
        return logits[:, :-1].reshape(-1, logits.shape[-1])


def eigenthings_operator(model: nn.Module, batches: list) -> Any:
    from hessian_eigenthings import HessianOperator, hf_lm_loss

    return HessianOperator(model, batches, hf_lm_loss())


def step_eigenthings(model: nn.Module, batches: list, what: str) -> dict[str, Any]:
    import hessian_eigenthings as he

    op = eigenthings_operator(model, batches)
    start = time.perf_counter()
    if what == "product":
        P = sum(p.numel() for p in model.parameters())
        times = []
        for _ in range(3):
            start = time.perf_counter()
            op.matvec(probe(P)[:, 0])
            times.append(time.perf_counter() - start)
        return {"seconds": statistics.median(times[1:]), "first_call": times[0], "times": times}
    if what in ("top1", "top5"):
        result = he.lanczos(op, k=int(what[3:]), which="LA", seed=0)
        out = {"values": [float(x) for x in result.eigenvalues]}
        for name in ("converged", "num_matvecs", "num_iterations", "residuals"):
            value = getattr(result, name, None)
            if value is not None:
                out[name] = value.tolist() if isinstance(value, Tensor) else value
    elif what == "trace":
        result = he.hutch_plus_plus(op, num_matvecs=99, seed=0)
        out = {"value": float(result.estimate) if hasattr(result, "estimate") else str(result)}
    else:
        result = he.spectral_density(op, num_runs=2, lanczos_steps=20, seed=0)
        out = {"computed": True}
    out["seconds"] = time.perf_counter() - start
    return out


def step_pyhessian(model: nn.Module, batches: list, what: str) -> dict[str, Any]:
    from pyhessian import hessian as PyHessian

    batch = batches[0]
    x, y = batch["input_ids"], batch["labels"][:, 1:].reshape(-1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
        h = PyHessian(ShiftedLogits(model), nn.CrossEntropyLoss(), data=(x, y), cuda=False)
        start = time.perf_counter()
        if what == "product":
            v = [torch.randn_like(p) for p in h.params]
            times = []
            for _ in range(3):
                start = time.perf_counter()
                h.dataloader_hv_product(v) if False else _pyhessian_hv(h, v)
                times.append(time.perf_counter() - start)
            return {"seconds": statistics.median(times[1:]), "first_call": times[0], "times": times}
        if what == "top1":
            values, _ = h.eigenvalues(maxIter=100, tol=1e-3, top_n=1)
            out = {"values": [float(v) for v in values]}
        elif what == "trace":
            samples = h.trace(maxIter=100, tol=1e-3)
            out = {"value": float(sum(samples) / len(samples)), "num_matvecs": len(samples)}
        else:
            h.density(iter=20, n_v=2)
            out = {}
    out["seconds"] = time.perf_counter() - start
    return out


def _pyhessian_hv(h: Any, v: list[Tensor]) -> list[Tensor]:
    from pyhessian.utils import hessian_vector_product

    return hessian_vector_product(h.gradsH, h.params, v)


def step_analyze(model: nn.Module, batches: list, budget: float) -> dict[str, Any]:
    """``ls.analyze(time_budget=budget)``: wall time, the plan's share, what was left out."""
    import landscape as ls

    start = time.perf_counter()
    report = ls.analyze(model, batches, time_budget=budget, progress=False)
    seconds = time.perf_counter() - start
    plan = report.plan
    return {
        "seconds": seconds,
        "time_budget": budget,
        "over_budget": seconds / budget,
        "plan_seconds": plan.units.seconds,
        "plan_share": plan.units.seconds / budget,
        "predicted": plan.predicted,
        "measured": plan.measured,
        "dropped": plan.dropped,
        "scaled": plan.scaled,
        "top_eigenvalues": report.eigenvalues.top.values.tolist(),
    }


# -- the worker and the driver -------------------------------------------------------------------


def run_step(step: str) -> dict[str, Any]:
    """Run one step in this process and return its record (peak RSS included)."""
    peer = step.split(":")[0] if step.split(":")[0] in ("eigenthings", "pyhessian") else None
    model, batches = build("eager" if peer else "sdpa")
    record: dict[str, Any] = {"rss_after_build_gb": peak_rss_gb()}
    if step == "gradient":
        record.update(step_gradient(model, batches))
    elif step.startswith("product:"):
        record.update(step_product(model, batches, step.split(":")[1]))
    elif step.split(":")[0] in ("top1", "top5"):  # "top1:1e-6": a tighter tolerance
        name, _, tol = step.partition(":")
        record.update(step_eigenvalues(model, batches, int(name[3:]), float(tol or 1e-3)))
    elif step == "trace":
        record.update(step_trace(model, batches))
    elif step.startswith("density"):  # "density:10x30": probes x steps
        shape = step.partition(":")[2] or "2x20"
        probes, steps = (int(x) for x in shape.split("x"))
        record.update(step_density(model, batches, probes, steps))
    elif step.startswith("analyze"):
        record.update(step_analyze(model, batches, float(step.partition(":")[2] or 900)))
    elif peer == "eigenthings":
        record.update(step_eigenthings(model, batches, step.split(":")[1]))
    elif peer == "pyhessian":
        record.update(step_pyhessian(model, batches, step.split(":")[1]))
    else:
        raise ValueError(f"unknown step {step!r}; steps: {', '.join(STEPS)}")
    record["peak_rss_gb"] = peak_rss_gb()
    return record


def watch(proc: subprocess.Popen, limit_gb: float, stopped: list[float]) -> None:
    """Stop ``proc`` if its resident set passes ``limit_gb`` (sampled every 0.1 s)."""
    import psutil

    try:
        child = psutil.Process(proc.pid)
        while proc.poll() is None:
            rss = child.memory_info().rss / 1e9
            if rss > limit_gb:
                stopped.append(rss)
                proc.kill()
                return
            time.sleep(0.1)
    except psutil.NoSuchProcess:
        return


def spawn(step: str, threads: int, limit_gb: float, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "record.json"
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        command = [
            sys.executable,
            __file__,
            "--worker",
            step,
            "--output",
            str(out),
            "--threads",
            str(threads),
        ]
        start = time.perf_counter()
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        stopped: list[float] = []
        watcher = threading.Thread(target=watch, args=(proc, limit_gb, stopped), daemon=True)
        watcher.start()
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            return {"step": step, "error": f"timed out after {timeout:.0f} s"}
        wall = time.perf_counter() - start
        if stopped:
            return {
                "step": step,
                "error": f"stopped by the watchdog at {stopped[0]:.1f} GB (limit {limit_gb} GB)",
            }
        if proc.returncode != 0 or not out.exists():
            return {
                "step": step,
                "error": err.strip().splitlines()[-1][:300]
                if err.strip()
                else f"exit {proc.returncode}",
            }
        record = json.loads(out.read_text())
        record.update(step=step, process_seconds=wall)
        return record


def ratios(records: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Seconds over one product (``product:auto``, later calls), and peers over ours."""
    out: dict[str, float] = {}
    product = records.get("product:auto", {}).get("seconds")
    if product:
        for step, r in records.items():
            if r.get("seconds"):
                out[f"{step} / product"] = r["seconds"] / product
    for ours in ("top1", "top5", "trace", "density", "product:auto"):
        mine = records.get(ours, {}).get("seconds")
        name = ours.split(":")[0]
        for peer in ("eigenthings", "pyhessian"):
            theirs = records.get(f"{peer}:{name}", {}).get("seconds")
            if mine and theirs:
                out[f"{peer}:{name} / ours"] = theirs / mine
    for ours in ("top1", "top5"):
        r = records.get(ours, {})
        if r.get("product_seconds") and r.get("num_matvecs"):
            out[f"{ours}: step / product"] = r["seconds"] / r["product_seconds"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--output", default=str(RESULTS / "scale.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rss-limit-gb", type=float, default=14.0)
    parser.add_argument("--timeout", type=float, default=7200.0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        record = run_step(args.worker)
        Path(args.output).write_text(json.dumps(record, indent=2))
        return
    steps = [s for s in args.steps.split(",") if s]
    path = Path(args.output)
    previous = json.loads(path.read_text()) if path.exists() else {}
    records = dict(previous.get("steps", {}))
    for step in steps:
        print(f"{step} ...", flush=True)
        record = spawn(step, args.threads, args.rss_limit_gb, args.timeout)
        records[step] = record
        summary = {k: record[k] for k in ("seconds", "peak_rss_gb", "error") if k in record}
        print(f"  {summary}", flush=True)
    result = {
        "workload": f"GPT-2 small, float32, {SEQUENCES} x {TOKENS} tokens, labels = input ids",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "threads": args.threads,
        "steps": records,
        "ratios": ratios(records),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    for name, value in result["ratios"].items():
        print(f"{name:40s} {value:8.2f}")


if __name__ == "__main__":
    main()
