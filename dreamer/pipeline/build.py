"""Each model built once, from the run's config and the latent cache it trains on.

The sizes that come from the data (tokens N and channels C per latent step, the chunk length S and
the action cardinalities) are read from the tokenizer and the cache, never restated; weights, when
given, are loaded (``torch.compile`` prefixes stripped) before the model moves to ``device``.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from dreamer.agent import Agent
from dreamer.dynamics import DynamicsModel
from dreamer.training.checkpoint import strip_compiled_prefix


def data_dims(tokenizer, cache) -> dict:
    """The constructor arguments both models take from the data: N, C, action cardinalities, S."""
    return {"num_tokens": tokenizer.num_tokens, "latent_dim": tokenizer.channels,
            "action_cards": list(cache.action_space.cards), "chunk_len": cache.chunk_len}


def _load(model: nn.Module, state: dict | None, device) -> nn.Module:
    if state is not None:
        model.load_state_dict(strip_compiled_prefix(state))
    return model.to(device)


def build_dynamics(cfg, tokenizer, cache, device, state: dict | None = None) -> DynamicsModel:
    """The phase-1 dynamics model of ``cfg.dynamics`` (with ``state`` loaded when given)."""
    return _load(DynamicsModel(cfg.dynamics, **data_dims(tokenizer, cache)), state, device)


def imagining(dynamics: DynamicsModel, sample_steps: int) -> DynamicsModel:
    """``dynamics`` sampling ``sample_steps`` passes per imagined latent (``phase3.sample_steps``; 0 = its own
    ``dynamics.sample_steps``). A sampler setting, not a weight: the config saved with the model is not changed."""
    if sample_steps:
        if sample_steps > dynamics.cfg.k_max:
            raise ValueError(f"phase3.sample_steps={sample_steps} must be <= the world model's dynamics.k_max="
                             f"{dynamics.cfg.k_max}")
        dynamics.cfg = dataclasses.replace(dynamics.cfg, sample_steps=sample_steps)
    return dynamics


def build_agent(cfg, tokenizer, cache, device, state: dict | None = None) -> Agent:
    """The agent of ``cfg.agent`` (trunk and heads; with ``state`` loaded when given)."""
    return _load(Agent(cfg.agent, **data_dims(tokenizer, cache)), state, device)


def frozen(model: nn.Module) -> nn.Module:
    """``model`` with every parameter frozen, in eval mode (a world model carried forward)."""
    return model.requires_grad_(False).eval()
