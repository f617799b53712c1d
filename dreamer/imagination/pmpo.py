"""PMPO, all of it (docs/design.md §6): its config, the advantages and their centring, the loss, its figures,
and the gate that decides whether a phase-3 step moves the policy at all.

Changing PMPO means editing this file: :func:`phase3_terms <dreamer.imagination.losses.phase3_terms>` hands
:func:`pmpo` the policy's and the prior's distributions over the imagined chunks, the λ-returns and the values,
and the phase-3 loop asks :func:`policy_gate` each step. The λ-returns' discounts (``rl.gamma_env``,
``rl.lam``) are not PMPO's: phase 2 fits its value with them too.

Shapes: (B, H) over (batch, imagined time); every (batch, time) pair is one PMPO sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dreamer.agent.policy import PolicyDist


@dataclass
class PMPOConfig:
    """The ``pmpo:`` section: everything only PMPO reads."""

    alpha: float = 0.5  # weight of the positive-advantage term (1 - alpha on the negative one)
    beta: float = 0.3  # weight of the KL to the phase-2 (BC) prior
    # PMPO splits on the sign of A = R - v. A value still biased for the imagined returns (phase 2 fits it to
    # the behaviour policy's real returns) puts nearly every pair on one side; subtracting the batch's mean
    # advantage first splits them into better and worse than this batch's average instead.
    center_advantages: bool = True
    # The first value_warmup phase-3 steps train only the value head: a zero-initialised value makes every
    # advantage >= 0, so PMPO would otherwise only reinforce the policy's own samples.
    value_warmup: int = 0
    # After the warm-up the policy is updated only on batches where D+ (A >= 0) and D- (A < 0) each hold at
    # least this fraction of the (batch, time) pairs: with one sign PMPO has no contrast to learn from.
    min_sign_fraction: float = 0.05

    def __post_init__(self) -> None:
        _check(0.0 <= self.alpha <= 1.0, "alpha", self.alpha, "in [0, 1]")
        _check(math.isfinite(self.beta) and self.beta >= 0.0, "beta", self.beta, ">= 0")
        _check(isinstance(self.value_warmup, int) and self.value_warmup >= 0, "value_warmup", self.value_warmup,
               ">= 0 (steps)")
        _check(0.0 <= self.min_sign_fraction <= 0.5, "min_sign_fraction", self.min_sign_fraction, "in [0, 0.5]")


def _check(cond: bool, key: str, value, want: str) -> None:
    if not cond:
        raise ValueError(f"pmpo.{key} must be {want}, got {value!r}")


@dataclass
class PMPOTerms:
    """What :func:`pmpo` gives for one batch."""

    loss: Tensor  # scalar, graph into the policy (through log_prob and kl)
    log_prob: Tensor  # (B, H) log pi(a_t | h_t) (graph)
    kl: Tensor  # (B, H) KL(pi(.|h_t) || pi_prior(.|h_t)) (graph)
    advantages: Tensor  # (B, H) the advantages the signs are taken of, detached (centred when configured)


def advantages(returns_bh: Tensor, values_bh: Tensor, cfg: PMPOConfig) -> Tensor:
    """A_t = R_t - sg(v_t), minus the batch's mean advantage when ``cfg.center_advantages``; detached (B, H)."""
    if returns_bh.shape != values_bh.shape:
        raise ValueError(f"pmpo.advantages: returns {tuple(returns_bh.shape)} and values {tuple(values_bh.shape)} "
                         "must have one shape")
    adv = returns_bh.detach() - values_bh.detach()
    if cfg.center_advantages:  # better or worse than this batch's average
        adv = adv - adv.mean()
    return adv


def pmpo_loss(logp: Tensor, advantages: Tensor, kl: Tensor, cfg: PMPOConfig) -> Tensor:
    """PMPO policy loss (scalar) over all entries of three same-shaped tensors (e.g. (B, H)):

    L = (1-alpha)/|D-| sum_{D-} logp - alpha/|D+| sum_{D+} logp + beta/N sum kl,
    with D+ = {A >= 0}, D- = {A < 0}, N = number of entries. An empty D+ or D- contributes 0.
    Only the sign of the advantages is used (no gradient flows into them); gradients flow through
    logp and kl.
    """
    if not (logp.shape == advantages.shape == kl.shape):
        raise ValueError(
            f"pmpo_loss: logp {tuple(logp.shape)}, advantages {tuple(advantages.shape)} and kl "
            f"{tuple(kl.shape)} must have one shape"
        )
    if logp.numel() == 0:
        raise ValueError("pmpo_loss: empty inputs")
    pos = (advantages.detach() >= 0).float()
    neg = 1.0 - pos
    logp = logp.float()
    neg_term = (1.0 - cfg.alpha) * (logp * neg).sum() / neg.sum().clamp(min=1.0)
    pos_term = cfg.alpha * (logp * pos).sum() / pos.sum().clamp(min=1.0)
    return neg_term - pos_term + cfg.beta * kl.float().mean()


def pmpo(dist: PolicyDist, prior: PolicyDist, actions: Tensor, mask: Tensor | None, returns_bh: Tensor,
         values_bh: Tensor, cfg: PMPOConfig) -> PMPOTerms:
    """The PMPO objective of one batch: ``dist`` / ``prior`` are the policy's and pi_prior's distributions over
    the (B, H) chunks ``actions`` (B, H, S, D) with sub-step ``mask`` (B, H, S); ``returns_bh`` R_t and
    ``values_bh`` v_t give the advantages (:func:`advantages`)."""
    logp = dist.log_prob(actions, mask)  # (B, H)
    kl_bh = dist.kl(prior, mask)  # (B, H)
    adv = advantages(returns_bh, values_bh, cfg)
    return PMPOTerms(loss=pmpo_loss(logp, adv, kl_bh, cfg), log_prob=logp, kl=kl_bh, advantages=adv)


@torch.no_grad()
def pmpo_stats(advantages: Tensor) -> dict[str, float]:
    """Counts for logging: num_pos (A >= 0), num_neg (A < 0), frac_pos, adv_mean, adv_abs_mean."""
    a = advantages.detach().float()
    pos = (a >= 0).float().sum()
    vals = torch.stack([pos, a.numel() - pos, pos / max(a.numel(), 1), a.mean(), a.abs().mean()]).tolist()
    return dict(zip(("num_pos", "num_neg", "frac_pos", "adv_mean", "adv_abs_mean"), vals, strict=True))


@torch.no_grad()
def policy_gate(cfg: PMPOConfig, step: int, advantages: Tensor) -> bool:
    """Whether phase-3 step ``step`` (0-based) updates the policy; otherwise it trains the value alone.

    No during the first ``cfg.value_warmup`` steps; after them, only when D+ (A >= 0) and D- (A < 0) each hold
    at least ``cfg.min_sign_fraction`` of the pairs of ``advantages`` (those :func:`pmpo` split on)."""
    if step < cfg.value_warmup:
        return False
    a = advantages.detach().float()
    frac_pos = float((a >= 0).float().sum() / max(a.numel(), 1))
    return min(frac_pos, 1 - frac_pos) >= cfg.min_sign_fraction
