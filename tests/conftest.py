"""Shared fixtures. The shared test parts themselves (fakes, the n-step cases, the fake
fleet, watching a live run) are modules of ``tests/support``, imported in one style:
``from tests.support.fakes import CountingEnv``."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests, then torch's count as it was: small networks
    run faster on one thread, and far faster on a machine busy with other work (two
    spinning OpenMP threads on two shared cores), as an actor runs (``--actor-threads 1``).
    Use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
