"""The loss each phase's audit runs when no ``loss_fn`` is given.

* phase 1: ``ShortcutForcingLoss`` on the batch (a fixed generator: the global RNG is untouched);
* phase 2: ``dreamer.agent.phase2_loss``;
* phase 3: a *proxy* built from the real phase-3 pieces on the sample batch instead of imagined
  rollouts (h from the frozen trunk, rewards / continues from the frozen heads, λ-returns, PMPO with
  the KL to the frozen prior, two-hot value loss). It audits the agent's wiring, not the rollout; pass
  ``loss_fn`` (a closure over ``dreamer.imagination``) to audit the real loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dreamer.training.runtime import unwrap


def phase1_loss(model_dict: dict, batch: dict, device: torch.device) -> Callable[[], torch.Tensor]:
    from dreamer.dynamics import ShortcutForcingLoss

    dyn = model_dict["dynamics"]
    loss_mod = model_dict.get("loss") or ShortcutForcingLoss(unwrap(dyn).cfg).to(device)
    gen = torch.Generator(device=device).manual_seed(0)

    def fn() -> torch.Tensor:
        loss, _ = loss_mod(dyn, batch["latents"], batch["actions"], batch["action_mask"], generator=gen)
        return loss

    return fn


def phase2_loss_fn(model_dict: dict, batch: dict) -> Callable[[], torch.Tensor]:
    from dreamer.agent import phase2_loss

    agent = model_dict["agent"]

    def fn() -> torch.Tensor:
        loss, _ = phase2_loss(agent, batch, unwrap(agent).cfg, compute_metrics=False)
        return loss

    return fn


def phase3_proxy_loss(model_dict: dict, batch: dict, rl_cfg=None) -> Callable[[], torch.Tensor]:
    from dreamer.agent import RLConfig, kl, lambda_returns, log_prob, pmpo_loss, value_loss

    agent, prior = unwrap(model_dict["agent"]), model_dict["prior"]
    cfg = rl_cfg or RLConfig()
    gamma = cfg.gamma(agent.chunk_len)

    def fn() -> torch.Tensor:
        h_btd = agent.trunk(batch["latents"].float())  # frozen: a constant unless the trunk wrongly trains
        logits, prior_logits = agent.policy(h_btd), prior(h_btd)
        acts, mask = batch["actions"], batch["action_mask"]
        r_bt, c_bt = agent.reward.predict(h_btd), agent.cont.predict(h_btd)
        v_logits = agent.value(h_btd)  # (B, T, K)
        v_bt = agent.value.twohot.decode(v_logits).detach()
        ret = lambda_returns(r_bt[:, 1:], v_bt, c_bt[:, 1:], gamma, cfg.lam)  # (B, T-1)
        logp = log_prob(logits, acts, mask)[:, :-1]
        k = kl(logits, prior_logits, mask)[:, :-1]
        return pmpo_loss(logp, ret - v_bt[:, :-1], k, cfg.alpha, cfg.beta) + value_loss(
            agent.value.twohot, v_logits[:, :-1], ret)

    return fn


def default_loss_fn(phase: int, model_dict: dict, batch: dict, device: torch.device, rl_cfg=None):
    """(loss closure, a short description of it)."""
    if phase == 1:
        return phase1_loss(model_dict, batch, device), "ShortcutForcingLoss on the sample batch"
    if phase == 2:
        return phase2_loss_fn(model_dict, batch), "dreamer.agent.phase2_loss on the sample batch"
    return phase3_proxy_loss(model_dict, batch, rl_cfg), "phase-3 proxy (PMPO + value loss on the sample batch)"
