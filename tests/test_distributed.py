"""Two gloo processes give the same products as one process (data-parallel, torch.distributed)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from cases import CASES
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

import landscape as ls

pytestmark = pytest.mark.distributed


def _problem():
    model, batches = CASES[1].build()  # BatchNorm CNN; batches of 10, 10, 3
    X = torch.cat([b[0] for b in batches])[:22]
    y = torch.cat([b[1] for b in batches])[:22]
    P = sum(p.numel() for p in model.parameters())
    V = torch.randn(P, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return model, batches, X, y, V


def _products(model, batches, X, y, sampler=None):
    loader = DataLoader(TensorDataset(X, y), batch_size=5, sampler=sampler)
    return {
        "hessian": lambda V: ls.hessian(model, batches) @ V,
        "gauss_newton": lambda V: ls.gauss_newton(model, batches) @ V,
        "fisher": lambda V: ls.fisher(model, batches) @ V,
        "hessian_sampler": lambda V: ls.hessian(model, loader) @ V,
    }


def _worker(rank, world, tmp):
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world
    )
    try:
        torch.set_num_threads(1)
        model, batches, X, y, V = _problem()
        sampler = DistributedSampler(TensorDataset(X, y), shuffle=False)
        results = {name: fn(V) for name, fn in _products(model, batches, X, y, sampler).items()}
        H = ls.hessian(model, batches)
        H @ V
        results["num_samples"] = H.num_samples
        bad = [b if i != 1 else (b[0] * float("nan"), b[1]) for i, b in enumerate(batches)]
        try:
            ls.hessian(model, bad).matvec(V[:, 0])
        except FloatingPointError as error:
            results["error"] = str(error)
        torch.save(results, os.path.join(tmp, f"rank{rank}.pt"))
        dist.barrier()  # gloo aborts a rank whose peer tears down first
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_match_one_process(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    model, batches, X, y, V = _problem()
    expected = {name: fn(V) for name, fn in _products(model, batches, X, y).items()}
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["num_samples"] == 23
        for name, value in expected.items():
            rel = float((got[name] - value).norm() / value.norm())
            assert rel < 1e-6, (rank, name, rel)
    # batch 1 (on rank 1) has a NaN: both ranks raise instead of deadlocking
    assert "at batch 1" in torch.load(tmp_path / "rank1.pt")["error"]
    assert "another data-parallel rank" in torch.load(tmp_path / "rank0.pt")["error"]
