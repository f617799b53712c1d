"""Latents → frames, and frames → side-by-side panels with captions (videos, the play page).

A latent step covers S frames. :func:`decode_frames` decodes a sequence at the full frame rate, in
the windows of ``window_latents`` + 1 latents the tokenizer encoded with (a window's first latent is
decoded as a single frame, as the encoder saw it); :func:`decode_each` decodes every latent alone to
the frame at its chunk boundary (what the picture grids show; one decoder pass per latent).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

LABEL_H = 14  # pixels of the header (panel names) and of the caption line under the panels


def decode_frames(tokenizer, z_btnc: torch.Tensor, mean, std, size: int) -> np.ndarray:
    """Standardised latents (B, T, N, C) → uint8 frames (B, 1 + S(T-1), size, size, 3)."""
    T, m = z_btnc.shape[1], int(tokenizer.cfg.window_latents)
    if m == 0:  # every latent one frame's alone (S = 1): the tokenizer decodes each alone
        return tokenizer.decode(z_btnc.float(), mean=mean, std=std, size=size).cpu().numpy()
    parts = []
    for a in range(0, max(T - 1, 1), m):
        window = z_btnc[:, a : min(a + m, T - 1) + 1].float()
        frames = tokenizer.decode(window, mean=mean, std=std, size=size)  # (B, 1 + S·(len-1), H, W, 3)
        parts.append(frames if a == 0 else frames[:, 1:])
    return torch.cat(parts, 1).cpu().numpy()


def decode_each(tokenizer, z_btnc: torch.Tensor, mean, std, size: int) -> np.ndarray:
    """Each latent step alone → its chunk-boundary frame: (B, T, size, size, 3) uint8."""
    B, T = z_btnc.shape[:2]
    flat = z_btnc.float().reshape(B * T, 1, *z_btnc.shape[2:])
    frames = tokenizer.decode(flat, mean=mean, std=std, size=size)[:, 0]  # (B·T, H, W, 3)
    return frames.reshape(B, T, *frames.shape[1:]).cpu().numpy()


def fit_length(frames: np.ndarray, n: int) -> np.ndarray:
    """(F, ...) → (n, ...): cut, or pad by repeating the last frame (an episode ending mid-chunk)."""
    if len(frames) >= n:
        return frames[:n]
    return np.concatenate([frames, np.repeat(frames[-1:], n - len(frames), 0)])


def _font():
    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def compose(panels: dict[str, np.ndarray], captions: Sequence[str] | None = None, scale: int = 2,
            gap: int = 4) -> np.ndarray:
    """Panels {name: (F, H, W, 3)} side by side, each scaled ``scale``× (nearest), names above and one
    caption per frame below → (F, H', W', 3) uint8 with even H' and W' (what H.264 needs)."""
    names = list(panels)
    arrays = [np.asarray(panels[n]) for n in names]
    F = len(arrays[0])
    if any(len(a) != F for a in arrays):
        raise ValueError(f"compose: panels have different lengths {[len(a) for a in arrays]}")
    h, w = arrays[0].shape[1] * scale, arrays[0].shape[2] * scale
    width = len(names) * w + (len(names) - 1) * gap
    height = h + LABEL_H * (2 if captions is not None else 1)
    width, height = width + width % 2, height + height % 2
    font = _font()
    header = Image.new("RGB", (width, LABEL_H), (24, 24, 24))
    draw = ImageDraw.Draw(header)
    for i, n in enumerate(names):
        draw.text((i * (w + gap) + 3, 1), n, fill=(230, 230, 230), font=font)
    header_np = np.asarray(header)
    out = np.zeros((F, height, width, 3), dtype=np.uint8)
    out[:, :LABEL_H] = header_np
    for i, a in enumerate(arrays):
        big = a.repeat(scale, 1).repeat(scale, 2) if scale > 1 else a
        out[:, LABEL_H : LABEL_H + h, i * (w + gap) : i * (w + gap) + w] = big
    if captions is not None:
        if len(captions) != F:
            raise ValueError(f"compose: {len(captions)} captions for {F} frames")
        for f, text in enumerate(captions):
            line = Image.new("RGB", (width, LABEL_H), (24, 24, 24))
            ImageDraw.Draw(line).text((3, 1), text, fill=(230, 230, 230), font=font)
            out[f, LABEL_H + h : 2 * LABEL_H + h] = np.asarray(line)
    return out


def png_bytes(frame_hwc: np.ndarray, scale: int = 1) -> bytes:
    img = Image.fromarray(np.ascontiguousarray(frame_hwc))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
