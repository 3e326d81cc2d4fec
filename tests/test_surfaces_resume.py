"""Surface results files: layout, resuming (also after SIGKILL), refusals, and two gloo ranks."""

import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import surface_worker
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from cases import CASES
from torch import nn

import landscape as ls

COORDS = np.linspace(-1.0, 1.0, 5)

pytestmark = pytest.mark.usefixtures("one_thread")


def _problem():
    model, batches = CASES[0].build()
    return model, batches, ls.random_directions(model, n=2, seed=1)


class _Interrupted(Exception):
    pass


_CALLS_LEFT = [None]  # loss calls before _interrupting_cross_entropy raises; None: never


def _interrupting_cross_entropy(outputs, targets):
    if _CALLS_LEFT[0] is not None:
        _CALLS_LEFT[0] -= 1
        if _CALLS_LEFT[0] < 0:
            raise _Interrupted
    return nn.functional.cross_entropy(outputs, targets)


def _surface(path, model, batches, directions, coords=COORDS, *, interrupt_after=None, **kw):
    kw.setdefault("points_per_chunk", 3)
    _CALLS_LEFT[0] = interrupt_after
    try:
        return ls.surface(
            model, batches, directions=directions, coords=coords, path=path, progress=False, **kw
        )
    finally:
        _CALLS_LEFT[0] = None


def _read(path):
    with h5py.File(path, "r") as f:
        return {
            "attrs": dict(f.attrs),
            "coords": [f[f"coords/{i}"][...] for i in range(len(f["coords"]))],
            "loss": f["loss"][...],
            "accuracy": f["accuracy"][...],
            "computed": f["computed"][...],
            "directions": [
                {k: f[f"directions/{i}/{k}"][...] for k in f[f"directions/{i}"]}
                for i in range(len(f["directions"]))
            ],
        }


def test_file_layout(tmp_path):
    model, batches, directions = _problem()
    path = tmp_path / "s.h5"
    s = _surface(path, model, batches, directions)
    assert s.path == os.fspath(path) and s.num_points == 25
    stored = _read(path)
    assert stored["attrs"]["format"] == "landscape.surface"
    assert {"settings", "model_fingerprint", "data_fingerprint"} <= set(stored["attrs"])
    assert stored["attrs"]["origin_loss"] == s.origin_loss
    assert stored["attrs"]["origin_accuracy"] == s.origin_accuracy
    assert len(stored["coords"]) == 2
    for axis in stored["coords"]:
        np.testing.assert_array_equal(axis, COORDS)
    np.testing.assert_array_equal(stored["loss"], s.loss)
    np.testing.assert_array_equal(stored["accuracy"], s.accuracy)
    assert stored["computed"].shape == (5, 5) and np.all(stored["computed"] == 1)
    assert len(stored["directions"]) == 2
    for got, direction in zip(stored["directions"], directions):
        assert set(got) == set(direction)
        for name, t in direction.items():
            np.testing.assert_array_equal(got[name], t.numpy())
    assert not list(tmp_path.glob("*.tmp"))


def test_rerun_resumes_without_computing(tmp_path):
    model, batches, directions = _problem()
    path = tmp_path / "s.h5"
    first = _surface(path, model, batches, directions)
    again = _surface(path, model, batches, directions)
    assert again.num_points == 0 and first.num_points == 25
    np.testing.assert_array_equal(again.loss, first.loss)
    np.testing.assert_array_equal(again.accuracy, first.accuracy)
    assert again.origin_loss == first.origin_loss
    assert again.origin_accuracy == first.origin_accuracy
    # a fresh copy of the model and of the data is the same computation
    model2, batches2, directions2 = _problem()
    assert _surface(path, model2, batches2, directions2).num_points == 0


def test_partial_file_is_completed_bitwise(tmp_path):
    model, batches, directions = _problem()
    path, fresh = tmp_path / "s.h5", tmp_path / "fresh.h5"
    kw = {"points_per_chunk": 4, "loss_fn": _interrupting_cross_entropy, "vectorize": True}
    expected = _surface(fresh, model, batches, directions, **kw)
    with pytest.raises(_Interrupted):
        # vectorized: one loss call per batch and chunk; 3 chunks of 4 points, then the 4th fails
        _surface(path, model, batches, directions, interrupt_after=9, **kw)
    partial = _read(path)
    computed = partial["computed"].astype(bool)
    assert computed.sum() == 12
    assert np.all(np.isnan(partial["loss"][~computed]))
    np.testing.assert_array_equal(partial["loss"][computed], expected.loss[computed])
    resumed = _surface(path, model, batches, directions, **kw)
    assert resumed.num_points == 25 - computed.sum()
    np.testing.assert_array_equal(resumed.loss, expected.loss)
    np.testing.assert_array_equal(resumed.accuracy, expected.accuracy)
    np.testing.assert_array_equal(_read(path)["loss"], expected.loss)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"coords": np.linspace(-1.0, 1.0, 7)}, id="coords"),
        pytest.param({"bn": "recompute"}, id="bn"),
        pytest.param({"points_per_chunk": 2}, id="chunks"),
        pytest.param({"loss_fn": nn.functional.cross_entropy}, id="loss"),
        pytest.param({"loss_fn": nn.CrossEntropyLoss(label_smoothing=0.5)}, id="loss-settings"),
        pytest.param({"data_scale": 2.0}, id="data-after-first-batch"),
        pytest.param({"model_seed": 3}, id="model"),
        pytest.param({"direction_seed": 3}, id="directions"),
    ],
)
def test_different_settings_are_refused(tmp_path, change):
    model, batches, directions = _problem()
    path = tmp_path / "s.h5"
    first = _surface(path, model, batches, directions, loss_fn=nn.CrossEntropyLoss())
    before = path.read_bytes()
    kw = {"loss_fn": nn.CrossEntropyLoss(), **change}
    if "model_seed" in kw:
        model, _ = CASES[0].build(seed=kw.pop("model_seed"))
    if "direction_seed" in kw:
        directions = ls.random_directions(model, n=2, seed=kw.pop("direction_seed"))
    if "data_scale" in kw:  # only a later batch changes
        scale = kw.pop("data_scale")
        batches = [batches[0], *[(x * scale, y) for x, y in batches[1:]]]
    with pytest.raises(ValueError, match="different"):
        _surface(path, model, batches, directions, **kw)
    assert path.read_bytes() == before  # untouched
    # resume=False starts over
    over = _surface(path, model, batches, directions, resume=False, **kw)
    assert over.num_points == over.loss.size
    stored = _read(path)
    np.testing.assert_array_equal(stored["loss"], over.loss)
    np.testing.assert_array_equal(stored["coords"][0], over.coords[0])
    if {"model_seed", "direction_seed"} & set(change):
        assert not np.array_equal(over.loss, first.loss)


def test_foreign_files_are_refused(tmp_path):
    model, batches, directions = _problem()
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f["precious"] = np.arange(3)
    with pytest.raises(ValueError, match="not a landscape surface file"):
        _surface(path, model, batches, directions)
    with h5py.File(path, "r") as f:
        assert list(f) == ["precious"]
    text = tmp_path / "notes.h5"
    text.write_text("not HDF5")
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        _surface(text, model, batches, directions)
    assert text.read_text() == "not HDF5"


# -- SIGKILL -------------------------------------------------------------------------------------
def _computed(path):
    """The number of computed points, read without locking (the writer may hold the file)."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            return int(f["computed"][...].sum())
    except (OSError, KeyError, RuntimeError):  # absent, or caught mid-write
        return None


def test_resume_after_sigkill(tmp_path):
    path, fresh = tmp_path / "killed.h5", tmp_path / "fresh.h5"
    worker = Path(surface_worker.__file__)
    total = surface_worker.GRID.size**2
    proc = subprocess.Popen(
        [sys.executable, str(worker), str(path), "0.02"],  # 20 ms per batch: ~60 ms per point
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        seen = None
        while time.monotonic() < deadline and proc.poll() is None:
            seen = _computed(path)
            if seen is not None and seen >= 3:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"worker ended early: {proc.communicate()[0]!r}"
        assert seen is not None and seen >= 3, "the worker made no progress in 60 s"
        proc.kill()  # SIGKILL: no cleanup, possibly in the middle of a write
    finally:
        proc.kill()
        proc.wait()
    done = _computed(path)
    assert done is not None and 3 <= done < total

    resumed = surface_worker.compute(path)
    assert 0 < resumed.num_points <= total - done
    uninterrupted = surface_worker.compute(fresh)
    assert uninterrupted.num_points == total
    assert np.array_equal(resumed.loss, uninterrupted.loss)
    assert np.array_equal(resumed.accuracy, uninterrupted.accuracy)
    assert resumed.origin_loss == uninterrupted.origin_loss
    stored = _read(path)
    assert np.all(stored["computed"] == 1)
    assert np.array_equal(stored["loss"], uninterrupted.loss)


# -- two gloo ranks ------------------------------------------------------------------------------
def _distributed_worker(rank, world, tmp):
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world
    )
    try:
        torch.set_num_threads(1)
        model, batches, directions = _problem()
        s = _surface(os.path.join(tmp, "s.h5"), model, batches, directions, points_per_chunk=2)
        np.savez(
            os.path.join(tmp, f"rank{rank}.npz"),
            loss=s.loss,
            accuracy=s.accuracy,
            num_points=s.num_points,
            origin_loss=s.origin_loss,
        )
        dist.barrier()  # gloo aborts a rank whose peer tears down first
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_gloo_ranks_share_the_grid(tmp_path):
    mp.spawn(_distributed_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    model, batches, directions = _problem()
    expected = _surface(tmp_path / "single.h5", model, batches, directions)
    stored = _read(tmp_path / "s.h5")
    np.testing.assert_allclose(stored["loss"], expected.loss, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(stored["accuracy"], expected.accuracy)
    assert np.all(stored["computed"] == 1)
    for rank in range(2):
        got = np.load(tmp_path / f"rank{rank}.npz")
        assert int(got["num_points"]) == 25  # both ranks see every chunk arrive
        np.testing.assert_allclose(got["loss"], expected.loss, rtol=1e-12, atol=0)
        np.testing.assert_array_equal(got["accuracy"], expected.accuracy)
        np.testing.assert_array_equal(got["loss"], stored["loss"])
        assert float(got["origin_loss"]) == pytest.approx(expected.origin_loss, rel=1e-12)
