"""Every seeded computation of tests/test_determinism.py, flattened to comparable leaves.

Run as ``python tests/determinism_worker.py OUT.pkl`` to compute them in a fresh process (a
different hash seed, a fresh torch state); the test compares those leaves with its own
bitwise.
"""

from __future__ import annotations

import dataclasses
import pickle
import sys
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

import landscape as ls

SEED = 7
# Wall-clock times, the creation date, and what backend="auto" measured (timings).
VOLATILE = {"seconds", "created", "seconds_per_vector_sample"}
# Bitwise reproducibility is promised for a fixed way of computing Hessian products;
# backend="auto" chooses one by timing it (see landscape.operators._backends), and its
# results agree with every fixed backend's to rounding (test_auto_backend_agrees...).
BACKEND = "double_backward_loop"


def problem():
    """A float32 tanh MLP (4-6-3, 51 parameters) on 48 samples in batches of 16."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    X = torch.randn(48, 4, generator=g)
    y = torch.randint(0, 3, (48,), generator=g)
    return model, [(X[i : i + 16], y[i : i + 16]) for i in range(0, 48, 16)]


def flatten(obj: Any, prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Leaves of nested results as ``{path: (dtype, shape, bytes) or a Python value}``.

    Returns
    -------
    dict
        Bitwise-comparable leaves, without wall-clock fields.
    """
    out = {} if out is None else out
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        out[prefix] = (str(obj.dtype), obj.shape, obj.tobytes())
    elif isinstance(obj, (float, np.floating)):
        out[prefix] = ("float", (), np.float64(obj).tobytes())  # NaN compares equal bitwise
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if key not in VOLATILE:
                flatten(value, f"{prefix}/{key}", out)
    elif isinstance(obj, (list, tuple, np.ndarray)):  # object arrays too
        for i, value in enumerate(obj):
            flatten(value, f"{prefix}[{i}]", out)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            if f.name not in VOLATILE:
                flatten(getattr(obj, f.name), f"{prefix}.{f.name}", out)
    elif hasattr(obj, "to_dict"):
        flatten(obj.to_dict(), prefix, out)
    else:  # int, bool, str, None
        out[prefix] = obj
    return out


def compute(name: str) -> dict[str, Any]:
    """One seeded computation, by name (see ``NAMES``).

    Returns
    -------
    dict
        Its flattened leaves.
    """
    model, batches = problem()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "analyze":
            result = ls.analyze(
                model, batches, budget="fast", seed=SEED, progress=False, backend=BACKEND
            ).to_dict()
        elif name == "max_learning_rate":
            result = {
                opt: ls.max_learning_rate(
                    model,
                    batches,
                    batch_sizes=(4, 16, "full"),
                    optimizer=opt,
                    num_batches=3,
                    exact_samples=16,
                    seed=SEED,
                    backend=BACKEND,
                )
                for opt in ("sgd", "adam")
            }
        elif name == "sharpness":
            result = ls.sharpness(
                model,
                batches,
                seed=SEED,
                backend=BACKEND,
                settings=ls.SharpnessSettings(
                    trace_matvecs=12, pacbayes_samples=3, pacbayes_steps=4
                ),
            )
        elif name == "coherence":
            result = ls.coherence(
                model,
                batches,
                hessian=ls.HessianSettings(noise_scale=True, samples=3, probes=4),
                seed=SEED,
                backend=BACKEND,
            )
        elif name == "surface":
            dirs = ls.random_directions(model, n=2, seed=SEED)
            result = {
                str(vectorize): ls.surface(
                    model,
                    batches,
                    directions=dirs,
                    coords=np.linspace(-1, 1, 5),
                    vectorize=vectorize,
                    progress=False,
                )
                for vectorize in (False, True)
            }
        elif name == "spectral_density":
            H = ls.hessian(model, batches, backend=BACKEND)
            result = ls.spectral_density(H, 3, 20, seed=SEED)
        else:
            raise ValueError(name)
    return flatten(result)


NAMES = ("analyze", "max_learning_rate", "sharpness", "coherence", "surface", "spectral_density")


def main(path: str) -> None:
    with open(path, "wb") as f:
        pickle.dump({name: compute(name) for name in NAMES}, f)


if __name__ == "__main__":
    main(sys.argv[1])
