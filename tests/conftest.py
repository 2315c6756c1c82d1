"""Shared fixtures: one stand-in ManoPair per session, a seeded generator, the shared data folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# The suite is many small tensor ops: on 2 cores a second intra-op thread mostly waits on the
# first (measured 4x slower for the penetration kernels), so tests run single-threaded.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def mano():
    from prior.hands import ManoPair

    return ManoPair()


@pytest.fixture()
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA
