"""Imagined rollouts for phase 3 (docs/design.md §6): the frozen world model dreams, the policy acts.

For B contexts of Tc latent steps (a cache batch with clip_len = Tc) and t = 0 .. H-1:

    h_t      = trunk(latents <= t)                 (the last agent.cfg.max_time steps)
    a_t      ~ pi(. | h_t)                          a chunk (S, D), every sub-step valid
    z_{t+1}  = Rollout.step(a_t)                    frozen dynamics, K shortcut steps, context noise,
                                                    KV cache: the context is encoded once
    r_{t+1}, c_{t+1} = reward / continue heads on h_{t+1}

Everything here is inference under ``torch.no_grad()``: the imagined latents, actions, rewards,
continues and features are constants to the phase-3 losses. Time index t = 0 is the last context
latent (the start state), so ``latents[:, 0]`` is real data and ``latents[:, 1:]`` is imagined.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dreamer.agent.model import Agent
from dreamer.dynamics.model import DynamicsModel
from dreamer.dynamics.sampler import Rollout


@dataclass
class Imagined:
    """One batch of imagined trajectories; every tensor is a constant (no grad_fn)."""

    latents: Tensor  # (B, H+1, N, C) standardised; z_0 = last context latent, z_1..z_H imagined
    actions: Tensor  # (B, H, S, D) int64; actions[:, t] is the chunk applied from z_t towards z_{t+1}
    action_mask: Tensor  # (B, H, S) bool, all True (every imagined sub-step is acted)
    rewards: Tensor  # (B, H) r_1..r_H: reward head on h_{t+1} (reward on entering z_{t+1})
    continues: Tensor  # (B, H) c_1..c_H: continue probability on h_{t+1}
    features: Tensor  # (B, H+1, d) h_0..h_H from the frozen trunk
    context: Tensor  # (B, Tc, N, C) clean context latents; context[:, -1] == latents[:, 0]

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[1])

    @property
    def history(self) -> Tensor:
        """Context followed by the imagined latents, (B, Tc+H, N, C): what the trunk reads."""
        return torch.cat([self.context, self.latents[:, 1:]], 1)


def _check_context(dynamics: DynamicsModel, agent: Agent, batch: dict, horizon: int) -> None:
    for key in ("latents", "actions", "action_mask"):
        if key not in batch:
            raise KeyError(f"imagine: context batch has no key {key!r} (expected a ClipSampler batch)")
    z, acts, mask = batch["latents"], batch["actions"], batch["action_mask"]
    if z.dim() != 4 or z.shape[2:] != (agent.num_tokens, agent.latent_dim):
        raise ValueError(f"imagine: latents {tuple(z.shape)} must be (B, Tc, N={agent.num_tokens}, "
                         f"C={agent.latent_dim})")
    if acts.shape[:2] != z.shape[:2] or mask.shape != acts.shape[:3]:
        raise ValueError(f"imagine: actions {tuple(acts.shape)} / action_mask {tuple(mask.shape)} do not "
                         f"match latents {tuple(z.shape)} (need (B,C,S,D) and (B,C,S))")
    if horizon < 1:
        raise ValueError(f"imagine: horizon must be >= 1, got {horizon}")
    total = z.shape[1] + horizon
    if total > dynamics.cfg.max_time:
        raise ValueError(f"imagine: context {z.shape[1]} + horizon {horizon} = {total} latent steps exceeds "
                         f"dynamics.max_time={dynamics.cfg.max_time}; lower phase3.context or phase3.horizon")
    if agent.chunk_len != dynamics.chunk_len or agent.action_cards != dynamics.action_cards:
        raise ValueError(f"imagine: agent (S={agent.chunk_len}, cards={agent.action_cards}) and dynamics "
                         f"(S={dynamics.chunk_len}, cards={dynamics.action_cards}) disagree")


def _last_feature(trunk, history_btnc: Tensor, window: int) -> Tensor:
    """h of the last step of ``history`` seen through the trunk's sliding window of ``window`` steps, (B, d)."""
    return trunk(history_btnc[:, -window:])[:, -1]


@torch.no_grad()
def imagine(dynamics: DynamicsModel, agent: Agent, context_batch: dict, horizon: int,
            generator: torch.Generator | None = None, sample_steps: int | None = None,
            context_noise: float | None = None, use_kv_cache: bool = True, trunk=None,
            forward_into=None, actions_bhsd: Tensor | None = None) -> Imagined:
    """Dream ``horizon`` latent steps after each context of ``context_batch`` (see the module docstring).

    ``generator`` (on the models' device) drives both the policy's samples and the dynamics' noise,
    so a fixed seed reproduces a rollout. ``sample_steps`` / ``context_noise`` default to the
    dynamics config. ``trunk`` may be a compiled copy of ``agent.trunk`` and ``forward_into`` a compiled
    ``dynamics.forward_into`` (same weights; ``phase3.compile``). ``actions_bhsd`` (B, H, S, D), when given, are the
    chunks applied instead of the policy's samples (a replay of known actions in the world model).
    """
    _check_context(dynamics, agent, context_batch, horizon)
    if actions_bhsd is not None and actions_bhsd.shape[:2] != (context_batch["latents"].shape[0], horizon):
        raise ValueError(f"imagine: actions_bhsd {tuple(actions_bhsd.shape)} must be (B, H={horizon}, S, D)")
    trunk, window = (trunk if trunk is not None else agent.trunk), agent.trunk.max_time
    ctx = context_batch["latents"].float()  # (B, Tc, N, C)
    b = ctx.shape[0]
    ro = Rollout(dynamics, ctx, context_batch["actions"], context_batch["action_mask"], use_kv_cache=use_kv_cache,
                 generator=generator, sample_steps=sample_steps, context_noise=context_noise, forward_into=forward_into)
    full = torch.ones(b, agent.chunk_len, dtype=torch.bool, device=ctx.device)  # (B, S)
    history = ctx
    h = _last_feature(trunk, history, window).float()  # h_0 (B, d)
    feats, acts, zs = [h], [], [ctx[:, -1]]
    for t in range(horizon):
        a = agent.policy(h).sample(generator) if actions_bhsd is None else actions_bhsd[:, t].long()  # (B, S, D)
        z = ro.step(a, full).float()  # (B, N, C)
        history = torch.cat([history, z[:, None]], 1)
        h = _last_feature(trunk, history, window).float()  # h_{t+1}
        acts.append(a)
        zs.append(z)
        feats.append(h)
    features = torch.stack(feats, 1)  # (B, H+1, d)
    # the reward and continue heads read h_1..h_H once, batched, after the loop (they do not steer it)
    return Imagined(
        latents=torch.stack(zs, 1),
        actions=torch.stack(acts, 1),
        action_mask=full[:, None].expand(b, horizon, agent.chunk_len).clone(),
        rewards=agent.reward.predict(features[:, 1:]).float(),
        continues=agent.cont.predict(features[:, 1:]).float(),
        features=features,
        context=ctx,
    )


@torch.no_grad()
def recompute_features(agent: Agent, imagined: Imagined) -> Tensor:
    """h_0..h_H (B, H+1, d) from the frozen trunk over ``imagined.history``, with the same sliding window
    as :func:`imagine` (one causal pass when the whole history fits in ``agent.trunk.max_time``)."""
    return features_of(agent, imagined.history, imagined.context.shape[1])


@torch.no_grad()
def features_of(agent: Agent, hist: Tensor, c: int) -> Tensor:
    """h_{c-1}..h_{T-1} (B, T-c+1, d) of a history (B, T, N, C) whose first ``c`` steps are the context, read through
    the trunk's sliding window as :func:`imagine` reads them (real latents as well as imagined ones)."""
    w = agent.trunk.max_time
    if hist.shape[1] <= w:
        return agent.trunk(hist)[:, c - 1:].float()
    return torch.stack([_last_feature(agent.trunk, hist[:, : c + t], w) for t in range(hist.shape[1] - c + 1)], 1).float()
