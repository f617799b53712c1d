"""Transformer building blocks shared by the dynamics model and the agent: RMSNorm, rotary position
embedding (RoPE), the SwiGLU feed-forward layer and the attention kernel call. Each model keeps its own attention
layer and block (:mod:`dreamer.dynamics.layers`: axial space/time attention with a KV cache; :mod:`dreamer.agent.layers`:
causal attention in time).

Shape letters (docs/design.md, shape legend): B batch, T time steps, h heads, e head dimension.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_SDPA_GQA = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)  # enable_gqa= exists


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, is_causal: bool = False,
              dropout_p: float = 0.0) -> Tensor:
    """Scaled dot-product attention of q (B, h, Tq, e) over k, v (B, hkv, Tk, e), h a multiple of hkv (GQA).

    On the CPU the kernel runs in float32 whatever the dtype of q, k, v (the result comes back in q's dtype):
    PyTorch's CPU attention kernels are slower in bf16 than in float32 at this project's shapes, 1.3-2.7x
    forward and 4-9x forward + backward (``bench/bench_dynamics.py --bf16``), while its bf16 matmuls are
    about 3x faster. So under bf16 autocast the projections around it run in bf16 and this step in float32.
    On CUDA it is ``F.scaled_dot_product_attention`` as it is.
    """
    dtype = q.dtype
    upcast = q.device.type == "cpu" and dtype in (torch.bfloat16, torch.float16)
    if upcast:
        q, k, v = q.float(), k.float(), v.float()
    gqa = {}
    if k.shape[1] != q.shape[1]:
        if _SDPA_GQA:
            gqa = {"enable_gqa": True}
        else:  # torch < 2.5: expand the KV heads explicitly
            rep = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    with torch.autocast("cpu", enabled=False) if upcast else nullcontext():
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=dropout_p,
                                             **gqa)
    return out.to(dtype) if upcast else out


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
