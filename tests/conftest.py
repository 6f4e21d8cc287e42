"""Fixtures shared by the test modules."""
import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run 10x faster on one thread when the 2 cores are shared (no OpenMP barrier spinning).
    Modules that run tiny models use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
