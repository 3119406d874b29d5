"""Shared fixtures and markers: ``slow`` (RUN_SLOW=1 to run), ``gpu`` (needs CUDA), and
``shared_data`` (../shared/data beside the repository; skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    run_slow = os.environ.get("RUN_SLOW") == "1"
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch missing is a broken install, reported elsewhere
        has_cuda = False
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: set RUN_SLOW=1 to run"))
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="gpu: no CUDA device"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data, or skip the test when this clone has none (a user's clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _few_threads():
    """Tests run on 2-core CI machines: keep torch from oversubscribing them."""
    try:
        import torch

        torch.set_num_threads(min(2, os.cpu_count() or 1))
    except Exception:
        pass
    yield


@pytest.fixture
def one_thread():
    """One torch thread for tiny models: they gain nothing from a second, and on shared CI
    cores a second OpenMP thread spins. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
