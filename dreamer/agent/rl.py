"""TD(lambda) returns and the two-hot value loss (docs/design.md §5, §6): phase 2 fits the behaviour policy's value
with them, phase 3 the imagined one. PMPO itself is :mod:`dreamer.imagination.pmpo`."""

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


def value_loss(twohot: TwoHot, value_logits: Tensor, returns: Tensor) -> Tensor:
    """Mean two-hot cross-entropy of value logits (..., num_bins) against sg(returns) (...)."""
    return twohot.loss(value_logits, returns.detach()).mean()
