import pytest


@pytest.fixture(autouse=True)
def _one_thread_per_inference_test(one_thread):
    """Every inference test runs on one torch thread (``one_thread`` in tests/conftest.py)."""
