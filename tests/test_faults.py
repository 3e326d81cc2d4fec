"""Faults: Ctrl-C inside ``analyze`` leaves the model as it was; SIGKILL inside a first save
leaves no file.

The SIGKILL of a save that replaces an older report (the old file survives, complete) is
tests/test_documents.py::test_a_killed_save_leaves_the_old_file; SIGKILL during
``ls.surface(path=...)`` and resuming is tests/test_surfaces_resume.py.
"""

import os
import signal
import subprocess
import sys
import textwrap
import warnings
from typing import ClassVar

import pytest
import torch
import tqdm.auto
from cases import CASES
from state import assert_unchanged, snapshot
from torch import nn

import landscape as ls


@pytest.fixture(autouse=True)
def _quiet_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class _RecordingBar(tqdm.auto.tqdm):
    """tqdm that remembers its instances and whether each was closed."""

    made: ClassVar[list] = []

    def __init__(self, *args, **kwargs):
        kwargs["disable"] = False
        kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 - closed in close()
        super().__init__(*args, **kwargs)
        self.closed = False
        _RecordingBar.made.append(self)

    def close(self):
        self.closed = True
        super().close()
        self.fp.close()


@pytest.fixture
def bars(monkeypatch):
    _RecordingBar.made = []
    monkeypatch.setattr(tqdm.auto, "tqdm", _RecordingBar)
    return _RecordingBar.made


def _model():
    """A BatchNorm CNN in train mode, with a frozen tensor and a stale ``.grad``."""
    model, batches = CASES[1].build()
    model.train()
    model.head.bias.requires_grad_(False)
    model.conv.weight.grad = torch.ones_like(model.conv.weight)
    return model, batches


class _Interrupt:
    """A criterion that raises KeyboardInterrupt on its ``at``-th call (never when None)."""

    def __init__(self, at=None):
        self.at, self.calls = at, 0

    def __call__(self, outputs, targets):
        self.calls += 1
        if self.at is not None and self.calls >= self.at:
            raise KeyboardInterrupt
        return nn.functional.cross_entropy(outputs, targets)


class _InterruptingLoader:
    """A re-iterable loader whose ``at``-th pass raises KeyboardInterrupt after one batch."""

    def __init__(self, batches, at):
        self.batches, self.at, self.passes = batches, at, 0

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        self.passes += 1
        for i, batch in enumerate(self.batches):
            if self.passes == self.at and i == 1:
                raise KeyboardInterrupt
            yield batch


class _Recording(_Interrupt):
    """Records, for every call, the landscape function that ``analyze`` was running."""

    def __init__(self):
        super().__init__()
        self.stages = []

    def __call__(self, outputs, targets):
        frame, names = sys._getframe(), []  # innermost first
        while frame is not None:
            if "landscape" + os.sep in frame.f_code.co_filename:
                names.append(frame.f_code.co_name)
            frame = frame.f_back
        self.stages.append(names[names.index("_run") - 1])  # the stage's runner
        return super().__call__(outputs, targets)


STAGES = [
    "_run_eigenvalues",
    "_run_subsets",
    "_run_trace",
    "_run_density",
    "_run_layerwise",
    "_run_block_spectra",
    "_run_surfaces",
    "_run_sharpness",
    "_run_coherence",
    "_run_learning_rate",
]


@pytest.fixture(scope="module")
def stage_calls():
    """For every stage, the criterion calls (1-based) made inside it in a full run."""
    model, batches = _model()
    recorder = _Recording()
    ls.analyze(model, batches, recorder, progress=False)
    calls = {}
    for index, stage in enumerate(recorder.stages, start=1):
        calls.setdefault(stage, []).append(index)
    return calls


def _interrupted_analyze(model, data, loss_fn, bars, **options):
    before = snapshot(model)
    with pytest.raises(KeyboardInterrupt):
        ls.analyze(model, data, loss_fn, progress=True, **options)
    assert_unchanged(model, before)
    assert model.training and model.bn.training
    assert model.conv.weight.grad is not None and torch.all(model.conv.weight.grad == 1)
    assert bars, "analyze showed no progress bar"
    assert all(bar.closed for bar in bars), "a progress bar was left open"


@pytest.mark.parametrize("stage", STAGES)
def test_ctrl_c_deep_inside_a_stage_leaves_the_model_unchanged(stage_calls, bars, stage):
    # The criterion runs inside HVPs (during double-backward graphs), Lanczos restarts,
    # surface points, SAM/ASAM/GAM perturbations, per-example gradients under vmap and the
    # lr_max Lanczos runs: interrupt in the middle of each stage.
    calls = stage_calls[stage]
    at = calls[len(calls) // 2]
    model, batches = _model()
    criterion = _Interrupt(at)
    _interrupted_analyze(model, batches, criterion, bars)
    assert criterion.calls == at


@pytest.mark.parametrize("stage_pass", [1, 6])  # the loss, a later stage
def test_ctrl_c_inside_the_loader_leaves_the_model_unchanged(bars, stage_pass):
    # analyze reads a loader once and works on its cached batches; cache=False makes every
    # stage read it again, so that an interrupt can come from inside a later stage.
    model, batches = _model()
    loader = _InterruptingLoader(batches, stage_pass)
    _interrupted_analyze(model, loader, None, bars, cache=False)
    assert loader.passes == stage_pass


def test_the_model_still_analyzes_after_an_interrupt(stage_calls):
    # Bitwise comparison across runs: "auto" must not choose backends by timing.
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        _analyze_after_an_interrupt(stage_calls)
    finally:
        torch.use_deterministic_algorithms(before)


def _analyze_after_an_interrupt(stage_calls):
    model, batches = _model()
    with pytest.raises(KeyboardInterrupt):
        ls.analyze(model, batches, _Interrupt(stage_calls["_run_trace"][0]), progress=False)
    options = {"progress": False, "surfaces": False, "learning_rates": False}
    again = ls.analyze(model, batches, **options)
    fresh = ls.analyze(_model()[0], batches, **options)
    assert torch.equal(again.eigenvalues.top.values, fresh.eigenvalues.top.values)
    assert again.trace.value == fresh.trace.value


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_killed_first_save_leaves_no_file(tmp_path):
    path = tmp_path / "r.h5"
    script = textwrap.dedent(
        f"""
        import os, signal
        import numpy as np
        from landscape.report import codec
        from landscape.report.document import Report
        write = codec._write_value
        calls = [0]
        def killing(*args, **kwargs):
            calls[0] += 1
            if calls[0] == 5:
                os.kill(os.getpid(), signal.SIGKILL)
            return write(*args, **kwargs)
        codec._write_value = killing
        Report(metadata={{str(i): np.ones(10) for i in range(9)}}).save({str(path)!r})
        """
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    assert not path.exists()  # absent, never partial
    leftovers = os.listdir(tmp_path)
    assert all(n.startswith(".r.h5.") and n.endswith(".tmp") for n in leftovers)
    with pytest.raises(FileNotFoundError, match="the file does not exist"):
        ls.load(path)
    # the next save works beside the leftover temporary file
    ls.Report(metadata={"loss": 3.0}).save(path)
    assert ls.load(path).metadata == {"loss": 3.0}
