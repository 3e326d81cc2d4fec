import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

# Devices the device-parametrized tests run on: the CPU always, CUDA where there is one
# (reported as skipped elsewhere, so a CPU-only run shows what it did not check).
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]


@pytest.fixture(params=DEVICES)
def device(request):
    """A ``torch.device`` for each entry of ``DEVICES``."""
    return torch.device(request.param)


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: the models are tiny, and OpenMP threads only fight
    each other on a busy two-core box (many times slower). A module opts in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
