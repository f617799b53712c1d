"""Phase-3 maths (docs/design.md §6): TD(lambda) returns, the PMPO policy loss and the value loss."""

from __future__ import annotations

import torch
from torch import Tensor

from .maths import TwoHot


def lambda_returns(
    rewards_bh: Tensor, values_bh1: Tensor, continues_bh: Tensor, gamma: float, lam: float
) -> Tensor:
    """lambda-returns R_0..R_{H-1}, shape (B, H).

    rewards_bh = r_1..r_H, continues_bh = c_1..c_H (both (B, H)); values_bh1 = v_0..v_H (B, H+1).
    R_H = v_H;  R_t = r_{t+1} + gamma * c_{t+1} * ((1 - lam) * v_{t+1} + lam * R_{t+1}).
    Computed in float32. The result carries gradient if the inputs do: callers use it as a target
    (sg(R)); `value_loss` and `TwoHot.encode` detach it anyway.
    """
    if rewards_bh.dim() != 2 or continues_bh.shape != rewards_bh.shape:
        raise ValueError(
            f"lambda_returns: rewards {tuple(rewards_bh.shape)} and continues "
            f"{tuple(continues_bh.shape)} must both be (B, H)"
        )
    b, h = rewards_bh.shape
    if tuple(values_bh1.shape) != (b, h + 1):
        raise ValueError(f"lambda_returns: values must be (B, H+1)={(b, h + 1)}, got {tuple(values_bh1.shape)}")
    r, v, c = rewards_bh.float(), values_bh1.float(), continues_bh.float()
    out = []
    ret = v[:, h]
    for t in range(h - 1, -1, -1):
        ret = r[:, t] + gamma * c[:, t] * ((1.0 - lam) * v[:, t + 1] + lam * ret)
        out.append(ret)
    return torch.stack(out[::-1], dim=1)


def pmpo_loss(logp: Tensor, advantages: Tensor, kl: Tensor, alpha: float = 0.5, beta: float = 0.3) -> Tensor:
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
    neg_term = (1.0 - alpha) * (logp * neg).sum() / neg.sum().clamp(min=1.0)
    pos_term = alpha * (logp * pos).sum() / pos.sum().clamp(min=1.0)
    return neg_term - pos_term + beta * kl.float().mean()


@torch.no_grad()
def pmpo_stats(advantages: Tensor) -> dict[str, float]:
    """Counts for logging: num_pos (A >= 0), num_neg (A < 0), frac_pos, adv_mean, adv_abs_mean."""
    a = advantages.detach().float()
    pos = (a >= 0).float().sum()
    vals = torch.stack([pos, a.numel() - pos, pos / max(a.numel(), 1), a.mean(), a.abs().mean()]).tolist()
    return dict(zip(("num_pos", "num_neg", "frac_pos", "adv_mean", "adv_abs_mean"), vals, strict=True))


def value_loss(twohot: TwoHot, value_logits: Tensor, returns: Tensor) -> Tensor:
    """Mean two-hot cross-entropy of value logits (..., num_bins) against sg(returns) (...)."""
    return twohot.loss(value_logits, returns.detach()).mean()
