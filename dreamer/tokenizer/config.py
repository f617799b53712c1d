"""Configuration of the frozen tokenizer (docs/design.md §2)."""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("cosmos", "crafter_state")


@dataclass
class TokenizerConfig:
    # "cosmos": the Cosmos pixel tokenizer (dreamer/tokenizer/cosmos.py; every key below applies);
    # "crafter_state": a fixed, untrained encoding of Crafter's PRIVILEGED state (dreamer/tokenizer/crafter_state.py),
    # a reference for what phases 1-3 can learn, never what a pixel agent sees; the keys below do not change its
    # latents (temporal_compression must be 0 or 1: one latent per frame).
    kind: str = "cosmos"
    preset: str = "tiny"  # "tiny" | "small" | "cv8x8x8" | "cv4x8x8" (see dreamer.tokenizer.cosmos.PRESETS)
    pretrained: str | None = None  # hub id or local directory (save_pretrained layout, optional vae/ subfolder)
    resolution: int = 256  # frames are bicubic-resized to resolution x resolution before encoding
    # > 0: encode the frame's top-left crop x crop pixels, resized to resolution by NEAREST neighbour, so that a game
    # drawn in cells meets the tokenizer's 8-pixel patches one to one: Crafter draws its 64 x 64 frame as 9 x 9 cells
    # of 7 pixels (63 x 63, the last row and column black), so crop 63 at resolution 72 makes every 8 x 8 patch one
    # cell (docs/tokenizer.md). Decoded frames are resized back and padded black. 0 = the whole frame, bicubic.
    crop: int = 0
    pool: int = 8  # average-pool kernel on the latent grid: (resolution/8/pool)^2 tokens per step (every preset
    #                compresses space by 8; the wrapper measures the grid it really gets)
    # S of a tokenizer built from a preset (random weights, or fitted from scratch by phase 0): 1, 2, 4 or 8;
    # 0 = the preset's own (8; 4 for cv4x8x8). Loaded weights bring their own S; a different value is refused.
    temporal_compression: int = 0
    # m: episodes are encoded in windows of 1 + S*m frames (stride S*m). 0 (S = 1 only): every frame is encoded
    # alone, so latent k is frame k's and nothing else (docs/tokenizer.md, "One frame per latent"); a causal
    # window of 2 frames at S = 1 gives latents that carry mostly the window's FIRST frame, a step behind.
    window_latents: int = 4
    # bf16 autocast while encoding/decoding, on CUDA or the CPU (2-3x faster encodes on CPUs with AVX512-BF16, float32 on
    # CPUs without bf16 kernels: dreamer/precision.py;
    # part of the tokenizer's identity: a cache encoded one way is refused by a run configured the other way)
    bf16: bool = False
    batch_windows: int = 8  # windows of one episode encoded per forward pass (cache, whole-episode encodes)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"tokenizer.kind must be one of {list(KINDS)}, got {self.kind!r}")
        if self.kind == "crafter_state" and self.temporal_compression not in (0, 1):
            raise ValueError(f"tokenizer.temporal_compression={self.temporal_compression!r}: tokenizer.kind="
                             "'crafter_state' encodes one latent per frame (S = 1); set it to 0 or 1")
        if self.resolution < 8 or self.resolution % 8:
            raise ValueError(f"tokenizer.resolution must be a positive multiple of 8, got {self.resolution}")
        if not isinstance(self.crop, int) or self.crop < 0:
            raise ValueError(f"tokenizer.crop must be an int >= 0 (0 = the whole frame), got {self.crop!r}")
        if not isinstance(self.pool, int) or self.pool < 1:
            raise ValueError(f"tokenizer.pool must be an int >= 1, got {self.pool!r}")  # divides the grid: checked on build
        if self.temporal_compression not in (0, 1, 2, 4, 8):
            raise ValueError(f"tokenizer.temporal_compression must be 0 (the preset's) or 1, 2, 4, 8, "
                             f"got {self.temporal_compression!r}")
        if self.batch_windows < 1:
            raise ValueError(f"tokenizer.batch_windows must be >= 1, got {self.batch_windows}")
        if not isinstance(self.window_latents, int) or self.window_latents < 0:
            raise ValueError(f"tokenizer.window_latents must be an int >= 0 (0: every frame alone, S = 1), "
                             f"got {self.window_latents!r}")
        if self.window_latents == 0 and self.temporal_compression not in (0, 1):
            raise ValueError(f"tokenizer.window_latents=0 encodes every frame alone, which needs S = 1: "
                             f"tokenizer.temporal_compression={self.temporal_compression}")
