"""The frozen tokenizer: frames → pooled latents (B, T_lat, N, C) (Cosmos), or the privileged Crafter state →
latents (the ``crafter_state`` reference); :func:`build_tokenizer` picks by ``tokenizer.kind``."""

from dreamer.errors import ConfigError
from dreamer.tokenizer.config import KINDS, TokenizerConfig
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


def build_tokenizer(cfg: TokenizerConfig):
    """The frozen tokenizer of ``cfg`` (on the CPU): :class:`CosmosTokenizerWrapper` for ``kind: cosmos``,
    :class:`dreamer.tokenizer.crafter_state.CrafterStateTokenizer` for ``kind: crafter_state``."""
    if cfg.kind == "crafter_state":
        from dreamer.tokenizer.crafter_state import CrafterStateTokenizer

        return CrafterStateTokenizer(cfg)
    if cfg.kind != "cosmos":
        raise ConfigError(f"tokenizer.kind must be one of {list(KINDS)}, got {cfg.kind!r}")
    return CosmosTokenizerWrapper(cfg=cfg)


__all__ = [
    "KINDS",
    "PRESETS",
    "CosmosTokenizerWrapper",
    "TokenizerConfig",
    "build_tokenizer",
    "latent_steps",
    "latent_window",
    "pool_latents",
    "preprocess",
    "unpool_latents",
    "window_plan",
]
