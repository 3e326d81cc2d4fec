"""Choosing how Hessian products are computed, by measuring them on the model's own batches.

Which way of multiplying a batch's Hessian by k vectors is fastest depends on the model, the
batch size, the device and k (measured with ``benchmarks/realistic.py``, CPU, torch 2.13,
per vector, in units of a gradient pass): an MLP on 250 samples, where launch overhead
dominates, is fastest with one batched double-backward call (0.84x at k = 8, against 1.32x
for a loop); a CIFAR ResNet-20, compute-bound, with a loop of double-backward calls through
one retained gradient graph (3.1x, against 4.4x batched and 7.3x for ``vmap(jvp(grad))``);
a small GPT-2 ties the loop (2.0x) and forward-over-reverse (2.1x). No fixed rule gets all
three right, so ``backend="auto"`` measures.

The first product of a kind of block (one vector, a block, a wide block) on a model
measures, on the first batch: the default runs once with two of the vectors on a quarter of
the batch's samples (at least one: a warm-up). Where the whole batch's product would be
quick (under half a second), every candidate is then timed on the whole batch and up to
eight of the vectors — batching pays with width — at least twice each, keeping the fastest
run (a cold first call, ``vmap``'s above all, does not decide). Where products are long,
each candidate runs once on two vectors and the quarter batch, and the warm-up times the
default: the measurement costs about (1 + candidates) / 4 products' time and a quarter of
their activations (on GPT-2 small, 124M parameters and 2 sequences of 64 tokens, half: one
sequence), where it cost two full products before. The fastest per
vector and sample is chosen, but only where it beats the default by a clear margin
(``MARGIN``), so that near ties always resolve the same way. Then every product uses the
choice, so repeated products are bitwise identical. The choice is shared by every operator
on the same model and the same kind of block, parameters, mode and batch size (within a
factor of two): a learning-rate sweep measures once. On a 5.4M-parameter ViT on 64 images
the measurement costs about 7 gradient passes for single vectors and 28 for blocks,
against 2.5-3.3 per vector afterwards; pass a fixed ``backend`` to skip it.

Timing makes the choice depend on the machine's load, and the backends agree only to the
last bits (they sum in different orders), so two runs of one seed can differ by an ulp —
as with ``torch.backends.cudnn.benchmark``. Under ``torch.use_deterministic_algorithms(True)``
``auto`` measures nothing and takes the default (one double-backward call for a single
vector, the retained-graph loop for blocks): results are then bitwise reproducible.

The batched and vmap backends hold one set of backward activations per column: their
columns go through in chunks of at most ``BATCHED_COLUMNS`` and ``VMAP_COLUMNS`` (or
``chunk_size``), which bounds memory.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["BATCHED_COLUMNS", "VMAP_COLUMNS", "BackendChooser", "Timer", "block_kind"]

#: A candidate must be this much faster than the default (time ratio) to replace it.
MARGIN = 0.8
#: Columns per batched double-backward call, and per vmap(jvp(grad)) call, unless
#: ``chunk_size`` says otherwise: each column holds a copy of the backward activations
#: (measured on a ViT-tiny on 64 images: 4.0 GB for the loop, 7.9 GB batched and 15.4 GB
#: for vmap with 4 columns at a time, out of memory for vmap with 8).
BATCHED_COLUMNS = 4
VMAP_COLUMNS = 2
# Short products are timed again, up to _MAX_RUNS times, until _MIN_SECONDS are spent on
# them, and the fastest run counts: timing noise is worst where products are short.
_MIN_SECONDS = 0.05
_MAX_RUNS = 5
_LONG_SECONDS = 0.5  # a warm-up this long times the default itself
_FEW = 2  # columns timed per candidate where products are long
_WIDE = 8  # columns timed per candidate where products are cheap
_SUB_BATCH = 4  # where products are long, candidates are timed on 1/_SUB_BATCH of the samples

#: What was measured, per model: ``(block kind, batch-size bucket) -> chooser``.
_CHOICES: weakref.WeakKeyDictionary[nn.Module, dict[tuple[object, ...], BackendChooser]] = (
    weakref.WeakKeyDictionary()
)


def block_kind(k: int) -> str:
    """Return the kind of block of ``k`` vectors: ``"single"``, ``"block"`` or ``"wide"``.

    Returns
    -------
    str
        The bucket the choice is made for.
    """
    if k == 1:
        return "single"
    return "block" if k < 16 else "wide"


@dataclass
class BackendChooser:
    """Measure each candidate once on a real batch product, then use the fastest.

    Attributes
    ----------
    candidates : list of str
        The backends in the running, the default first.
    seconds : dict of str to float
        Measured seconds per vector and per sample of each candidate.
    failed : dict of str to str
        Candidates that raised on this model, with the error.
    choice : str or None
        The chosen backend (``None`` before the measurement).
    """

    candidates: list[str]
    seconds: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    choice: str | None = None

    @classmethod
    def for_model(
        cls, model: nn.Module, situation: tuple[object, ...], batch: int, candidates: list[str]
    ) -> BackendChooser:
        """Return the shared chooser of ``model`` for this situation and batch size.

        ``situation`` names what else decides the timings (the kind of block, the parameter
        selection, the mode); batch sizes share a chooser within a factor of two.

        Returns
        -------
        BackendChooser
            A new chooser the first time, else the one already measured.
        """
        table = _CHOICES.setdefault(model, {})
        key = (*situation, int(math.log2(max(batch, 1))))
        if key not in table:
            table[key] = cls(list(candidates))
        return table[key]

    @property
    def default(self) -> str:
        """The candidate that wins ties."""
        return self.candidates[0]

    def measure(
        self,
        product: Callable[[str, int, int], object],
        vectors: int,
        samples: int,
        device: torch.device,
    ) -> str:
        """Time ``product(name, columns, rows)`` for every candidate and choose.

        ``product`` multiplies the first ``columns`` vectors on the first ``rows`` samples
        of the batch (see the module docstring).

        Returns
        -------
        str
            The choice.

        Raises
        ------
        RuntimeError
            Whatever the default candidate raises (the model's genuine errors; also
            ``NotImplementedError``).
        """
        if torch.are_deterministic_algorithms_enabled():
            self.choice = self.default  # no timing: the same backend on every run
            return self.choice
        few = min(vectors, _FEW)
        rows = max(1, samples // _SUB_BATCH)
        with Timer(device) as warm_up:  # first-call allocations and caches; raises the
            product(self.default, few, rows)  # model's genuine errors
        cheap = warm_up.seconds * samples / rows < _LONG_SECONDS
        # Cheap products: time blocks as wide as the real one (up to _WIDE) on the whole
        # batch, where batching pays, each candidate at least twice (its first call is
        # cold). Long ones: two vectors on the sub-batch, once each; the warm-up times the
        # default.
        columns = min(vectors, _WIDE) if cheap else few
        rows = samples if cheap else rows
        for name in list(self.candidates):
            if name == self.default and not cheap:
                self.seconds[name] = warm_up.seconds / max(columns * rows, 1)
                continue
            try:
                seconds = _fastest_run(lambda n=name: product(n, columns, rows), device, cheap)
            except (RuntimeError, NotImplementedError) as error:
                if name == self.default:
                    raise
                # Forward-mode AD does not cover every op (custom autograd Functions without
                # a jvp; "ZeroTensors are immutable" through mse_loss on torch 2.13).
                self.candidates.remove(name)
                self.failed[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
                continue
            self.seconds[name] = seconds / max(columns * rows, 1)
        best = min(self.seconds, key=self.seconds.get)
        fast_enough = self.seconds[best] < MARGIN * self.seconds[self.default]
        self.choice = best if fast_enough else self.default
        return self.choice

    def summary(self) -> dict[str, object]:
        """Return what was measured and chosen, for reports.

        Returns
        -------
        dict
            ``{"choice", "seconds_per_vector_sample", "failed"}``.
        """
        return {
            "choice": self.choice,
            "seconds_per_vector_sample": dict(self.seconds),
            "failed": dict(self.failed),
        }


def _fastest_run(run: Callable[[], object], device: torch.device, twice: bool) -> float:
    """Return the fastest of a few timed runs: repeated while they are short, where noise is.

    With ``twice``, at least two runs (a cold first call does not decide).

    Returns
    -------
    float
        Seconds of the fastest run.
    """
    best, spent, runs = math.inf, 0.0, 0
    while runs < _MAX_RUNS and (runs < (2 if twice else 1) or spent < _MIN_SECONDS):
        with Timer(device) as timer:
            run()
        best, spent, runs = min(best, timer.seconds), spent + timer.seconds, runs + 1
    return best


class Timer:
    """Wall-clock seconds of a block of device work (synchronizing CUDA around it)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0

    def __enter__(self) -> Timer:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self._start
