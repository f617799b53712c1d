"""diagnostics.pmpo_bandit: phase 3's update on a world that pays for one action raises that action's probability."""

from __future__ import annotations

import pytest
import torch

from diagnostics import pmpo_bandit
from dreamer.agent import AgentConfig
from dreamer.imagination import PMPOConfig
from dreamer.pipeline.build import build_agent
from dreamer.training.config import Phase3Config
from dreamer.viewer.load import World


def _world(parts, beta: float) -> World:
    cfg, tok, cache, path = parts
    torch.manual_seed(0)
    cfg.agent = AgentConfig(d_model=16, num_layers=1, num_heads=2, max_time=16, mlp_hidden=32, head_hidden=32)
    cfg.phase3 = Phase3Config(steps=60, warmup=0, lr=3e-3, value_lr=3e-3, horizon=4, context=2, batch_size=8)
    cfg.pmpo = PMPOConfig(beta=beta)
    agent = build_agent(cfg, tok, cache, "cpu")  # no dynamics needed: the features are the real clips'
    return World(path, cfg, tok, cache, None, agent, torch.device("cpu"))


def test_the_paid_action_rises_and_the_prior_holds_it_back(state_world_parts):
    parts = state_world_parts(30, 5)
    target = pmpo_bandit.action_index(pmpo_bandit.value_names(_world(parts, 0.0)), "place_stone")
    assert target == 7  # Crafter's names, from the key map
    free = pmpo_bandit.bandit(_world(parts, 0.0), target, steps=60, every=20)
    held = pmpo_bandit.bandit(_world(parts, 3.0), target, steps=60, every=20)
    assert [r["step"] for r in free] == [0, 20, 40, 60]
    assert free[0]["p_action"] < 0.15 and free[-1]["p_action"] > free[0]["p_action"] + 0.3, free
    assert held[0]["p_action"] < held[-1]["p_action"] < free[-1]["p_action"] - 0.1, held


def test_a_bad_action_is_named():
    assert pmpo_bandit.action_index(["noop", "do"], "1") == 1
    with pytest.raises(ValueError, match="'jump'"):
        pmpo_bandit.action_index(["noop", "do"], "jump")
    with pytest.raises(ValueError, match="out of range"):
        pmpo_bandit.action_index(["noop", "do"], "2")
