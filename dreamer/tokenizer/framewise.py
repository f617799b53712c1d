"""One frame through Cosmos's causal 3-D convolutions as a 2-D convolution: the same numbers, about 2x faster.

A ``CosmosCausalConv3d`` pads time on the left with ``kernel_t - 1`` copies of its first frame, then runs a Conv3d.
Given one frame and a temporal stride of 1, every frame its kernel sees is that frame, so the output is the 2-D
convolution of the frame with the kernel summed over time: equal up to float rounding (about 1e-6 on latents of
scale 1). Where every frame is encoded alone and every latent decoded alone (``tokenizer.window_latents: 0`` at
S = 1, the Crafter presets: the cache, acting, phase 0's fit, the videos), every convolution of the encoder and
decoder sees one frame; the Conv3d over the padded copies did ``kernel_t`` times the work, plus the copies.
Measured on the crafter_small tokenizer, 2 CPU threads (bench/bench_framewise.py): encoding 1.9-2.2x the frames/s,
decoding 1.7-2.4x, a phase-0 training step 1.13-1.32x (README, "Performance notes"). Any other input takes the
layer's own path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl_cosmos import CosmosCausalConv3d


class FramewiseCausalConv3d(CosmosCausalConv3d):
    """CosmosCausalConv3d with the one-frame fast path; the same parameters and state dict."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hidden_states.shape[2] != 1 or self.stride[0] != 1:
            return super().forward(hidden_states)
        x_bchw = hidden_states.squeeze(2)  # a view: its backward is a reshape, not a scatter into zeros
        if any(self.spatial_pad):
            x_bchw = F.pad(x_bchw, self.spatial_pad, mode=self.pad_mode, value=0.0)
        y_bchw = F.conv2d(x_bchw, self.weight.sum(2), self.bias, stride=self.stride[1:], dilation=self.dilation[1:],
                          groups=self.groups)
        return y_bchw.unsqueeze(2)


def framewise_convs(vae: torch.nn.Module) -> torch.nn.Module:
    """Give every causal 3-D convolution of ``vae`` the one-frame fast path (in place; returns ``vae``)."""
    for m in vae.modules():
        if type(m) is CosmosCausalConv3d:
            m.__class__ = FramewiseCausalConv3d
    return vae
