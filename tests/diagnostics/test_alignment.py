"""diagnostics.alignment finds which action explains each latent step's change."""

from __future__ import annotations

import numpy as np
import pytest

from diagnostics.alignment import action_alignment, eta_squared


def episodes(lag: int, n: int = 6, L: int = 60, seed: int = 0):
    """Latents that move (by a random token vector) only when the action leading lag steps earlier was a move (1)."""
    g = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = g.integers(0, 3, size=L)
        z = np.zeros((L, 4, 2), dtype=np.float32)
        for k in range(1, L):
            j = k - 1 - lag  # the chunk that caused the change into latent k
            step = g.normal(size=(4, 2)) if j >= 0 and a[j] == 1 else 0.05 * g.normal(size=(4, 2))
            z[k] = z[k - 1] + step
        mask = np.ones((L, 1), dtype=bool)
        mask[-1] = False  # the last latent's chunk is padding
        out.append((z, a.reshape(L, 1, 1), mask))
    return out


@pytest.mark.parametrize("lag", [0, 1])
def test_the_action_that_caused_the_change_explains_it(lag):
    out = action_alignment(episodes(lag))
    assert out["best_offset"] == -lag
    assert out["eta2"][-lag] > 0.5 and all(v < 0.1 for d, v in out["eta2"].items() if d != -lag)


def test_eta_squared_by_hand():
    assert eta_squared(np.array([1.0, 1.0, 3.0, 3.0]), np.array([0, 0, 1, 1])) == pytest.approx(1.0)
    assert eta_squared(np.array([1.0, 3.0, 1.0, 3.0]), np.array([0, 0, 1, 1])) == pytest.approx(0.0)
    assert eta_squared(np.ones(4), np.array([0, 1, 0, 1])) == 0.0
