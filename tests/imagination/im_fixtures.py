"""Tiny frozen world model + agent for the phase-3 tests (CPU, milliseconds per call)."""

from __future__ import annotations

import torch

from dreamer.agent import Agent, AgentConfig
from dreamer.dynamics import DynamicsConfig, DynamicsModel

N, C, CARDS, S = 4, 3, [3, 2], 2


def tiny_dynamics(seed: int = 0, max_time: int = 16) -> DynamicsModel:
    torch.manual_seed(seed)
    cfg = DynamicsConfig(d_model=16, num_layers=2, num_heads=2, num_kv_heads=1, num_registers=1, time_every=2,
                         max_time=max_time, k_max=8, sample_steps=4)
    return DynamicsModel(cfg, N, C, CARDS, S)


def tiny_agent(seed: int = 0, max_time: int = 16) -> Agent:
    torch.manual_seed(seed)
    cfg = AgentConfig(d_model=16, num_layers=1, num_heads=2, max_time=max_time, mlp_hidden=32, head_hidden=32)
    agent = Agent(cfg, N, C, CARDS, S)
    with torch.no_grad():  # non-zero reward / value outputs, as after phase 2
        for p in list(agent.reward.mlp.out.parameters()) + list(agent.value.mlp.out.parameters()):
            p.normal_(0, 0.3)
    return agent


def context_batch(b: int = 3, t: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    acts = torch.stack([torch.randint(0, c, (b, t, S), generator=g) for c in CARDS], -1)
    mask = torch.ones(b, t, S, dtype=torch.bool)
    mask[:, -1] = False
    return {"latents": torch.randn(b, t, N, C, generator=g), "actions": acts, "action_mask": mask}
