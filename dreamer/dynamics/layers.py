"""Transformer building blocks of the dynamics model: RMSNorm, RoPE, SwiGLU, GQA attention.

Tensor layout inside the blocks: x_btld (batch, time, token slot, d_model) with L = N + R + 2 slots.
* space layer: attention over the L slots of one step (bidirectional), batch = B*T.
* time layer:  attention over time for each slot separately (axial, causal), batch = B*L, with time
  RoPE at absolute step positions; optionally reads/extends a per-layer KV cache.
Space layers carry no RoPE: slot identity comes from learned slot embeddings added at the input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import DynamicsConfig

_SDPA_GQA = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)  # enable_gqa= exists


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.to(x.dtype) * self.weight.to(x.dtype)


class RotaryTime(nn.Module):
    """Rotary embedding over absolute time positions 0..max_time-1 (rotate-half form)."""

    def __init__(self, head_dim: int, max_time: int, base: float = 10000.0) -> None:
        super().__init__()
        inv = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        ang = torch.arange(max_time, dtype=torch.float32)[:, None] * inv[None]  # (T, dh/2)
        ang = torch.cat([ang, ang], dim=-1)  # (T, dh)
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)
        self.max_time = max_time

    def forward(self, x_bhtd: torch.Tensor, start: int) -> torch.Tensor:
        t = x_bhtd.shape[-2]
        if start + t > self.max_time:
            raise ValueError(f"sequence reaches time step {start + t} > DynamicsConfig.max_time={self.max_time}")
        cos = self.cos[start:start + t].to(x_bhtd.dtype)
        sin = self.sin[start:start + t].to(x_bhtd.dtype)
        x1, x2 = x_bhtd.chunk(2, dim=-1)
        rot = torch.cat([-x2, x1], dim=-1)
        return x_bhtd * cos + rot * sin


class SwiGLU(nn.Module):
    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.w_in = nn.Linear(d, 2 * hidden, bias=False)
        self.w_out = nn.Linear(hidden, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w_in(x).chunk(2, dim=-1)
        return self.w_out(F.silu(a) * b)


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

    def _attend(self, q, k, v, is_causal: bool, mask=None) -> torch.Tensor:
        if self.hkv == self.h:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        if _SDPA_GQA:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=True)
        rep = self.h // self.hkv  # torch < 2.5: expand the KV heads explicitly
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)

    def forward(self, x_btld: torch.Tensor, cache: LayerKV | None = None, start: int = 0,
                update_cache: bool = True) -> torch.Tensor:
        b, t, l, d = x_btld.shape
        if self.time:  # (B*L, T, d): attention along time for each slot
            xs = x_btld.transpose(1, 2).reshape(b * l, t, d)
        else:  # (B*T, L, d): attention among the slots of one step
            xs = x_btld.reshape(b * t, l, d)
        m, n, _ = xs.shape
        q = self.q_norm(self.wq(xs).view(m, n, self.h, self.dh)).transpose(1, 2)  # (M, H, n, dh)
        kv = self.wkv(xs).view(m, n, 2, self.hkv, self.dh)
        k = self.k_norm(kv[:, :, 0]).transpose(1, 2)  # (M, Hkv, n, dh)
        v = kv[:, :, 1].transpose(1, 2)
        if self.time:
            q, k = self.rope(q, start), self.rope(k, start)
            if cache is not None and cache.length > 0:
                k_all, v_all = cache.extended(k, v)
                past = cache.length
                if n == 1:
                    out = self._attend(q, k_all, v_all, is_causal=False)
                else:  # query i (abs past+i) sees keys j <= past+i
                    qi = torch.arange(n, device=q.device)[:, None] + past
                    kj = torch.arange(past + n, device=q.device)[None]
                    out = self._attend(q, k_all, v_all, is_causal=False, mask=kj <= qi)
            else:
                out = self._attend(q, k, v, is_causal=n > 1)
            if cache is not None and update_cache:
                cache.append(k, v)
            out = out.transpose(1, 2).reshape(b, l, t, self.h * self.dh).transpose(1, 2)
        else:
            out = self._attend(q, k, v, is_causal=False)
            out = out.transpose(1, 2).reshape(b, t, l, self.h * self.dh)
        return self.wo(out)


class LayerKV:
    """Pre-allocated key/value store of one time layer: (B*L, Hkv, max_time, dh)."""

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

    def forward(self, x_btld: torch.Tensor, cache: LayerKV | None = None, start: int = 0,
                update_cache: bool = True) -> torch.Tensor:
        x_btld = x_btld + self.attn(self.norm1(x_btld), cache, start, update_cache)
        return x_btld + self.mlp(self.norm2(x_btld))
