"""FSDP2-sharded models (``fully_shard``) on 2 and 4 gloo ranks give what one process gives.

Each rank holds only its shard of every vector (about P / world numbers); inner products
are all-reduced; Hessian products are central differences of FSDP's own gradients, and
Gauss-Newton and empirical Fisher products central differences of outputs and per-sample
losses followed by one FSDP backward, with the data sharded across ranks (the zoo's three uneven batches: world 2 gives rank 0 two batches
and rank 1 one, world 4 leaves rank 3 none, so it runs zero-weighted passes).

The truth is the unsharded zoo model (float64) and autograd's double-backward Hessian, with
the same counter-based probes (``VectorSpace(counter_random=True)``) for the trace and the
density. Tolerances: the finite-difference error of these models, whose Hugging Face loss is
float32 inside (measured 5e-6 to 1e-5 relative per Hessian product, 2e-8 to 2e-6 for
Gauss-Newton and Fisher products, ``docs/howto/distributed.md``): products 5e-5, eigenvalues
and moments 2e-5, traces 2e-5 of their largest quadratic form ``|z^T H z|`` (the forms'
errors are relative to themselves, and on Llama they cancel to a trace twelve times
smaller: the unsharded finite-difference Hessian's trace is 1.8e-4 off its own mean there);
between world sizes the same, since the reductions' order differs.
"""

import copy
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import zoo

import landscape as ls
from landscape.linalg import lanczos
from landscape.operators.space import VectorSpace

pytestmark = pytest.mark.distributed

NAMES = {"gpt2": zoo.gpt2, "llama": zoo.llama}


def _shard(model):
    from torch.distributed.fsdp import fully_shard

    blocks = model.transformer.h if hasattr(model, "transformer") else model.model.layers
    for block in blocks:
        fully_shard(block)
    fully_shard(model)
    return model


def _global(ranges, local, P):
    """Scatter a rank's local rows into a P-long tensor (zeros elsewhere)."""
    out = torch.zeros(P, *local.shape[1:], dtype=local.dtype)
    offset = 0
    for a, b in ranges:
        out[a:b] = local[offset : offset + b - a]
        offset += b - a
    return out


def _worker(rank, world, tmp, name, full):
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world
    )
    try:
        torch.set_num_threads(1)
        case = NAMES[name]()
        model = _shard(case.model)
        shards = [p.to_local().clone() for p in model.parameters()]
        H = ls.hessian(model, case.batches)
        space = H.vector_space
        V = torch.randn(
            space.dim, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
        )
        mask = torch.zeros(space.dim, dtype=torch.bool)
        for a, b in space.ranges:
            mask[a:b] = True
        record = {"ranges": space.ranges, "local_dim": space.local_dim, "P": space.dim}
        record["product"] = H @ V[mask].contiguous()
        for kind in ("gauss_newton", "fisher"):
            record[kind] = getattr(ls, kind)(model, case.batches) @ V[mask].contiguous()
        bases = []
        original = lanczos._ritz_vectors

        def spy(Q, m, S, device):
            bases.append(tuple(Q.shape))
            return original(Q, m, S, device)

        lanczos._ritz_vectors = spy
        try:
            ev = ls.eigenvalues(H, k=3 if full else 1, tol=1e-6, seed=0)
        finally:
            lanczos._ritz_vectors = original
        record.update(eigenvalues=ev.values, basis_shape=bases[0], vectors=ev.vectors.shape)
        record["trace"] = ls.trace(H, num_matvecs=12 if full else 6, seed=0).value
        d = ls.spectral_density(H, 3 if full else 2, 10 if full else 6, seed=0)
        record["moments"] = torch.tensor([d.moment(p) for p in (1, 2, 3)])
        record["unchanged"] = all(
            torch.equal(a, p.to_local()) for a, p in zip(shards, model.parameters())
        ) and all(p.grad is None for p in model.parameters())
        layers = ls.layerwise(model, case.batches, metrics=("trace",), num_probes=4, seed=0)
        record["layer_trace"] = sum(row.trace for row in layers.layers)
        record["matvecs"] = H.num_matvecs
        torch.save(record, os.path.join(tmp, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _reference(name, full):
    case = NAMES[name]()
    H = ls.hessian(case.model, case.batches, backend="double_backward")
    P = H.shape[0]
    V = torch.randn(P, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = {"product": H @ V, "eigenvalues": ls.eigenvalues(H, k=3 if full else 1, tol=1e-10).values}
    for kind in ("gauss_newton", "fisher"):
        out[kind] = getattr(ls, kind)(case.model, case.batches) @ V
    H._vector_space = VectorSpace(P, H.dtype, H.device, counter_random=True)  # the same probes
    estimate = ls.trace(H, num_matvecs=12 if full else 6, seed=0)
    # an estimate's finite-difference error is relative to its quadratic forms z^T H z, not
    # to their mean: on Llama they are about +-19 around a trace of 1.6
    out["trace"], out["trace_scale"] = estimate.value, float(estimate.samples.abs().max())
    d = ls.spectral_density(H, 3 if full else 2, 10 if full else 6, seed=0)
    out["moments"] = torch.tensor([d.moment(p) for p in (1, 2, 3)])
    # layerwise's per-layer Hutchinson samples add up to z^T H z over all parameters: with
    # the same counter-based probes, the whole Hessian's Hutchinson estimate.
    estimate = ls.hutchinson_trace(H, num_matvecs=4, seed=0)
    out["layer_trace"], out["layer_scale"] = estimate.value, float(estimate.samples.abs().max())
    return out


def _rel(a, b):
    return float((torch.as_tensor(a) - torch.as_tensor(b)).norm() / torch.as_tensor(b).norm())


def _run(tmp_path, world, name, full):
    mp.spawn(_worker, args=(world, str(tmp_path), name, full), nprocs=world, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]


def _check(records, reference, world):
    P = records[0]["P"]
    for kind in ("product", "gauss_newton", "fisher"):
        product = sum(_global(r["ranges"], r[kind], P) for r in records)
        assert _rel(product, reference[kind]) < 5e-5, kind
    for r in records:
        assert r["unchanged"]  # shards restored bitwise, no .grad left
        assert abs(r["local_dim"] - P / world) <= 0.1 * P / world  # about P / world per rank
        assert r["basis_shape"][1] == r["local_dim"] and r["vectors"][0] == r["local_dim"]
        # every rank computed the same numbers (reductions broadcast from rank 0)
        assert torch.equal(r["eigenvalues"], records[0]["eigenvalues"])
        assert r["trace"] == records[0]["trace"]
    assert sum(r["local_dim"] for r in records) == P
    assert _rel(records[0]["eigenvalues"], reference["eigenvalues"]) < 2e-5
    assert abs(records[0]["trace"] - reference["trace"]) < 2e-5 * reference["trace_scale"]
    assert _rel(records[0]["moments"], reference["moments"]) < 2e-5
    layer_trace = records[0]["layer_trace"]
    assert abs(layer_trace - reference["layer_trace"]) < 2e-5 * reference["layer_scale"]


def test_two_ranks_of_a_sharded_gpt2_match_one_process(tmp_path):
    records = _run(tmp_path, 2, "gpt2", full=False)
    _check(records, _reference("gpt2", full=False), 2)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt2", "llama"])
@pytest.mark.parametrize("world", [2, 4])
def test_sharded_top3_trace_and_density_match_one_process(tmp_path, name, world):
    records = _run(tmp_path, world, name, full=True)
    _check(records, _reference(name, full=True), world)


def test_what_cannot_take_a_sharded_model_says_so_by_name(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        case = zoo.gpt2()
        model = _shard(copy.deepcopy(case.model))
        with pytest.raises(ValueError, match=r"ls\.sharpness cannot take .* sharded with FSDP"):
            ls.sharpness(model, case.batches)
        with pytest.raises(ValueError, match="backend='double_backward' is not available"):
            ls.hessian(model, case.batches, backend="double_backward")
        H = ls.hessian(model, case.batches)  # one rank: still the sharded operator
        assert H.vector_space.is_sharded and H.vector_space.local_dim == H.vector_space.dim
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_the_fsdp_example_runs_under_torchrun():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--nproc-per-node", "2", str(root / "examples/fsdp_spectrum.py")]
    result = subprocess.run(
        [*command, "--quick"], capture_output=True, text=True, timeout=900, cwd=root
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 ranks (gloo)" in result.stdout and "top eigenvalues" in result.stdout
