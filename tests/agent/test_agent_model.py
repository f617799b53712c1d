"""Trunk causality, head initialisation, phase-2 gradients and a short BC run."""

from __future__ import annotations

import pytest
import torch

from dreamer.agent import Agent, AgentConfig, check_batch, phase2_loss

N, C, S, CARDS = 2, 5, 2, [5, 3]


def _cfg(**kw) -> AgentConfig:
    base = {"d_model": 32, "num_layers": 2, "num_heads": 2, "max_time": 16, "mlp_hidden": 64, "head_hidden": 32}
    base.update(kw)
    return AgentConfig(**base)


def _agent(seed: int = 0, **kw) -> Agent:
    torch.manual_seed(seed)
    return Agent(_cfg(**kw), num_tokens=N, latent_dim=C, action_cards=CARDS, chunk_len=S)


def _batch(b: int = 6, t: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Synthetic batch where the actions are functions of the latent of the same step."""
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(b, t, N, C, generator=g)
    a0 = lat[:, :, :S, :].argmax(-1)  # (B,T,S): sub-step s uses token s
    a1 = (lat[:, :, :S, 0] > 0).long() + (lat[:, :, :S, 1] > 1).long()  # in {0,1,2}
    mask = torch.ones(b, t, S, dtype=torch.bool)
    mask[:, -1] = False  # last latent of the episode: all-False row
    mask[0, 2, 1] = False  # a padded sub-step
    return {
        "latents": lat,
        "actions": torch.stack([a0, a1], -1),
        "action_mask": mask,
        "rewards": (lat[:, :, 0, 0] > 0.5).float() * 2.0,
        "continues": torch.ones(b, t).index_put_((torch.tensor([1]), torch.tensor([t - 1])), torch.tensor(0.0)),
    }


def test_trunk_causal_and_shapes():
    agent = _agent().eval()
    lat = torch.randn(3, 10, N, C)
    h = agent(lat)
    assert h.shape == (3, 10, 32)
    for t in (0, 4, 8):
        lat2 = lat.clone()
        lat2[:, t + 1 :] = torch.randn_like(lat2[:, t + 1 :]) * 10
        h2 = agent(lat2)
        assert torch.allclose(h2[:, : t + 1], h[:, : t + 1], atol=1e-5)
        assert not torch.allclose(h2[:, t + 1], h[:, t + 1], atol=1e-3)
    # a prefix gives the same features as the full window
    assert torch.allclose(agent(lat[:, :4]), h[:, :4], atol=1e-5)


def test_trunk_rejects_bad_input():
    agent = _agent()
    with pytest.raises(ValueError, match="max_time=16"):
        agent(torch.randn(1, 17, N, C))
    with pytest.raises(ValueError, match=r"\(B, T, 2, 5\)"):
        agent(torch.randn(1, 4, N, C + 1))
    with pytest.raises(KeyError, match="continues"):
        b = _batch()
        del b["continues"]
        check_batch(b, agent)
    with pytest.raises(ValueError, match="actions"):
        b = _batch()
        b["actions"] = b["actions"][..., :1]
        check_batch(b, agent)


def test_reward_value_heads_start_at_zero():
    agent = _agent()
    h = agent(torch.randn(4, 6, N, C))
    for head in (agent.reward, agent.value):
        pred = head.predict(h)
        assert pred.shape == (4, 6)
        assert torch.equal(pred, torch.zeros(4, 6))
    assert agent.cont(h).shape == (4, 6)
    assert agent.cont.predict(h).min().item() > 0.0


def test_phase2_gradients_reach_every_head():
    agent = _agent()
    loss, metrics = phase2_loss(agent, _batch(), agent.cfg)
    loss.backward()
    for name in ("trunk", "policy", "reward", "cont", "value"):
        grads = [p.grad for p in getattr(agent, name).parameters()]
        assert all(g is not None for g in grads), name
        assert sum(g.abs().sum().item() for g in grads) > 0, name
    expected = {
        "loss", "bc_loss", "reward_loss", "continue_loss", "bc_accuracy", "policy_entropy",
        "max_action_prob", "reward_mae", "reward_pred_std", "continue_accuracy", "reward_mae_nonzero",
        "value_loss", "value_return_corr",
    }
    assert set(metrics) == expected
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["reward_pred_std"] == 0.0  # zero-initialised reward head
    assert metrics["loss"] == pytest.approx(loss.item())


def test_spec_and_phase3_freeze():
    agent = _agent()
    spec = agent.spec
    assert spec == {"num_tokens": N, "latent_dim": C, "action_cards": CARDS, "chunk_len": S}
    agent.check_spec(dict(spec))
    with pytest.raises(ValueError, match=r"action_cards is \[17\] but this run has \[5, 3\]"):
        agent.check_spec({**spec, "action_cards": [17]})
    prior = agent.freeze_for_phase3()
    assert not any(p.requires_grad for p in prior.parameters())
    assert not any(p.requires_grad for m in (agent.trunk, agent.reward, agent.cont) for p in m.parameters())
    assert all(p.requires_grad for p in agent.phase3_parameters())
    h = agent(torch.randn(2, 3, N, C))
    assert not h.requires_grad
    a = agent.policy(h).sample()
    assert torch.allclose(prior(h).log_prob(a), agent.policy(h).log_prob(a))


def test_short_bc_run_learns_latent_dependent_actions():
    torch.manual_seed(0)
    agent = _agent(seed=1, num_layers=1)
    batch = _batch(b=16, t=8, seed=3)
    opt = torch.optim.Adam(agent.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss, m = phase2_loss(agent, batch, agent.cfg, compute_metrics=first is None)
        first = first or m
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _, last = phase2_loss(agent, batch, agent.cfg)
    chance = (1 / 5 + 1 / 3) / 2
    assert first["bc_accuracy"] < 0.5
    assert last["bc_accuracy"] > 0.85, last
    assert last["bc_accuracy"] > chance + 0.4
    assert last["bc_loss"] < 0.5 * first["bc_loss"]
    assert last["reward_loss"] < first["reward_loss"]
    assert last["continue_accuracy"] > 0.95


def test_act_uses_last_window_step():
    agent = _agent().eval()
    lat = torch.randn(3, 20, N, C)  # longer than max_time=16: cropped to the last 16
    greedy = agent.act(lat, greedy=True)
    assert greedy.shape == (3, S, len(CARDS)) and greedy.dtype == torch.int64
    expected = agent.policy(agent(lat[:, -16:])[:, -1]).mode()
    assert torch.equal(greedy, expected)
    g = torch.Generator().manual_seed(0)
    sampled = agent.act(lat, generator=g)
    assert sampled.shape == greedy.shape
    assert int(sampled[..., 0].max()) < CARDS[0] and int(sampled[..., 1].max()) < CARDS[1]


def test_data_value_targets_are_the_clips_lambda_returns_and_leave_the_trunk_alone():
    from dreamer.agent import RLConfig
    from dreamer.agent.losses import data_value_loss

    agent, rl = _agent(), RLConfig(gamma_env=0.9, lam=1.0)
    b = _batch()
    rewards = torch.zeros(b["rewards"].shape)
    rewards[:, 2] = 1.0  # the reward on entering latent 2
    h = agent.trunk(b["latents"])
    loss, v, returns = data_value_loss(agent, h, rewards, torch.ones_like(rewards), rl)
    g = rl.gamma(agent.chunk_len)
    assert torch.all(v == 0)  # zero-initialised head: the targets are the discounted rewards of the clip
    assert torch.allclose(returns[:, 0], torch.full_like(returns[:, 0], g)) and torch.all(returns[:, 1] == 1)
    assert torch.all(returns[:, 2:] == 0)
    loss.backward()
    assert all(p.grad is None for p in agent.trunk.parameters())  # the value never shapes the trunk
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.value.parameters())
