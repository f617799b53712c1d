"""Shared maths (docs/design.md §8): symlog / symexp and the symexp two-hot distribution.

All two-hot computations run in float32, whatever the dtype of the logits (e.g. bf16 under
autocast), on the device of the inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def symlog(x: Tensor) -> Tensor:
    """sign(x) * ln(1 + |x|)."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: Tensor) -> Tensor:
    """sign(x) * (exp(|x|) - 1); inverse of `symlog`."""
    return torch.sign(x) * torch.expm1(torch.abs(x))


def make_bins(num_bins: int, low: float, high: float) -> Tensor:
    """symexp(linspace(low, high, num_bins)) as float32 (computed in float64).

    When low == -high the bins are made exactly antisymmetric (b[i] == -b[K-1-i], centre exactly 0),
    so that uniform probabilities decode to exactly 0.
    """
    if num_bins < 2:
        raise ValueError(f"make_bins: num_bins must be >= 2, got {num_bins}")
    if not low < high:
        raise ValueError(f"make_bins: need low < high, got low={low}, high={high}")
    b = symexp(torch.linspace(low, high, num_bins, dtype=torch.float64))
    if low == -high:
        b = (b - b.flip(0)) / 2
    return b.to(torch.float32)


class TwoHot(nn.Module):
    """Two-hot distribution over `bins = symexp(linspace(low, high, num_bins))`.

    - `encode(y)`: (...) -> (..., num_bins) two-hot probabilities. For b_k <= y < b_{k+1}: weight
      (b_{k+1}-y)/(b_{k+1}-b_k) on k and (y-b_k)/(b_{k+1}-b_k) on k+1; y outside [b_0, b_{K-1}] is
      clipped to the end bin. The target is detached (targets never carry gradient).
    - `loss(logits, y)`: (..., num_bins), (...) -> (...) cross-entropy -twohot(y) . log_softmax(logits).
    - `decode(logits)`: (..., num_bins) -> (...) softmax(logits) . bins.
    - `decode_probs(probs)`: (..., num_bins) -> (...) probs . bins.
    """

    bins: Tensor

    def __init__(self, num_bins: int = 255, low: float = -20.0, high: float = 20.0) -> None:
        super().__init__()
        self.num_bins = int(num_bins)
        self.low = float(low)
        self.high = float(high)
        # Non-persistent: fully determined by (num_bins, low, high); not stored in checkpoints.
        self.register_buffer("bins", make_bins(self.num_bins, self.low, self.high), persistent=False)

    def extra_repr(self) -> str:
        return f"num_bins={self.num_bins}, low={self.low}, high={self.high}"

    def _bins32(self, device: torch.device) -> Tensor:
        b = self.bins
        if b.dtype != torch.float32:  # module was cast (e.g. .to(bfloat16)): rebuild exact bins
            b = make_bins(self.num_bins, self.low, self.high)
        return b.to(device)

    def _check_k(self, x: Tensor, name: str) -> None:
        if x.shape[-1] != self.num_bins:
            raise ValueError(
                f"TwoHot.{name}: last dim must be num_bins={self.num_bins}, got shape {tuple(x.shape)}"
            )

    def encode(self, y: Tensor) -> Tensor:
        y = y.detach().to(torch.float32)
        bins = self._bins32(y.device)
        k_max = self.num_bins - 1
        y = y.clamp(bins[0], bins[k_max]).contiguous()
        # index k of the left neighbour: bins[k] <= y < bins[k+1] (k <= K-2, so y == b_{K-1} -> k=K-2)
        k = (torch.searchsorted(bins, y, right=True) - 1).clamp(0, k_max - 1)
        lo, hi = bins[k], bins[k + 1]
        w_hi = ((y - lo) / (hi - lo)).clamp(0.0, 1.0)
        w_lo = 1.0 - w_hi
        out = torch.zeros(*y.shape, self.num_bins, dtype=torch.float32, device=y.device)
        out.scatter_(-1, k.unsqueeze(-1), w_lo.unsqueeze(-1))
        out.scatter_add_(-1, (k + 1).unsqueeze(-1), w_hi.unsqueeze(-1))
        return out

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        self._check_k(logits, "loss")
        if logits.shape[:-1] != y.shape:
            raise ValueError(
                f"TwoHot.loss: logits {tuple(logits.shape)} and target {tuple(y.shape)} disagree"
            )
        target = self.encode(y)
        return -(target * torch.log_softmax(logits.float(), dim=-1)).sum(-1)

    def decode_probs(self, probs: Tensor) -> Tensor:
        self._check_k(probs, "decode_probs")
        probs = probs.float()
        bins = self._bins32(probs.device)
        m = self.num_bins // 2
        # Sum mirrored pairs (b_i, b_{K-1-i}) first so symmetric probabilities cancel exactly even
        # though the end bins are ~5e8.
        left = (probs[..., :m] * bins[:m]).flip(-1)
        right = probs[..., self.num_bins - m :] * bins[self.num_bins - m :]
        out = (left + right).sum(-1)
        if self.num_bins % 2 == 1:
            out = out + probs[..., m] * bins[m]
        return out

    def decode(self, logits: Tensor) -> Tensor:
        self._check_k(logits, "decode")
        return self.decode_probs(torch.softmax(logits.float(), dim=-1))
