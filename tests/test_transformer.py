"""The shared attention call (dreamer.transformer.attention): float32 kernels on the CPU under bf16 autocast, GQA."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dreamer import transformer
from dreamer.transformer import attention


def _qkv(h=4, hkv=2, t=7, e=16, dtype=torch.float32, grad=False):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, n, t, e, generator=g).to(dtype) for n in (h, hkv, hkv))
    return [x.requires_grad_(grad) for x in (q, k, v)]


def test_bf16_inputs_attend_in_float32_and_come_back_in_bf16():
    q, k, v = _qkv(dtype=torch.bfloat16, grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q, k, v, is_causal=True)
    assert out.dtype == torch.bfloat16
    # the float32 kernel on the same (bf16-valued) inputs, rounded once at the end
    ref = F.scaled_dot_product_attention(q.float(), k.float().repeat_interleave(2, 1),
                                         v.float().repeat_interleave(2, 1), is_causal=True)
    torch.testing.assert_close(out, ref.to(torch.bfloat16), rtol=0, atol=0)
    out.float().square().sum().backward()  # the gradient reaches every input, in its dtype, finite
    for x in (q, k, v):
        assert x.grad is not None and x.grad.dtype == torch.bfloat16 and bool(torch.isfinite(x.grad).all())


def test_float32_is_unchanged_and_masks_apply():
    q, k, v = _qkv()
    mask = torch.rand(7, 7, generator=torch.Generator().manual_seed(1)) > 0.3
    mask |= torch.eye(7, dtype=torch.bool)  # every query sees at least itself
    out = attention(q, k, v, mask)
    ref = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), attn_mask=mask)
    torch.testing.assert_close(out, ref)


def test_gqa_fallback_matches_native(monkeypatch):
    q, k, v = _qkv()
    native = attention(q, k, v, is_causal=True)
    monkeypatch.setattr(transformer, "_SDPA_GQA", False)  # torch < 2.5: the KV heads expanded by hand
    torch.testing.assert_close(attention(q, k, v, is_causal=True), native)
