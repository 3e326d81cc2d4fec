"""Hessian-product backends on a small causal LM at sequence length 256: time and memory.

What is measured
----------------
A ``transformers.GPT2LMHeadModel`` (vocab 2048, n_embd 192, 4 layers, 4 heads, 1.8M
parameters; float32, CPU) on 8 random sequences of 256 tokens, its own loss. For each
backend of ``ls.hessian`` — ``double_backward``, ``double_backward_loop``,
``forward_over_reverse`` (all exact, under the math attention kernel, whose memory grows
with the square of the sequence length) and ``finite_difference`` (first-order autograd
only, with PyTorch's default fused attention kernel) — the seconds of one product and of a
block of 4 per vector, as a ratio to one gradient pass with the default kernel, its
relative difference to the exact product, and the peak RSS of a process that does only
that (each backend runs in its own subprocess, so the peak is its own).

How to run
----------
``.venv/bin/python benchmarks/backends.py [--quick] [--output PATH]``; results go to
``benchmarks/results/backends.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

BACKENDS = ("double_backward", "double_backward_loop", "forward_over_reverse", "finite_difference")
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "backends.json"


def _problem(quick: bool):
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    vocab, embd, layers, heads, length, sequences = (
        (256, 32, 2, 2, 64, 4) if quick else (2048, 192, 4, 4, 256, 8)
    )
    config = transformers.GPT2Config(
        vocab_size=vocab, n_positions=length, n_embd=embd, n_layer=layers, n_head=heads,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, vocab, (sequences, length), generator=torch.Generator().manual_seed(1))
    batches = [
        {"input_ids": ids[i : i + 4], "labels": ids[i : i + 4]} for i in range(0, sequences, 4)
    ]
    return model, batches


def _best(fn, repeats: int = 2) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def child(backend: str, quick: bool) -> dict:
    import landscape as ls

    model, batches = _problem(quick)
    params = list(model.parameters())

    def gradient() -> None:
        for batch in batches:
            torch.autograd.grad(model(**batch).loss, params)

    if backend == "gradient":
        seconds = _best(gradient)
        return {"backend": backend, "seconds": seconds, "peak_rss_mib": _rss()}
    H = ls.hessian(model, batches, backend=backend)
    g = torch.Generator().manual_seed(2)
    v = torch.randn(H.shape[0], 1, generator=g)
    V = torch.randn(H.shape[0], 4, generator=g)
    single = _best(lambda: H @ v)
    block = _best(lambda: H @ V, repeats=1) / 4
    exact = (
        ls.hessian(model, batches, backend="double_backward") @ v
        if backend == BACKENDS[-1]
        else None
    )
    error = None if exact is None else float((H @ v - exact).norm() / exact.norm())
    return {
        "backend": backend,
        "single": single,
        "block_vector": block,
        "relative_error": error,
        "peak_rss_mib": _rss(),
    }


def _rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        print(json.dumps(child(args._child, args.quick)))
        return 0
    rows = {}
    for name in ("gradient", *BACKENDS):
        command = [sys.executable, __file__, "--_child", name] + (["--quick"] if args.quick else [])
        out = subprocess.run(command, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            rows[name] = {"backend": name, "error": out.stderr.strip().splitlines()[-1][:300]}
        else:
            rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
    unit = rows["gradient"]["seconds"]
    base_rss = rows["gradient"]["peak_rss_mib"]
    print(
        f"GPT-2 causal LM, {'quick' if args.quick else 'sequence length 256'}; gradient pass "
        f"{unit:.3f} s (default attention), peak RSS {base_rss:.0f} MiB"
    )
    print(
        f"{'backend':<22}{'single':>10}{'per vector (k=4)':>18}"
        f"{'peak RSS MiB':>14}{'rel. error':>12}"
    )
    for name in BACKENDS:
        row = rows[name]
        if "error" in row:
            print(f"{name:<22} failed: {row['error']}")
            continue
        err = "-" if row["relative_error"] is None else f"{row['relative_error']:.1e}"
        print(
            f"{name:<22}{row['single'] / unit:>9.2f}x{row['block_vector'] / unit:>17.2f}x"
            f"{row['peak_rss_mib']:>14.0f}{err:>12}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=2))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
