from __future__ import annotations

import pytest
import torch

from dreamer.dynamics import DynamicsConfig, DynamicsModel

N, C, CARDS, S = 3, 2, [3, 2], 2


def tiny_cfg(**kw) -> DynamicsConfig:
    base = {"d_model": 16, "num_layers": 4, "num_heads": 2, "num_kv_heads": 1, "num_registers": 1, "time_every": 2,
                "max_time": 16, "k_max": 8, "sample_steps": 4}
    base.update(kw)
    return DynamicsConfig(**base)


def tiny_model(seed: int = 0, **kw) -> DynamicsModel:
    torch.manual_seed(seed)
    return DynamicsModel(tiny_cfg(**kw), N, C, CARDS, S)


def tiny_batch(b: int = 2, t: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, t, N, C, generator=g)
    acts = torch.stack([torch.randint(0, c, (b, t, S), generator=g) for c in CARDS], -1)  # (B,T,S,D)
    mask = torch.ones(b, t, S, dtype=torch.bool)
    mask[:, -1] = False  # last latent of an episode: all-False row
    return z, acts, mask


@pytest.fixture
def model() -> DynamicsModel:
    return tiny_model()
