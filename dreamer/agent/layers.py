"""Building blocks of the agent: MLP heads and a causal RoPE transformer block (time only)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MLP(nn.Module):
    """`layers` x (Linear -> RMSNorm -> SiLU) then a Linear output layer `self.out`.

    (..., in_dim) -> (..., out_dim). With layers=0 it is a single Linear.
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        d = in_dim
        for _ in range(layers):
            blocks += [nn.Linear(d, hidden), nn.RMSNorm(hidden), nn.SiLU()]
            d = hidden
        self.body = nn.Sequential(*blocks)
        self.out = nn.Linear(d, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.body(x))


def rope_tables(seq_len: int, head_dim: int, base: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """cos, sin tables of shape (seq_len, head_dim/2), float32; position = index in the window."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    pos = torch.arange(seq_len, device=device, dtype=torch.float32)
    freqs = torch.outer(pos, inv_freq)
    return freqs.cos(), freqs.sin()


def apply_rope(x_bhtk: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel halves of x (B, H, T, hd) by position; computed in float32."""
    half = x_bhtk.shape[-1] // 2
    x = x_bhtk.float()
    x1, x2 = x[..., :half], x[..., half:]
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(x_bhtk.dtype)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention in time with RoPE and QK-norm. (B, T, d) -> (B, T, d)."""

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.q_norm = nn.RMSNorm(self.head_dim)
        self.k_norm = nn.RMSNorm(self.head_dim)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.dropout = dropout

    def forward(self, x_btd: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        b, t, d = x_btd.shape
        qkv = self.qkv(x_btd).view(b, t, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, hd)
        q = apply_rope(self.q_norm(q), cos, sin)
        k = apply_rope(self.k_norm(k), cos, sin)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.w_in = nn.Linear(d_model, 2 * hidden, bias=False)
        self.w_out = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        a, g = self.w_in(x).chunk(2, dim=-1)
        return self.w_out(F.silu(g) * a)


class CausalBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)); x + mlp(norm(x))."""

    def __init__(self, d_model: int, num_heads: int, mlp_hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(d_model)
        self.attn = CausalSelfAttention(d_model, num_heads, dropout)
        self.norm2 = nn.RMSNorm(d_model)
        self.mlp = SwiGLU(d_model, mlp_hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, x_btd: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x_btd = x_btd + self.drop(self.attn(self.norm1(x_btd), cos, sin))
        return x_btd + self.drop(self.mlp(self.norm2(x_btd)))
