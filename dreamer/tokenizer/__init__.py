"""The frozen Cosmos tokenizer: frames → pooled latents (B, T_lat, N, C)."""

from dreamer.tokenizer.config import TokenizerConfig
from dreamer.tokenizer.cosmos import (
    PRESETS,
    CosmosTokenizerWrapper,
    latent_steps,
    latent_window,
    pool_latents,
    preprocess,
    unpool_latents,
    window_plan,
)

__all__ = [
    "PRESETS",
    "CosmosTokenizerWrapper",
    "TokenizerConfig",
    "latent_steps",
    "latent_window",
    "pool_latents",
    "preprocess",
    "unpool_latents",
    "window_plan",
]
