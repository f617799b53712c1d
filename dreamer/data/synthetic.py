"""Synthetic episodes (random frames, actions and rewards) for tests and benchmarks."""

from __future__ import annotations

import numpy as np

from dreamer.data.episode import ActionSpace, Episode


def make_episode(T: int = 20, size: int = 64, cards=(17,), seed: int = 0, terminated: bool = True) -> Episode:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(T + 1, size, size, 3), dtype=np.uint8)
    actions = np.stack([rng.integers(0, c, size=T) for c in cards], axis=1).astype(np.int64)
    rewards = rng.normal(size=T).astype(np.float32)
    space = ActionSpace(tuple(f"a{i}" for i in range(len(cards))), tuple(cards))
    return Episode(frames, actions, rewards, terminated, not terminated, space, {}, {"env_id": "test", "fps": 10})
