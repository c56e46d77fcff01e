import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run many small ops: on a shared 2-core machine, one thread avoids the
    spin-wait of oversubscribed intra-op threads (measured 10x slower under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
