"""Hessian spectrum of a model sharded with FSDP2: each rank holds P / world of every vector.

Run with ``torchrun``, on CPUs (gloo) or GPUs (NCCL, one per rank) alike::

    torchrun --nproc-per-node 2 examples/fsdp_spectrum.py            # CPU: gloo
    torchrun --nproc-per-node 8 examples/fsdp_spectrum.py --layers 12 --width 768

A Llama-shaped causal language model (built from a config: no download) is sharded with
``torch.distributed.fsdp.fully_shard``, block by block and then the root, as a training
script would. ``ls.hessian`` on the sharded model returns an operator whose vectors are each
rank's shards; its products are central differences of FSDP's own gradients, with the data
sharded across the ranks (batch i on rank i % world). Then the top eigenvalues (Lanczos
with full reorthogonalization on the shards), the trace (Hutch++) and the spectral density
(stochastic Lanczos quadrature) run unchanged: every inner product is all-reduced, and every
rank prints the same numbers.

``--quick`` makes it small and short (the test suite runs it so).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist

import landscape as ls


def build(layers: int, width: int, vocab: int, device: torch.device) -> torch.nn.Module:
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)  # the same initial model on every rank
    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=int(8 * width / 3) // 8 * 8,
        num_hidden_layers=layers,
        num_attention_heads=max(1, width // 64),
        num_key_value_heads=max(1, width // 128),
        max_position_embeddings=256,
    )
    return transformers.LlamaForCausalLM(config).to(device).eval()


def batches(count: int, size: int, length: int, vocab: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)  # the same data on every rank; each uses its share
    out = []
    for _ in range(count):
        ids = torch.randint(0, vocab, (size, length), generator=g)
        out.append({"input_ids": ids, "labels": ids})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="tiny model, few products")
    args = parser.parse_args()
    if args.quick:
        args.layers, args.width, args.vocab, args.batches = 2, 32, 128, 3

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else None
    if cuda:
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    try:
        from torch.distributed.fsdp import fully_shard

        model = build(args.layers, args.width, args.vocab, device)
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)

        data = batches(args.batches, 2, 32 if args.quick else 64, args.vocab)
        H = ls.hessian(model, data)
        space = H.vector_space
        if rank == 0:
            print(
                f"{world} ranks ({'NCCL' if cuda else 'gloo'}), P = {space.dim:,} parameters, "
                f"{space.local_dim:,} on this rank ({space.local_dim / space.dim:.1%})"
            )
        start = time.perf_counter()
        top = ls.eigenvalues(H, k=3, tol=1e-4 if args.quick else 1e-5)
        trace = ls.trace(H, num_matvecs=12 if args.quick else 30)
        density = ls.spectral_density(H, 2 if args.quick else 4, 10 if args.quick else 30)
        seconds = time.perf_counter() - start
        if rank == 0:
            values = ", ".join(f"{v:.4f}" for v in top.values.tolist())
            print(f"top eigenvalues {values} (residuals {top.residuals.max():.1e})")
            print(f"trace {trace.value:.4f} ± {trace.stderr:.2g} (Hutch++, {trace.num_matvecs})")
            print(
                f"density: first moment tr(H)/P = {density.moment(1):.3e}, "
                f"{density.num_matvecs} products; {H.num_matvecs} products in {seconds:.0f} s"
            )
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
