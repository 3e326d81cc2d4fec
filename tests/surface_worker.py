"""A loss surface computed in a separate process (killed with SIGKILL by test_surfaces_resume).

Run as ``python tests/surface_worker.py PATH DELAY``. The problem is deterministic, so the
test process can rebuild it and resume the same file. The loss function is imported from
this module under its own name (not ``__main__``) so that the surface settings, which
describe the loss by module and name, are the same in both processes.
"""

import sys
import time

import numpy as np
import torch
from cases import CASES
from torch import nn

import landscape as ls

GRID = np.linspace(-1.0, 1.0, 9)
DELAY = 0.0  # seconds slept per batch by slow_cross_entropy; set only in the worker process


def slow_cross_entropy(outputs, targets):
    if DELAY:
        time.sleep(DELAY)
    return nn.functional.cross_entropy(outputs, targets)


def problem():
    model, batches = CASES[0].build()  # tanh MLP, float64, batches of 10, 10, 3
    directions = ls.random_directions(model, n=2, seed=5)
    return model, batches, directions


def compute(path, **options):
    model, batches, directions = problem()
    return ls.surface(
        model,
        batches,
        directions=directions,
        coords=GRID,
        loss_fn=slow_cross_entropy,
        path=path,
        points_per_chunk=1,
        progress=False,
        **options,
    )


def main(path, delay):
    global DELAY
    DELAY = delay
    torch.set_num_threads(1)
    compute(path)


if __name__ == "__main__":
    import surface_worker  # this module under its importable name, not __main__

    surface_worker.main(sys.argv[1], float(sys.argv[2]))
