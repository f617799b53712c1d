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


@pytest.fixture
def full_disk(monkeypatch):
    """Files opened by dreamer.atomic accept ``room`` bytes, then fail with ENOSPC as a full disk does
    (``full_disk(room=0)`` to arm it)."""
    import errno
    import os

    real = os.fdopen

    class Full:
        def __init__(self, fh, room: int):
            self.fh, self.room = fh, room

        def write(self, data) -> int:
            if len(data) > self.room:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.room -= len(data)
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def arm(room: int = 0) -> None:
        monkeypatch.setattr(os, "fdopen", lambda fd, mode="r", *a, **k: Full(real(fd, mode, *a, **k), room))

    return arm
