"""Shared fixtures: tiny tokenizers and hand-built episodes (no network, no env collection)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dreamer.data.episode import ActionSpace, Episode
from dreamer.tokenizer import CosmosTokenizerWrapper, TokenizerConfig

torch.set_num_threads(min(2, torch.get_num_threads()))


def make_episode(T: int = 20, size: int = 64, cards=(17,), seed: int = 0, terminated: bool = True) -> Episode:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(T + 1, size, size, 3), dtype=np.uint8)
    actions = np.stack([rng.integers(0, c, size=T) for c in cards], axis=1).astype(np.int64)
    rewards = rng.normal(size=T).astype(np.float32)
    space = ActionSpace(tuple(f"a{i}" for i in range(len(cards))), tuple(cards))
    return Episode(frames, actions, rewards, terminated, not terminated, space, {}, {"env_id": "test", "fps": 10})


@pytest.fixture
def episode_factory():
    return make_episode


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """The tiny preset at 64x64 input (8x8 latent grid, pool 2 -> 16 tokens): fast on CPU."""
    torch.manual_seed(0)
    return CosmosTokenizerWrapper(cfg=TokenizerConfig(preset="tiny", resolution=64, pool=2, window_latents=2))
