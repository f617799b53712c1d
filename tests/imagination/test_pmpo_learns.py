"""Phase 3's update where the answer is known: a world that pays 1 for one action value (a contextual bandit on fixed
features). PMPO with the value head and the phase-3 optimizer must learn to take it; the prior's KL holds it back."""

from __future__ import annotations

import torch
from im_fixtures import context_batch, tiny_agent

from dreamer.agent import RLConfig
from dreamer.imagination import PMPOConfig, grouped_step, make_phase3_optimizer, phase3_terms
from dreamer.imagination.rollout import Imagined
from dreamer.training.config import Phase3Config
from dreamer.training.optim import NonFiniteGuard, make_scheduler

H, TARGET = 8, 2  # the rewarded value of the first action component (of 3), on the chunk's first sub-step


def _p_target(agent, h) -> float:
    with torch.no_grad():
        return float(torch.softmax(agent.policy(h).logits[0].float(), -1)[..., 0, TARGET].mean())


def _train(beta: float, steps: int = 120) -> tuple[float, float]:
    """(p(target) before, after) ``steps`` phase-3 updates in which r_{t+1} = 1 when a_t takes TARGET."""
    agent = tiny_agent()
    with torch.no_grad():  # a value of 0 everywhere (the fixture's random value head decodes to about 1e7)
        for p in agent.value.mlp.out.parameters():
            p.zero_()
    prior = agent.freeze_for_phase3()
    with torch.no_grad():
        h = agent.trunk(context_batch(b=16, t=H + 1)["latents"])  # (B, H+1, d): fixed features, a world that stays
    b = h.shape[0]
    pc = Phase3Config(steps=steps, warmup=0, lr=3e-3, value_lr=3e-3)
    opt, rl = make_phase3_optimizer(agent, pc), RLConfig()
    sched, guard, gen = make_scheduler(opt, pc), NonFiniteGuard(3), torch.Generator().manual_seed(0)
    before = _p_target(agent, h)
    for step in range(steps):
        with torch.no_grad():
            a = agent.policy(h[:, :H]).sample(gen)  # (B, H, S, D)
        im = Imagined(latents=torch.zeros(b, H + 1, 1, 1), actions=a, action_mask=torch.ones(a.shape[:3], dtype=torch.bool),
                      rewards=(a[..., 0, 0] == TARGET).float(), continues=torch.ones(b, H), features=h,
                      context=torch.zeros(b, 1, 1, 1))
        t = phase3_terms(agent, prior, im, rl, PMPOConfig(beta=beta))
        ok, _ = grouped_step(opt, sched, t.policy_loss + t.value_loss, pc, guard, step)
        assert ok
    return before, _p_target(agent, h)


def test_pmpo_learns_the_rewarded_action_and_the_prior_holds_it_back():
    before, free = _train(beta=0.0)
    assert 0.2 < before < 0.5  # near uniform over 3 values at the start
    assert free > 0.9, f"PMPO without the prior did not learn a perfect one-step reward: p {before:.2f} -> {free:.2f}"
    _, held = _train(beta=0.3)  # the presets' weight
    assert before + 0.1 < held < free - 0.1  # it learns, and the KL to the prior holds it back
