"""The FSDP helpers that run without torchrun: the choice of units, the optimizer-state layouts, and the
refusals (the sharded runs themselves: tests/test_resilience.py, test_phase2_script.py, test_phase3_script.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dreamer.agent import Agent, AgentConfig
from dreamer.config import load
from dreamer.dynamics import DynamicsConfig, DynamicsModel
from dreamer.presets import ConfigError
from dreamer.training import sharding
from dreamer.training.runtime import Runtime


class Objective(nn.Module):  # the shape of train_phase2.Phase2Objective
    def __init__(self, agent):
        super().__init__()
        self.agent = agent


def test_units_are_blocks_then_the_other_children():
    cfg = DynamicsConfig(d_model=32, num_layers=2, num_heads=2, num_kv_heads=1, num_registers=1, max_time=8)
    dyn = DynamicsModel(cfg, 16, 16, [17], 8)
    units = sharding._units(dyn)
    assert all(any(u is b for u in units) for b in dyn.blocks)  # each block is its own unit
    assert not any(u is dyn for u in units)  # the root (registers, embeddings of its own) is sharded last
    agent = Agent(AgentConfig(d_model=32, num_layers=2, num_heads=2, max_time=8, mlp_hidden=32, head_hidden=32),
                  16, 16, [17], 8)
    units = sharding._units(Objective(agent))
    assert all(any(u is b for u in units) for b in agent.trunk.blocks)
    assert any(u is agent.policy for u in units) and any(u is agent.reward for u in units)
    assert not any(u is agent for u in units)  # every parameter of the agent already lies in a unit
    claimed = {p for u in units for p in u.parameters()}
    assert claimed == set(agent.parameters())


def test_plain_optimizer_state_converts_to_the_name_keyed_layout_and_back():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    opt = torch.optim.AdamW([{"params": [model[0].weight], "lr": 1e-2}, {"params": [model[2].weight], "lr": 1e-3}])
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    named = sharding._name_keyed(model, opt, opt.state_dict())
    assert set(named["state"]) == {"0.weight", "2.weight"}
    assert [g["params"] for g in named["param_groups"]] == [["0.weight"], ["2.weight"]]
    fresh = torch.optim.AdamW([{"params": [model[0].weight], "lr": 1e-2}, {"params": [model[2].weight], "lr": 1e-3}])
    sharding.load_optimizer_state(model, fresh, named)  # the layout a sharded run's checkpoint holds
    a, b = opt.state_dict(), fresh.state_dict()
    for i in a["state"]:
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(a["state"][i][k], b["state"][i][k]), (i, k)
    assert [g["lr"] for g in b["param_groups"]] == [1e-2, 1e-3]


def test_single_process_ignores_fsdp_and_phase0_refuses_it():
    cfg = load(["configs/crafter_tiny.yaml"], ["phase1.fsdp=true"])
    model = nn.Linear(2, 2)
    assert sharding.shard(Runtime(cfg=cfg, device=torch.device("cpu")), model, cfg.phase1.fsdp) is False
    assert not sharding.is_sharded(model)
    with pytest.raises(ConfigError, match="phase0.fsdp is not supported"):
        load(["configs/crafter_tiny.yaml"], ["phase0.fsdp=true"])
