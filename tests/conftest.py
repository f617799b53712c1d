"""Shared fixtures: tiny tokenizers and hand-built episodes (no network, no env collection)."""

from __future__ import annotations

import pytest
import torch

from dreamer.data.synthetic import make_episode
from dreamer.tokenizer import CosmosTokenizerWrapper, TokenizerConfig

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def episode_factory():
    return make_episode


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """The tiny preset at 64x64 input (8x8 latent grid, pool 2 -> 16 tokens): fast on CPU."""
    torch.manual_seed(0)
    return CosmosTokenizerWrapper(cfg=TokenizerConfig(preset="tiny", resolution=64, pool=2, window_latents=2))
