"""Block heterogeneity (Zhang et al. 2024) through the public API: the quick variant of
validation/block_heterogeneity.py (a 2-layer GPT-2 from a small transformers config and a
3-layer CNN, both at initialization, float64; about 40 s).

What is asserted is the machinery, not the paper's ordering: every block's density in
num_steps passes (not L x num_steps), distances symmetric in [0, 1] with a zero diagonal, one
block per weight matrix. The ordering JS^0(transformer) > JS^0(CNN) did NOT reproduce at this
scale (measured 0.23 vs 0.60 at seed 0; see validation/block_heterogeneity.md), so it is
recorded there, not asserted here.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "validation"))

import block_heterogeneity  # noqa: E402


@pytest.fixture(scope="module")
def results():
    return block_heterogeneity.run_all(quick=True, verbose=False)


def test_every_block_costs_the_same_passes(results):
    for kind in ("transformer", "cnn"):
        r = results["rows"][0][kind]
        assert r["num_passes"] == results["steps"]
        assert r["num_matvecs"] == results["steps"] * results["probes"] * len(r["names"])


def test_distances_are_a_proper_js_matrix(results):
    for kind in ("transformer", "cnn"):
        D = np.array(results["rows"][0][kind]["distances"])
        assert np.allclose(D, D.T) and np.all(np.diag(D) == 0)
        assert np.all((D >= 0) & (D <= 1))
        assert 0 < results["rows"][0][kind]["heterogeneity"] < 1


def test_blocks_are_the_weight_matrices(results):
    names = results["rows"][0]["transformer"]["names"]
    assert len(names) == 10 and all(n.endswith(".weight") for n in names)
    assert results["rows"][0]["cnn"]["sizes"] == [216, 1152, 2304, 160]
