"""Phase-3 losses on an imagined batch (docs/design.md §6): PMPO for the policy (:mod:`.pmpo`), two-hot TD(lambda)
for the value.

Gradient flows only into the policy head (through log pi and KL(pi || pi_prior)) and the value head
(through its two-hot logits). The features h come from the frozen trunk and carry no gradient; the
lambda-returns and advantages are built from detached values, so sg(R_t) is the value target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dreamer.agent.config import RLConfig
from dreamer.agent.maths import TwoHot
from dreamer.agent.model import Agent
from dreamer.agent.policy import PolicyDist
from dreamer.agent.rl import lambda_returns, value_loss

from .pmpo import PMPOConfig, pmpo, pmpo_stats
from .rollout import Imagined, recompute_features

NONZERO_REWARD = 0.05  # |r| above this counts as a non-zero imagined reward (Crafter's smallest is 0.1)


@dataclass
class Phase3Terms:
    """Everything one imagined batch gives: the two losses (with graph) and detached intermediates."""

    policy_loss: Tensor  # scalar, graph into the policy head
    value_loss: Tensor  # scalar, graph into the value head
    dist: PolicyDist  # the policy's distribution over the (B, H) imagined chunks (graph)
    log_prob: Tensor  # (B, H) log pi(a_t | h_t) (graph)
    kl: Tensor  # (B, H) KL(pi || pi_prior) (graph)
    values: Tensor  # (B, H+1) v_0..v_H, detached
    returns: Tensor  # (B, H) R_0..R_{H-1}, detached
    advantages: Tensor  # (B, H) the advantages PMPO split on (pmpo.advantages), detached


def phase3_terms(agent: Agent, prior: nn.Module, imagined: Imagined, rl: RLConfig, pmpo_cfg: PMPOConfig,
                 twohot: TwoHot | None = None, recompute: bool = False) -> Phase3Terms:
    """The PMPO and value losses of one imagined batch, and their intermediates.

    h_0..h_H are ``imagined.features`` (or, with ``recompute=True``, a fresh pass of the frozen trunk
    over the imagined history; both are constants). v_0..v_H = value head(h); R_0..R_{H-1} =
    lambda_returns(r_1..r_H, sg(v), c_1..c_H, gamma = rl.gamma(S), rl.lam); the policy loss is
    :func:`dreamer.imagination.pmpo.pmpo` of pi(.|h_t) and pi_prior(.|h_t) on the imagined chunks with R and v;
    L_v = two-hot CE of v(h_t) against sg(R_t), t < H.
    """
    twohot = twohot if twohot is not None else agent.value.twohot
    h = recompute_features(agent, imagined) if recompute else imagined.features  # (B, H+1, d)
    h = h.detach()
    H = imagined.horizon
    dist = agent.policy(h[:, :H])  # over (B, H, S)
    with torch.no_grad():
        prior_dist = prior(h[:, :H])
    v_logits = agent.value(h)  # (B, H+1, num_bins)
    v_sg = twohot.decode(v_logits).detach()  # (B, H+1)
    returns = lambda_returns(imagined.rewards, v_sg, imagined.continues, rl.gamma(agent.chunk_len), rl.lam)
    p = pmpo(dist, prior_dist, imagined.actions, imagined.action_mask, returns, v_sg[:, :H], pmpo_cfg)
    return Phase3Terms(
        policy_loss=p.loss, value_loss=value_loss(twohot, v_logits[:, :H], returns), dist=dist,
        log_prob=p.log_prob, kl=p.kl, values=v_sg, returns=returns.detach(), advantages=p.advantages,
    )


def phase3_losses(agent: Agent, prior: nn.Module, imagined: Imagined, rl: RLConfig, pmpo_cfg: PMPOConfig,
                  twohot: TwoHot | None = None, recompute: bool = False) -> tuple[Phase3Terms, dict[str, float]]:
    """(terms, metrics) for one imagined batch: :func:`phase3_terms` and its figures as floats."""
    t = phase3_terms(agent, prior, imagined, rl, pmpo_cfg, twohot, recompute)
    metrics = rollout_metrics(imagined, t.advantages, t.returns, t.values[:, : imagined.horizon])
    with torch.no_grad():
        metrics.update({
            "loss/policy": float(t.policy_loss.detach()), "loss/value": float(t.value_loss.detach()),
            "policy/log_prob": float(t.log_prob.detach().mean()),
            "policy/entropy": float(t.dist.entropy(imagined.action_mask).mean()),
            "policy/kl_prior": float(t.kl.detach().mean()),
        })
    return t, metrics


@torch.no_grad()
def rollout_metrics(imagined: Imagined, adv: Tensor, returns: Tensor, values: Tensor) -> dict[str, float]:
    """Advantages, imagined rewards / continues, value against return, and latent drift, as floats."""
    r = imagined.rewards.float()
    st = pmpo_stats(adv)
    out = {
        "adv/mean": float(adv.mean()), "adv/std": float(adv.std(unbiased=False)), "adv/num_pos": st["num_pos"],
        "adv/num_neg": st["num_neg"], "adv/frac_pos": st["frac_pos"],
        "imagined/reward_mean": float(r.mean()), "imagined/reward_std": float(r.std(unbiased=False)),
        "imagined/reward_nonzero_frac": float((r.abs() > NONZERO_REWARD).float().mean()),
        "imagined/continue_mean": float(imagined.continues.mean()),
        "value/mean": float(values.mean()), "value/return_mean": float(returns.mean()),
        "value/abs_error": float((values - returns).abs().mean()),
        "value/return_corr": correlation(values, returns),
    }
    mean_t, std_t = latent_drift(imagined.latents)
    for t in drift_steps(imagined.horizon):
        out[f"imagined/latent_mean_h{t}"] = float(mean_t[t])
        out[f"imagined/latent_std_h{t}"] = float(std_t[t])
    return out


def correlation(x: Tensor, y: Tensor) -> float:
    """Pearson correlation of two same-shaped tensors; 0 when either is constant."""
    x, y = x.flatten().float(), y.flatten().float()
    x, y = x - x.mean(), y - y.mean()
    den = (x.pow(2).sum() * y.pow(2).sum()).sqrt()
    return float((x * y).sum() / den) if float(den) > 1e-12 else 0.0


@torch.no_grad()
def latent_drift(latents_bhnc: Tensor) -> tuple[Tensor, Tensor]:
    """Per-step mean and std over (batch, tokens, channels), each (H+1,). Standardised data is 0 / 1;
    a rollout drifting away from those is leaving the data distribution."""
    z = latents_bhnc.float().transpose(0, 1).flatten(1)  # (H+1, B*N*C)
    return z.mean(1), z.std(1, unbiased=False)


def drift_steps(horizon: int) -> list[int]:
    """Steps logged for the drift: 0, 1, 2, 4, ... and the last one."""
    steps, t = [0], 1
    while t < horizon:
        steps.append(t)
        t *= 2
    return steps + [horizon]
