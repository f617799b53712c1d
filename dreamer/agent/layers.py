"""Building blocks of the agent: MLP heads and a causal RoPE transformer block (time only), made of the
shared pieces of :mod:`dreamer.transformer`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dreamer.transformer import RMSNorm, SwiGLU, apply_rope, attention

NORM_EPS = torch.finfo(torch.float32).eps  # RMSNorm eps the agent was trained with (torch.nn.RMSNorm's)


class MLP(nn.Module):
    """`layers` x (Linear -> RMSNorm -> SiLU) then a Linear output layer `self.out`.

    (..., in_dim) -> (..., out_dim). With layers=0 it is a single Linear.
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        d = in_dim
        for _ in range(layers):
            blocks += [nn.Linear(d, hidden), RMSNorm(hidden, NORM_EPS), nn.SiLU()]
            d = hidden
        self.body = nn.Sequential(*blocks)
        self.out = nn.Linear(d, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.body(x))


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention in time with RoPE and QK-norm. (B, T, d) -> (B, T, d)."""

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.q_norm = RMSNorm(self.head_dim, NORM_EPS)
        self.k_norm = RMSNorm(self.head_dim, NORM_EPS)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.dropout = dropout

    def forward(self, x_btd: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        b, t, d = x_btd.shape
        qkv = self.qkv(x_btd).view(b, t, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, T, e)
        q = apply_rope(self.q_norm(q), cos, sin)
        k = apply_rope(self.k_norm(k), cos, sin)
        y = attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class CausalBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)); x + mlp(norm(x))."""

    def __init__(self, d_model: int, num_heads: int, mlp_hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = RMSNorm(d_model, NORM_EPS)
        self.attn = CausalSelfAttention(d_model, num_heads, dropout)
        self.norm2 = RMSNorm(d_model, NORM_EPS)
        self.mlp = SwiGLU(d_model, mlp_hidden, gate_first=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x_btd: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x_btd = x_btd + self.drop(self.attn(self.norm1(x_btd), cos, sin))
        return x_btd + self.drop(self.mlp(self.norm2(x_btd)))
