"""Transformer building blocks shared by the dynamics model and the agent: RMSNorm, rotary position
embedding (RoPE) and the SwiGLU feed-forward layer. Each model keeps its own attention and block
(:mod:`dreamer.dynamics.layers`: axial space/time attention with a KV cache; :mod:`dreamer.agent.layers`:
causal attention in time).

Shape letters (docs/design.md, shape legend): B batch, T time steps, h heads, e head dimension.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) · weight over the last dimension, computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.to(x.dtype) * self.weight.to(x.dtype)


def rope_tables(seq_len: int, head_dim: int, base: float = 10000.0,
                device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """cos, sin tables (seq_len, head_dim/2), float32, for positions 0 .. seq_len-1."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    pos = torch.arange(seq_len, device=device, dtype=torch.float32)
    freqs = torch.outer(pos, inv_freq)
    return freqs.cos(), freqs.sin()


def apply_rope(x_bhte: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the two channel halves of x (..., T, e) by position (tables (T, e/2)); computed in float32."""
    half = x_bhte.shape[-1] // 2
    x = x_bhte.float()
    x1, x2 = x[..., :half], x[..., half:]
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(x_bhte.dtype)


class SwiGLU(nn.Module):
    """w_out(silu(gate) · value), with gate and value the two halves of w_in(x).

    ``gate_first``: which half gates (the dynamics model gates with the first, the agent with the
    second; kept so that trained checkpoints keep computing the same function).
    """

    def __init__(self, d_model: int, hidden: int, gate_first: bool = True) -> None:
        super().__init__()
        self.gate_first = gate_first
        self.w_in = nn.Linear(d_model, 2 * hidden, bias=False)
        self.w_out = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        u, v = self.w_in(x).chunk(2, dim=-1)
        gate, value = (u, v) if self.gate_first else (v, u)
        return self.w_out(F.silu(gate) * value)
