"""Transformer blocks of the dynamics model: GQA attention over space or time, the KV cache, and the
pre-norm block, made of the shared pieces of :mod:`dreamer.transformer` (RMSNorm, RoPE, SwiGLU).

Tensor layout inside the blocks: x_btmd (batch, time, token slot, d_model) with M = N + R + 2 slots.
* space layer: attention over the M slots of one step (bidirectional), batch = B*T.
* time layer:  attention over time for each slot separately (axial, causal), batch = B*M, with time
  RoPE at absolute step positions; optionally reads/extends a per-layer KV cache.
Space layers carry no RoPE: slot identity comes from learned slot embeddings added at the input.
"""

from __future__ import annotations

import torch
from torch import nn

from dreamer.transformer import RMSNorm, SwiGLU, apply_rope, attention, rope_tables

from .config import DynamicsConfig


class RotaryTime(nn.Module):
    """Rotary embedding over absolute time positions 0..max_time-1 (tables built once)."""

    def __init__(self, head_dim: int, max_time: int, base: float = 10000.0) -> None:
        super().__init__()
        cos, sin = rope_tables(max_time, head_dim, base)  # (T, e/2)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.max_time = max_time

    def forward(self, x_bhte: torch.Tensor, start: int) -> torch.Tensor:
        t = x_bhte.shape[-2]
        if start + t > self.max_time:
            raise ValueError(f"sequence reaches time step {start + t} > DynamicsConfig.max_time={self.max_time}")
        return apply_rope(x_bhte, self.cos[start:start + t], self.sin[start:start + t])


class Attention(nn.Module):
    """Multi-head attention with grouped-query KV heads, QK-norm and (time mode) RoPE + KV cache."""

    def __init__(self, cfg: DynamicsConfig, time: bool, rope: RotaryTime | None) -> None:
        super().__init__()
        self.time = time
        self.h, self.hkv = cfg.num_heads, cfg.num_kv_heads
        self.dh = cfg.d_model // cfg.num_heads
        self.wq = nn.Linear(cfg.d_model, self.h * self.dh, bias=False)
        self.wkv = nn.Linear(cfg.d_model, 2 * self.hkv * self.dh, bias=False)
        self.wo = nn.Linear(self.h * self.dh, cfg.d_model, bias=False)
        self.q_norm = RMSNorm(self.dh) if cfg.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.dh) if cfg.qk_norm else nn.Identity()
        self.rope = rope

    def forward(self, x_btmd: torch.Tensor, cache: LayerKV | None = None, start: int = 0,
                update_cache: bool = True) -> torch.Tensor:
        b, t, m, d = x_btmd.shape
        if self.time:  # (B*M, T, d): attention along time for each slot
            xs = x_btmd.transpose(1, 2).reshape(b * m, t, d)
        else:  # (B*T, M, d): attention among the slots of one step
            xs = x_btmd.reshape(b * t, m, d)
        rows, n, _ = xs.shape
        q = self.q_norm(self.wq(xs).view(rows, n, self.h, self.dh)).transpose(1, 2)  # (rows, h, n, dh)
        kv = self.wkv(xs).view(rows, n, 2, self.hkv, self.dh)
        k = self.k_norm(kv[:, :, 0]).transpose(1, 2)  # (rows, Hkv, n, dh)
        v = kv[:, :, 1].transpose(1, 2)
        if self.time:
            q, k = self.rope(q, start), self.rope(k, start)
            if cache is not None and cache.length > 0:
                k_all, v_all = cache.extended(k, v)
                past = cache.length
                if n == 1:
                    out = attention(q, k_all, v_all)
                else:  # query i (abs past+i) sees keys j <= past+i
                    qi = torch.arange(n, device=q.device)[:, None] + past
                    kj = torch.arange(past + n, device=q.device)[None]
                    out = attention(q, k_all, v_all, mask=kj <= qi)
            else:
                # causal; for n == 1 the same as not (one query, one key), and a constant: `n > 1` would be a
                # SymBool under torch.compile(dynamic=True), which SDPA refuses (a graph break per layer)
                out = attention(q, k, v, is_causal=True)
            if cache is not None and update_cache:
                cache.append(k, v)
            out = out.transpose(1, 2).reshape(b, m, t, self.h * self.dh).transpose(1, 2)
        else:
            out = attention(q, k, v)
            out = out.transpose(1, 2).reshape(b, t, m, self.h * self.dh)
        return self.wo(out)


class LayerKV:
    """Pre-allocated key/value store of one time layer: (B*M, Hkv, max_time, dh)."""

    def __init__(self, max_time: int) -> None:
        self.max_time = max_time
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.length = 0

    def extended(self, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached keys/values followed by the new ones (no state change)."""
        if self.k.shape[0] != k_new.shape[0]:
            raise ValueError(f"KV cache holds batch*slots={self.k.shape[0]}, got {k_new.shape[0]}")
        n = self.length
        return torch.cat([self.k[:, :, :n], k_new], 2), torch.cat([self.v[:, :, :n], v_new], 2)

    def append(self, k_new: torch.Tensor, v_new: torch.Tensor) -> None:
        n, t = self.length, k_new.shape[2]
        if n + t > self.max_time:
            raise ValueError(f"KV cache full: {n}+{t} steps > DynamicsConfig.max_time={self.max_time}")
        if self.k is None:
            m, hkv, _, dh = k_new.shape
            self.k = k_new.new_zeros(m, hkv, self.max_time, dh)
            self.v = v_new.new_zeros(m, hkv, self.max_time, dh)
        self.k[:, :, n:n + t] = k_new
        self.v[:, :, n:n + t] = v_new
        self.length = n + t


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)); x + swiglu(norm(x))."""

    def __init__(self, cfg: DynamicsConfig, time: bool, rope: RotaryTime | None) -> None:
        super().__init__()
        self.time = time
        self.norm1 = RMSNorm(cfg.d_model)
        self.attn = Attention(cfg, time, rope)
        self.norm2 = RMSNorm(cfg.d_model)
        self.mlp = SwiGLU(cfg.d_model, cfg.mlp_hidden)

    def forward(self, x_btmd: torch.Tensor, cache: LayerKV | None = None, start: int = 0,
                update_cache: bool = True) -> torch.Tensor:
        x_btmd = x_btmd + self.attn(self.norm1(x_btmd), cache, start, update_cache)
        return x_btmd + self.mlp(self.norm2(x_btmd))
