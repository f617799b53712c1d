"""Tiny models and batches for the diagnostics tests (N=16 tokens of C=16 channels, as the tiny
tokenizer at 64x64 with pool 2 produces; S=8; one action component of 5 classes)."""

from __future__ import annotations

import torch

from dreamer.agent import Agent, AgentConfig, RLConfig, lambda_returns, phase2_loss, value_loss
from dreamer.dynamics import DynamicsConfig, DynamicsModel, Rollout, ShortcutForcingLoss
from dreamer.imagination import PMPOConfig, pmpo

N, C, S, CARDS = 16, 16, 8, [5]


def dyn_cfg() -> DynamicsConfig:
    return DynamicsConfig(d_model=16, num_layers=2, num_heads=2, num_kv_heads=1, num_registers=1, time_every=2,
                          max_time=16, k_max=8, sample_steps=2)


def make_dynamics(seed: int = 0) -> DynamicsModel:
    torch.manual_seed(seed)
    return DynamicsModel(dyn_cfg(), N, C, CARDS, S)


def make_agent(seed: int = 0) -> Agent:
    torch.manual_seed(seed)
    cfg = AgentConfig(d_model=16, num_layers=1, num_heads=2, max_time=16, mlp_hidden=32, head_hidden=16, num_bins=31)
    return Agent(cfg, N, C, CARDS, S)


def make_batch(B: int = 4, T: int = 6, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, T, S, dtype=torch.bool)
    mask[:, -1] = False  # the last latent of an episode: an all-False row
    rewards = (torch.rand(B, T, generator=g) < 0.4).float()
    rewards[:, 0] = 0.0
    return {
        "latents": torch.randn(B, T, N, C, generator=g),
        "actions": torch.randint(0, CARDS[0], (B, T, S, 1), generator=g),
        "action_mask": mask,
        "rewards": rewards,
        "continues": torch.ones(B, T),
        "provenance": [("ep", i) for i in range(B)],
    }


def phase1_setup(tokenizer=None):
    dyn = make_dynamics()
    models = {"dynamics": dyn, "loss": ShortcutForcingLoss(dyn.cfg)}
    if tokenizer is not None:
        models["tokenizer"] = tokenizer
    return models, torch.optim.AdamW(dyn.parameters(), lr=1e-3)


def phase2_setup(tokenizer=None):
    dyn = make_dynamics().requires_grad_(False).eval()
    agent = make_agent()
    models = {"dynamics": dyn, "agent": agent}
    if tokenizer is not None:
        models["tokenizer"] = tokenizer
    return models, torch.optim.AdamW(agent.parameters(), lr=1e-3)


def bc_train(models: dict, opt, steps: int = 15) -> None:
    """A few phase-2 steps on a batch whose rewards take both signs (stands in for a phase-2 run)."""
    agent = models["agent"]
    batch = make_batch(B=4, T=6, seed=1)
    batch["rewards"] = torch.randint(-1, 2, batch["rewards"].shape, generator=torch.Generator().manual_seed(2)).float()
    for _ in range(steps):
        loss, _ = phase2_loss(agent, batch, agent.cfg, compute_metrics=False)
        opt.zero_grad()
        loss.backward()
        opt.step()


def phase3_setup(tokenizer=None):
    models, opt = phase2_setup(tokenizer)
    bc_train(models, opt)
    # Stand-in for phase-1 training: output weights that give imagined latents the data's scale
    # (an untrained model's std is about 0.5, which the drift check rightly flags).
    out = models["dynamics"].latent_out
    with torch.no_grad():
        out.weight.normal_(0.0, out.in_features**-0.5, generator=torch.Generator().manual_seed(0))
        out.bias.zero_()
    models["prior"] = models["agent"].freeze_for_phase3()
    return models, torch.optim.AdamW(models["agent"].phase3_parameters(), lr=1e-3)


def imagine(models: dict, batch: dict, context: int = 2, horizon: int = 3, seed: int = 0) -> dict:
    """A small stand-in for dreamer.imagination: roll the frozen world model out under no_grad with the
    policy's sampled chunks, then build the phase-3 loss (PMPO + value) on the imagined trajectory."""
    agent, dyn, prior = models["agent"], models["dynamics"], models["prior"]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ro = Rollout(dyn, batch["latents"][:, :context], batch["actions"][:, :context],
                     batch["action_mask"][:, :context], generator=g)
        chunks = []
        for _ in range(horizon):
            a = agent.policy(agent.trunk(ro.history_btnc)[:, -1]).sample(g)  # (B, S, D)
            chunks.append(a)
            ro.step(a, None)
        z = ro.history_btnc  # (B, context + H, N, C)
        h_all = agent.trunk(z)  # frozen trunk: constants
        rewards = agent.reward.predict(h_all[:, context:])  # r_{t+1}, (B, H)
        conts = agent.cont.predict(h_all[:, context:])
    imag_h = h_all[:, context - 1:]  # h_0 .. h_H
    chunks_bhsd = torch.stack(chunks, 1)
    cfg, pmpo_cfg = RLConfig(), PMPOConfig(center_advantages=False)

    def loss_fn():
        dist = agent.policy(imag_h[:, :-1])
        v_logits = agent.value(imag_h)
        v = agent.value.twohot.decode(v_logits).detach()
        ret = lambda_returns(rewards, v, conts, cfg.gamma(S), cfg.lam)
        policy = pmpo(dist, prior(imag_h[:, :-1]), chunks_bhsd, None, ret, v[:, :-1], pmpo_cfg)
        return policy.loss + value_loss(agent.value.twohot, v_logits[:, :-1], ret)

    with torch.no_grad():
        v = agent.value.twohot.decode(agent.value(imag_h))
        adv = lambda_returns(rewards, v, conts, cfg.gamma(S), cfg.lam) - v[:, :-1]
        ent = agent.policy(imag_h[:, :-1]).entropy().mean() / (S * len(CARDS))
    return {"loss_fn": loss_fn, "advantages": adv, "imagined_rewards": rewards,
            "imagined_latents": z[:, context:], "policy_entropy": ent}
