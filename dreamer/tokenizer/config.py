"""Configuration of the frozen tokenizer (docs/design.md §2)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenizerConfig:
    preset: str = "tiny"  # "tiny" | "small" | "cv8x8x8" | "cv4x8x8" (see dreamer.tokenizer.cosmos.PRESETS)
    pretrained: str | None = None  # hub id or local directory (save_pretrained layout, optional vae/ subfolder)
    resolution: int = 256  # frames are bicubic-resized to resolution x resolution before encoding
    pool: int = 8  # average-pool kernel on the latent grid: (resolution/8/pool)^2 tokens per step
    window_latents: int = 4  # m: episodes are encoded in windows of 1 + S*m frames (stride S*m)
    bf16: bool = False  # bf16 autocast while encoding/decoding (CUDA, or CPU when asked)
    batch_windows: int = 8  # windows encoded per forward pass when building the cache

    def __post_init__(self):
        if self.resolution % 8:
            raise ValueError(f"tokenizer.resolution must be a multiple of 8, got {self.resolution}")
        grid = self.resolution // 8
        if self.pool < 1 or grid % self.pool:
            raise ValueError(f"tokenizer.pool={self.pool} must divide the latent grid {grid}x{grid}")
        if self.window_latents < 1:
            raise ValueError(f"tokenizer.window_latents must be >= 1, got {self.window_latents}")
