"""Fixtures for the phase-3 tests (builders live in ``im_fixtures.py``)."""

from __future__ import annotations

import pytest
from im_fixtures import tiny_agent, tiny_dynamics


@pytest.fixture
def world():
    """Frozen dynamics, an agent frozen for phase 3 (trunk/reward/continue) and its prior."""
    dyn = tiny_dynamics().requires_grad_(False).eval()
    agent = tiny_agent()
    prior = agent.freeze_for_phase3()
    return dyn, agent, prior
