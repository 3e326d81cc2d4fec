"""Where the time of a Hessian product goes, and the floor it cannot go below: FLOPs.

For a workload of ``benchmarks/realistic.py`` (ResNet-20 by default), counts the
floating-point operations of a gradient pass, of a single Hessian-vector product by
double-backward, and of each extra vector pushed through a retained gradient graph, with
``torch.utils.flop_counter.FlopCounterMode``; times them; and prints the operators that
take the time of one extra double-backward call (``torch.profiler``). The FLOP ratios are
the floor of the time ratios on compute-bound hardware: an exact product cannot cost less
than its arithmetic.

Forward-mode accounting for a linear layer (forward 1 unit, backward 2) gives the same
floor: a Hessian-vector product adds a tangent forward (2 units) and a tangent backward
(4 units) to the gradient's 3, so one product is about 3x a gradient pass and each extra
vector about 2x — the ``1.5x`` and ``2.5x`` targets sit below it.

Run ``.venv/bin/python benchmarks/profile_products.py [--workload resnet20|gpt2|vit_tiny|mlp]
[--quick]``; results go to ``benchmarks/results/profile_<workload>.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import realistic
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

RESULTS = Path(__file__).with_name("results")


def _loss(model, batch, loss_fn):
    if isinstance(batch, dict):
        return model(**batch).loss
    return loss_fn(model(batch[0]), batch[1])


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _seconds(fn, repeats: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="resnet20")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    sizes = realistic.QUICK if args.quick else realistic.FULL
    w = realistic.BUILDERS[args.workload](sizes)
    model, batch, loss_fn = w.model, w.batches[0], w.loss_fn
    params = [p for p in model.parameters() if p.requires_grad]
    v = [torch.randn_like(p) for p in params]
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):

        def gradient():
            torch.autograd.grad(_loss(model, batch, loss_fn), params)

        def graph():
            loss = _loss(model, batch, loss_fn)
            return torch.autograd.grad(loss, params, create_graph=True)

        def single():
            torch.autograd.grad(graph(), params, v)

        g = graph()

        def extra():
            torch.autograd.grad(g, params, v, retain_graph=True)

        flops = {"gradient": _flops(gradient), "single": _flops(single), "extra": _flops(extra)}
        seconds = {name: _seconds(fn) for name, fn in (("gradient", gradient), ("single", single))}
        seconds["extra"] = _seconds(extra)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            extra()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    result = {
        "workload": args.workload,
        "batch_samples": realistic._batch_len(batch),
        "flops": flops,
        "seconds": seconds,
        "flop_ratios": {k: flops[k] / flops["gradient"] for k in ("single", "extra")},
        "time_ratios": {k: seconds[k] / seconds["gradient"] for k in ("single", "extra")},
        "profile_extra_vector": table,
    }
    print(f"{args.workload}, one batch of {result['batch_samples']} samples:")
    for key in ("single", "extra"):
        print(
            f"  {key:>7}: {result['flop_ratios'][key]:.2f}x a gradient pass in FLOPs, "
            f"{result['time_ratios'][key]:.2f}x in time"
        )
    print("where one extra vector's double-backward spends its time:")
    print(table)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"profile_{args.workload}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
