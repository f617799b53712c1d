"""Picture grids for TensorBoard: decoded latent rollouts side by side."""

from __future__ import annotations

import numpy as np
import torch


def latent_rows_to_grid(tokenizer, rows: list[torch.Tensor], mean, std, size: int = 64, max_items: int = 4) -> np.ndarray:
    """rows: tensors (B, T_i, N, C) of standardised latents, concatenated along time per item.

    Each latent step is decoded to the frame at its chunk boundary; returns uint8 (H, W, 3) with one
    row of frames per batch item (e.g. context | predicted | true).
    """
    z = torch.cat([r[:max_items].float() for r in rows], dim=1)  # (B, T, N, C)
    B, T = z.shape[:2]
    frames = []
    for t in range(T):  # decode each step alone: latent 0 of a clip is a single frame
        frames.append(tokenizer.decode(z[:, t : t + 1], mean=mean, std=std, size=size)[:, 0])  # (B, H, W, 3)
    grid = torch.stack(frames, 1)  # (B, T, H, W, 3)
    grid = grid.permute(0, 2, 1, 3, 4).reshape(B * size, T * size, 3)
    return grid.cpu().numpy()
