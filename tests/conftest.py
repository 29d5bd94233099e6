"""Fixtures shared by the test files."""
import pytest, torch


@pytest.fixture
def one_thread():
    "Torch on one CPU thread for the test (restored after)."
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
