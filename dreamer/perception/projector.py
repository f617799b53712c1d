"""Projects pooled Cosmos latents into the language model's embedding space.

The world model's pooled latents are (B, T_lat, N, C): T_lat latent steps, N spatial tokens per step
(row-major grid), C channels, standardised per channel (docs/design.md §3). The projector turns every
(step, token) pair into one language-model embedding, so a clip of T_lat steps becomes T_lat·N
"world tokens". Each embedding is the sum of

- an MLP of the C channels (RMS-normalised input, GELU),
- a learned embedding of the latent step index t (0 = oldest step passed in), so the language model
  can tell the present from earlier or imagined future steps,
- a learned embedding of the spatial token index n,
- a learned embedding of the step's kind: 0 = observed (encoded from real frames), 1 = imagined
  (sampled by the dynamics model),

followed by an RMS normalisation with a learned gain whose initial value matches the RMS of the
language model's own text embeddings (``output_scale``), so world tokens start on the same scale as text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class WorldProjectorConfig:
    latent_channels: int = 16  # C
    tokens_per_step: int = 16  # N
    max_steps: int = 32  # largest T_lat the step embedding covers
    hidden_size: int = 2560  # the language model's embedding width (Gemma 3 4B: 2560)
    mlp_hidden: int = 0  # width of the MLP's middle layer; 0 = hidden_size
    output_scale: float = 1.0  # initial RMS of the projected embeddings

    def __post_init__(self):
        for name in ("latent_channels", "tokens_per_step", "max_steps", "hidden_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"WorldProjectorConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.mlp_hidden < 0:
            raise ValueError(f"WorldProjectorConfig.mlp_hidden must be >= 0, got {self.mlp_hidden}")

    def to_dict(self) -> dict:
        return asdict(self)


class WorldProjector(nn.Module):
    """(B, T_lat, N, C) standardised latents -> (B, T_lat·N, hidden) world-token embeddings."""

    def __init__(self, cfg: WorldProjectorConfig):
        super().__init__()
        self.cfg = cfg
        h, mid = cfg.hidden_size, cfg.mlp_hidden or cfg.hidden_size
        self.in_norm = nn.RMSNorm(cfg.latent_channels, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(cfg.latent_channels, mid), nn.GELU(), nn.Linear(mid, h))
        self.step_embed = nn.Embedding(cfg.max_steps, h)
        self.token_embed = nn.Embedding(cfg.tokens_per_step, h)
        self.kind_embed = nn.Embedding(2, h)  # 0 observed, 1 imagined
        self.out_norm = nn.RMSNorm(h, eps=1e-6)
        for emb in (self.step_embed, self.token_embed, self.kind_embed):
            nn.init.normal_(emb.weight, std=0.02)
        nn.init.constant_(self.out_norm.weight, cfg.output_scale)

    def forward(self, latents_btnc: torch.Tensor, imagined_bt: torch.Tensor | None = None) -> torch.Tensor:
        """latents_btnc: (B, T, N, C) float; imagined_bt: optional bool (B, T), True for imagined steps.

        Returns (B, T·N, hidden), ordered step-major (all N tokens of step 0, then step 1, ...).
        """
        cfg = self.cfg
        if latents_btnc.ndim != 4:
            raise ValueError(f"world latents must be (B, T_lat, N, C), got shape {tuple(latents_btnc.shape)}")
        b, t, n, c = latents_btnc.shape
        if n != cfg.tokens_per_step or c != cfg.latent_channels:
            raise ValueError(
                f"world latents have N={n}, C={c} but the projector expects "
                f"N={cfg.tokens_per_step}, C={cfg.latent_channels}"
            )
        if t < 1 or t > cfg.max_steps:
            raise ValueError(f"world latents have T_lat={t} steps; the projector supports 1..{cfg.max_steps}")
        param = self.mlp[0].weight
        x_btnc = latents_btnc.to(device=param.device, dtype=param.dtype)
        feat_btnh = self.mlp(self.in_norm(x_btnc))
        steps = torch.arange(t, device=param.device)
        tokens = torch.arange(n, device=param.device)
        feat_btnh = feat_btnh + self.step_embed(steps)[None, :, None, :] + self.token_embed(tokens)[None, None]
        if imagined_bt is None:
            kind_bt = torch.zeros(b, t, dtype=torch.long, device=param.device)
        else:
            if tuple(imagined_bt.shape) != (b, t):
                raise ValueError(f"imagined_bt must have shape {(b, t)}, got {tuple(imagined_bt.shape)}")
            kind_bt = imagined_bt.to(device=param.device, dtype=torch.long)
        feat_btnh = feat_btnh + self.kind_embed(kind_bt)[:, :, None, :]
        return self.out_norm(feat_btnh).reshape(b, t * n, cfg.hidden_size)
