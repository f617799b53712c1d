"""Shared fixtures: tiny tokenizers, hand-built episodes, and small privileged-state caches of a few scripted Crafter
steps (no network)."""

from __future__ import annotations

import os

import pytest
import torch

from dreamer.data.synthetic import make_episode
from dreamer.tokenizer import CosmosTokenizerWrapper, TokenizerConfig

# At most 2 threads, and no more threads in all than cores: `make test` runs TEST_JOBS pytest-xdist workers, and
# two 2-thread workers on 2 cores wait on each other's threads (each worker sees its count in this variable).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, torch.get_num_threads(), (os.cpu_count() or 1) // _WORKERS)))


@pytest.fixture
def episode_factory():
    return make_episode


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """The tiny preset at 64x64 input (8x8 latent grid, pool 2 -> 16 tokens): fast on CPU."""
    torch.manual_seed(0)
    return CosmosTokenizerWrapper(cfg=TokenizerConfig(preset="tiny", resolution=64, pool=2, window_latents=2))


@pytest.fixture(scope="session")
def state_cache_factory(tmp_path_factory):
    """``make(max_steps, seed)`` -> (the crafter_state tokenizer, a LatentCache of 3 scripted episodes on a 24 x 24
    world, a third held out): latents that name every view cell, for the world-model checks."""
    from dreamer.data.cache import LatentCache, build_cache
    from dreamer.envs.collect import collect_episodes
    from dreamer.envs.config import CollectConfig, EnvConfig
    from dreamer.tokenizer.crafter_state import CrafterStateTokenizer

    def make(max_steps: int, seed: int):
        root = tmp_path_factory.mktemp("state_cache")
        eps = collect_episodes(EnvConfig(max_steps=max_steps, crafter_area=(24, 24)),
                               CollectConfig(num_episodes=3, policy="scripted", epsilon=0.2, seed=seed), root / "eps",
                               progress=False)
        tok = CrafterStateTokenizer(TokenizerConfig(kind="crafter_state"))
        return tok, LatentCache(build_cache(eps, tok, root / "cache", val_fraction=0.34))

    return make


@pytest.fixture(scope="module")
def state_world_parts(state_cache_factory, tmp_path_factory):
    """``make(max_steps, seed, **dynamics)`` -> (config with a tiny action-routed DynamicsConfig, tokenizer, cache, a
    checkpoint path that does not exist): what a play-page or diagnostics ``World`` on the state reference needs."""
    from dreamer.config import Config
    from dreamer.dynamics import DynamicsConfig

    def make(max_steps: int, seed: int, **dynamics):
        tok, cache = state_cache_factory(max_steps, seed)
        cfg = Config(run="w", device="cpu")
        cfg.dynamics = DynamicsConfig(d_model=32, num_layers=2, num_heads=2, num_kv_heads=1, num_registers=1,
                                      max_time=16, sample_steps=2, action_routing=True, **dynamics)
        return cfg, tok, cache, tmp_path_factory.mktemp("world") / "none.pt"

    return make


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
