"""Same seed, same numbers: bitwise-identical results on CPU, run to run and process to process.

Every seeded entry point is computed twice in this process and once in a fresh one (another
hash seed, the same thread count); all leaves of the results except wall-clock times must
agree to the bit.
"""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from determinism_worker import NAMES, compute

WORKER = Path(__file__).with_name("determinism_worker.py")


@pytest.fixture(scope="module")
def other_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("determinism") / "results.pkl"
    threads = str(torch.get_num_threads())
    env = dict(os.environ, PYTHONHASHSEED="12345", OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    with open(out, "rb") as f:
        return pickle.load(f)


def _assert_identical(a, b, what):
    assert a.keys() == b.keys(), f"{what}: different fields {sorted(a.keys() ^ b.keys())[:5]}"
    differing = [key for key in a if a[key] != b[key]]
    assert not differing, f"{what}: not bitwise equal at {differing[:5]}"


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_bits(name, other_process):
    first = compute(name)
    assert len(first) > 3
    _assert_identical(first, compute(name), f"{name}, run to run")
    _assert_identical(first, other_process[name], f"{name}, process to process")


def test_a_different_seed_changes_the_random_parts():
    from determinism_worker import flatten, problem

    import landscape as ls

    model, batches = problem()
    H = ls.hessian(model, batches)
    a = flatten(ls.spectral_density(H, 3, 20, seed=1))
    b = flatten(ls.spectral_density(H, 3, 20, seed=2))
    assert a[".density"] != b[".density"]  # the comparison above is not vacuous


def test_auto_backend_agrees_with_every_fixed_backend_to_rounding():
    # "auto" times the backends and may choose any: its numbers are those of one of them.
    from determinism_worker import problem

    import landscape as ls

    model, batches = problem()
    results = {
        backend: ls.spectral_density(ls.hessian(model, batches, backend=backend), 3, 20, seed=7)
        for backend in ("auto", "double_backward", "double_backward_loop", "forward_over_reverse")
    }
    for backend, density in results.items():
        torch.testing.assert_close(
            density.nodes, results["auto"].nodes, rtol=1e-4, atol=1e-6, msg=backend
        )


@pytest.fixture
def deterministic_algorithms():
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


def test_auto_measures_nothing_under_deterministic_algorithms(deterministic_algorithms):
    # Like cudnn.benchmark: timing would make the backend (and the last bits) depend on the
    # load; torch's deterministic switch makes "auto" take its default without timing.
    from determinism_worker import problem

    import landscape as ls

    densities, choices = [], []
    for _ in range(2):
        model, batches = problem()  # a fresh model: no choice shared with the last one
        H = ls.hessian(model, batches)
        densities.append(ls.spectral_density(H, 3, 20, seed=7))
        ls.eigenvalues(H, k=1, seed=0)  # single vectors too
        choices.append(H.backend_choices)
    assert choices[0] == choices[1]
    assert {kind: c["choice"] for kind, c in choices[0].items()} == {
        "single": "double_backward",
        "block": "double_backward_loop",
    }
    assert all(c["seconds_per_vector_sample"] == {} for c in choices[0].values())
    assert torch.equal(densities[0].nodes, densities[1].nodes)
    assert torch.equal(densities[0].weights, densities[1].weights)
