"""``ls.analyze(budget="fast")`` on a ~3.2-million-parameter MLP, with its peak memory.

Run as ``python tests/scale_worker.py [OUT.json]`` (tests/test_scale.py runs it in a fresh
process so that the peak resident set size is this workload's alone). Prints and writes a
JSON record: parameters, samples, wall time per stage, and peak RSS (``getrusage``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import resource
import sys
import threading
import time
import warnings
from collections.abc import Iterator

import torch
from torch import nn

import landscape as ls
from landscape import analysis

WIDTHS = (1024, 1536, 1024, 10)  # MLP 1024-1536-1024-10: 3,158,538 parameters
NUM_SAMPLES = 256
BATCH_SIZE = 64


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (``ru_maxrss`` is in KiB on Linux).

    Returns
    -------
    int
        Bytes.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def problem() -> tuple[nn.Module, torch.utils.data.DataLoader]:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(WIDTHS)):
        layers.append(nn.Linear(a, b))
        if i < len(WIDTHS) - 2:
            layers.append(nn.Tanh())
    model = nn.Sequential(*layers)
    g = torch.Generator().manual_seed(1)
    X = torch.randn(NUM_SAMPLES, WIDTHS[0], generator=g)
    with torch.no_grad():  # labels from the model itself, with some flipped: a real minimum
        y = model(X).argmax(1)
    flip = torch.rand(NUM_SAMPLES, generator=g) < 0.2
    y[flip] = torch.randint(0, WIDTHS[-1], (int(flip.sum()),), generator=g)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(X, y), batch_size=BATCH_SIZE
    )
    return model, loader


def current_rss_bytes() -> int:
    """Resident set size now (Linux ``/proc``; 0 elsewhere).

    Returns
    -------
    int
        Bytes.
    """
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:
        return 0


@contextlib.contextmanager
def stage_peaks() -> Iterator[dict[str, float]]:
    """Sample the RSS every 10 ms and keep its maximum per ``analyze`` stage (GiB).

    Yields
    ------
    dict
        Filled while the context runs: ``{stage: peak GiB}``.
    """
    peaks: dict[str, float] = {}
    current = ["setup"]
    original = analysis._Stages.stage

    @contextlib.contextmanager
    def stage(self, name):
        current[0] = name
        try:
            with original(self, name) as cost:
                yield cost
        finally:
            current[0] = "between stages"

    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.01):
            gib = current_rss_bytes() / 2**30
            peaks[current[0]] = max(peaks.get(current[0], 0.0), gib)

    analysis._Stages.stage = stage
    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield peaks
    finally:
        done.set()
        thread.join()
        analysis._Stages.stage = original


def main(out: str | None = None) -> dict:
    model, loader = problem()
    before = peak_rss_bytes()
    start = time.perf_counter()
    with warnings.catch_warnings(), stage_peaks() as peaks:
        warnings.simplefilter("ignore")
        report = ls.analyze(model, loader, budget="fast", surfaces=True, progress=False)
    seconds = time.perf_counter() - start
    record = {
        "num_params": sum(p.numel() for p in model.parameters()),
        "num_samples": NUM_SAMPLES,
        "batch_size": BATCH_SIZE,
        "widths": list(WIDTHS),
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "stage_seconds": {k: round(v.seconds, 2) for k, v in report.costs.items()},
        "stage_hvps": {k: int(v.num_matvecs) for k, v in report.costs.items()},
        "peak_rss_before_analyze_gib": before / 2**30,
        "peak_rss_gib": peak_rss_bytes() / 2**30,
        "sampled_peak_rss_gib_per_stage": {k: round(v, 2) for k, v in peaks.items()},
        "top_eigenvalues": [float(v) for v in report.eigenvalues.top.values],
        "trace": float(report.trace.value),
        "surface_points": int(report.surface_1d.num_points + report.surface_2d.num_points),
    }
    text = json.dumps(record, indent=2)
    print(text)
    if out is not None:
        with open(out, "w") as f:
            f.write(text + "\n")
    return record


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
