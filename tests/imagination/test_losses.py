"""phase3_losses(): gradients reach only the policy and value heads; maths against a hand computation."""

from __future__ import annotations

import copy

import pytest
import torch
from im_fixtures import context_batch

from dreamer.agent import RLConfig
from dreamer.imagination import (
    PMPOConfig,
    correlation,
    drift_steps,
    grouped_step,
    imagine,
    latent_drift,
    make_phase3_optimizer,
    phase3_losses,
)
from dreamer.training.config import Phase3Config
from dreamer.training.optim import NonFiniteGuard, make_scheduler


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_one_step_trains_only_policy_and_value(world):
    dyn, agent, prior = world
    frozen = {"dynamics": dyn, "trunk": agent.trunk, "reward": agent.reward, "cont": agent.cont, "prior": prior}
    before = {k: _state(m) for k, m in frozen.items()}
    heads_before = {"policy": _state(agent.policy), "value": _state(agent.value)}
    pc = Phase3Config(steps=5, warmup=0, lr=1e-2, value_lr=1e-2)
    opt = make_phase3_optimizer(agent, pc)
    assert [g["lr"] for g in opt.param_groups] == [pc.lr, pc.value_lr]
    sched = make_scheduler(opt, pc)
    im = imagine(dyn, agent, context_batch(), 4, generator=torch.Generator().manual_seed(0))
    t, metrics = phase3_losses(agent, prior, im, RLConfig(), PMPOConfig())
    pol, val = t.policy_loss, t.value_loss
    ok, norms = grouped_step(opt, sched, pol + val, pc, NonFiniteGuard(3), 0)
    assert ok and norms["policy"] > 0 and norms["value"] > 0
    for p in list(agent.policy.parameters()) + list(agent.value.parameters()):
        assert p.grad is not None
    assert any(float(p.grad.abs().sum()) > 0 for p in agent.policy.parameters())
    assert any(float(p.grad.abs().sum()) > 0 for p in agent.value.parameters())
    for name, m in frozen.items():
        for p in m.parameters():
            assert p.grad is None and not p.requires_grad, name
        after = m.state_dict()
        assert all(torch.equal(before[name][k], after[k]) for k in after), f"{name} changed"
    for name in ("policy", "value"):
        after = getattr(agent, name).state_dict()
        assert any(not torch.equal(heads_before[name][k], after[k]) for k in after), f"{name} did not move"
    B, H = im.rewards.shape
    assert metrics["adv/num_pos"] + metrics["adv/num_neg"] == B * H
    for key in ("adv/std", "imagined/reward_std", "imagined/reward_nonzero_frac", "value/return_corr",
                "value/abs_error", "policy/entropy", "policy/kl_prior", "imagined/latent_mean_h4"):
        assert key in metrics


@pytest.mark.parametrize("center", [False, True])
def test_losses_against_hand_computation(world, center):
    dyn, agent, prior = world
    with torch.no_grad():  # move the policy away from the prior so the KL term is non-zero
        for p in agent.policy.parameters():
            p.add_(0.2 * torch.randn_like(p))
    im = imagine(dyn, agent, context_batch(b=4), 3, generator=torch.Generator().manual_seed(1))
    rl = RLConfig(gamma_env=0.9, lam=0.8)
    terms, m = phase3_losses(agent, prior, im, rl, PMPOConfig(alpha=0.3, beta=0.5, center_advantages=center))
    pol, val = terms.policy_loss, terms.value_loss
    g, lam, H = 0.9**agent.chunk_len, 0.8, 3
    h = im.features
    v = agent.value.twohot.decode(agent.value(h)).detach()
    r, c = im.rewards, im.continues
    R = [None] * H
    nxt = v[:, H]
    for t in reversed(range(H)):
        nxt = R[t] = r[:, t] + g * c[:, t] * ((1 - lam) * v[:, t + 1] + lam * nxt)
    R = torch.stack(R, 1)
    A = R - v[:, :H]
    if center:  # the signs split at the batch's mean advantage
        A = A - A.mean()
    dist = agent.policy(h[:, :H])
    lp = dist.log_prob(im.actions, im.action_mask)
    kl_ = dist.kl(prior(h[:, :H]), im.action_mask)
    pos, neg = A >= 0, A < 0
    expect = (0.7 * lp[neg].sum() / max(int(neg.sum()), 1) - 0.3 * lp[pos].sum() / max(int(pos.sum()), 1)
              + 0.5 * kl_.mean())
    assert torch.allclose(pol, expect, atol=1e-5)
    ce = -(agent.value.twohot.encode(R) * torch.log_softmax(agent.value(h[:, :H]), -1)).sum(-1).mean()
    assert torch.allclose(val, ce, atol=1e-5)
    assert abs(m["value/return_mean"] - float(R.mean())) < 1e-5 and m["policy/kl_prior"] > 0
    assert abs(m["adv/mean"] - float(A.mean())) < 1e-5
    assert torch.allclose(terms.advantages, A, atol=1e-6)
    assert torch.allclose(terms.log_prob, lp) and torch.allclose(terms.kl, kl_)


def test_value_loss_falls_on_a_fixed_batch(world):
    dyn, agent, prior = world
    im = imagine(dyn, agent, context_batch(), 4, generator=torch.Generator().manual_seed(2))
    pc = Phase3Config(steps=30, warmup=0, lr=1e-3, value_lr=3e-3, min_lr_ratio=1.0)
    opt = make_phase3_optimizer(agent, pc)
    sched = make_scheduler(opt, pc)
    losses = []
    for step in range(30):
        t, _ = phase3_losses(agent, prior, im, RLConfig(), PMPOConfig())
        pol, val = t.policy_loss, t.value_loss
        losses.append(float(val.detach()))
        grouped_step(opt, sched, pol + val, pc, NonFiniteGuard(3), step)
    assert losses[-1] < 0.7 * losses[0]


def test_recompute_gives_the_same_losses(world):
    dyn, agent, prior = world
    im = imagine(dyn, agent, context_batch(), 3, generator=torch.Generator().manual_seed(4))
    a, _ = phase3_losses(agent, prior, im, RLConfig(), PMPOConfig())
    b, _ = phase3_losses(agent, prior, copy.copy(im), RLConfig(), PMPOConfig(), recompute=True)
    assert torch.allclose(a.policy_loss, b.policy_loss, atol=1e-5) and torch.allclose(a.value_loss, b.value_loss,
                                                                                       atol=1e-5)


def test_metric_helpers():
    z = torch.zeros(2, 3, 4, 5)
    z[:, 1] = 2.0
    z[:, 2] = torch.randn(2, 4, 5) * 3
    mean, std = latent_drift(z)
    assert mean[0] == 0 and mean[1] == 2 and std[1] == 0 and std[0] == 0
    assert abs(float(std[2]) - float(z[:, 2].std(unbiased=False))) < 1e-5
    assert drift_steps(8) == [0, 1, 2, 4, 8] and drift_steps(5) == [0, 1, 2, 4, 5] and drift_steps(1) == [0, 1]
    x = torch.arange(10.0)
    assert abs(correlation(x, 2 * x + 1) - 1) < 1e-6 and abs(correlation(x, -x) + 1) < 1e-6
    assert correlation(x, torch.ones(10)) == 0.0
