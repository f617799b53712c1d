"""Fitting the Cosmos tokenizer to one's own frames (phase 0, ``train_phase0_tokenizer.py``).

The autoencoder is trained through the pipeline's own bottleneck, so that exactly the pooled latents
the later phases read carry the information:

    uint8 frames (B, T, H, W, 3) → preprocess → encode → pool → unpool → decode → (B, 3, T, R, R)

with T = 1 + S·k frames (a causal window of docs/design.md §2). The same :func:`preprocess`,
:func:`pool_latents` and :func:`unpool_latents` as the frozen wrapper are used, here with gradients.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dreamer.atomic import atomic_dir
from dreamer.data.loader import UniformClipDraw
from dreamer.precision import autocast
from dreamer.tokenizer.cosmos import (
    build_vae,
    check_framewise,
    latent_steps,
    pool_latents,
    postprocess,
    preprocess,
    preset_config,
    probe_layout,
    unpool_latents,
    weights_hash,
)

log = logging.getLogger(__name__)


def build_trainable_vae(preset: str, init_from: str | None = None, temporal_compression: int = 0):
    """A trainable AutoencoderKLCosmos: pretrained weights from ``init_from`` (local dir or hub id) to
    fine-tune, else the named ``preset`` with fresh random weights. Returns (vae, source description).

    ``temporal_compression`` (0 = the preset's or checkpoint's own) sets S of a fresh preset: 1, 2, 4 or 8
    (:func:`preset_config`); pretrained weights keep theirs, and a different value is refused.
    """
    if init_from:
        vae, source = build_vae(preset, init_from)
        S = int(vae.config.temporal_compression_ratio)
        if temporal_compression and temporal_compression != S:
            raise ValueError(f"tokenizer.temporal_compression={temporal_compression} but the weights in {init_from} "
                             f"have temporal compression {S}; drop the setting or fit from the preset")
        source = f"pretrained {source}"
    else:
        from diffusers import AutoencoderKLCosmos

        from dreamer.tokenizer.framewise import framewise_convs

        vae = framewise_convs(AutoencoderKLCosmos(**preset_config(preset, temporal_compression)))
        source = f"preset {preset!r} (S={temporal_compression or 'default'}), random init"
    vae.requires_grad_(True)
    vae.train()
    return vae, source


class PooledAutoencoder(nn.Module):
    """encode → pool → unpool → decode with gradients: the path phase 0 trains.

    forward(frames uint8 (B, T, H, W, 3), T = 1 + S·k) → (reconstruction (B, 3, T, R, R),
    target (B, 3, T, R, R) in [-1, 1], pooled latents (B, 1+k, N, C)).
    """

    def __init__(self, vae: nn.Module, resolution: int, pool: int, crop: int = 0, framewise: bool = False):
        super().__init__()
        self.vae, self.resolution, self.pool, self.crop = vae, resolution, pool, crop  # crop: tokenizer.crop
        self.S, grid = probe_layout(vae, resolution)  # as the frozen wrapper measures them
        # framewise (tokenizer.window_latents = 0, S = 1): every frame is encoded and decoded alone, as the cache does
        self.framewise = framewise
        if framewise:
            check_framewise(self.S)
        if grid % pool:
            raise ValueError(f"tokenizer.pool={pool} must divide the latent grid {grid} (resolution {resolution})")
        self.num_tokens = (grid // pool) ** 2

    def encode(self, x_bcthw: torch.Tensor) -> torch.Tensor:
        """Preprocessed clip (B, 3, T, R, R) → pooled latents (B, T_lat, N, C)."""
        if self.framewise:  # (B·T, 3, 1, R, R): each frame its own clip
            B, T = x_bcthw.shape[0], x_bcthw.shape[2]
            z = self.encode_clip(x_bcthw.transpose(1, 2).reshape(B * T, x_bcthw.shape[1], 1, *x_bcthw.shape[3:]))
            return z.reshape(B, T, *z.shape[2:])
        return self.encode_clip(x_bcthw)

    def encode_clip(self, x_bcthw: torch.Tensor) -> torch.Tensor:
        return pool_latents(self.vae.encode(x_bcthw).latent_dist.mode(), self.pool)

    def decode(self, z_btnc: torch.Tensor) -> torch.Tensor:
        """Pooled latents (B, T_lat, N, C) → frames (B, 3, 1 + S(T_lat-1), R, R), unclamped."""
        if self.framewise:
            B, T = z_btnc.shape[:2]
            x = self.vae.decode(unpool_latents(z_btnc.reshape(B * T, 1, *z_btnc.shape[2:]), self.pool)).sample
            return x.reshape(B, T, *x.shape[1:]).squeeze(3).transpose(1, 2)
        return self.vae.decode(unpool_latents(z_btnc, self.pool)).sample

    def forward(self, frames_bthwc: torch.Tensor):
        T = frames_bthwc.shape[1]
        if (T - 1) % self.S:
            raise ValueError(f"a training clip needs 1 + S·k frames (S={self.S}), got {T}")
        target = preprocess(frames_bthwc, self.resolution, self.crop)
        z = self.encode(target)
        return self.decode(z), target, z


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 7, data_range: float = 2.0) -> torch.Tensor:
    """Mean structural similarity of images (M, 3, H, W) with a uniform window (as scikit-image)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    pad = window // 2
    mu_x, mu_y = (F.avg_pool2d(v, window, 1, pad, count_include_pad=False) for v in (x, y))
    var_x = F.avg_pool2d(x * x, window, 1, pad, count_include_pad=False) - mu_x**2
    var_y = F.avg_pool2d(y * y, window, 1, pad, count_include_pad=False) - mu_y**2
    cov = F.avg_pool2d(x * y, window, 1, pad, count_include_pad=False) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean()


def reconstruction_loss(recon_bcthw: torch.Tensor, target_bcthw: torch.Tensor, perceptual_weight: float = 0.0,
                        l1_weight: float = 0.0, peak_weight: float = 0.0):
    """MSE in [-1, 1] space, plus when asked: ``perceptual_weight`` · (1 − SSIM), ``l1_weight`` · the mean absolute
    error, and ``peak_weight`` · each frame's worst pixel (its squared error averaged over the colour channels, the
    largest of the frame's pixels, averaged over frames). The last two keep small sprites from drowning in large flat
    areas: L1 weighs a small error more than the square does, and the worst pixel is usually on a sprite the MSE has
    painted over (docs/tokenizer.md). Returns (loss, metrics)."""
    recon, target = recon_bcthw.float(), target_bcthw.float()
    mse = F.mse_loss(recon, target)
    metrics = {"mse": float(mse.detach())}
    loss = mse
    if perceptual_weight > 0:
        B, C, T, H, W = recon.shape
        flat = [v.permute(0, 2, 1, 3, 4).reshape(B * T, C, H, W) for v in (recon, target)]
        structural = 1.0 - ssim(flat[0].clamp(-1, 1), flat[1])
        loss = loss + perceptual_weight * structural
        metrics["one_minus_ssim"] = float(structural.detach())
    if l1_weight > 0:
        l1 = (recon - target).abs().mean()
        loss = loss + l1_weight * l1
        metrics["l1"] = float(l1.detach())
    if peak_weight > 0:
        per_pixel_bthw = (recon - target).pow(2).mean(1)  # (B, T, H, W): channels averaged
        peak = per_pixel_bthw.flatten(2).amax(-1).mean()  # each frame's worst pixel, averaged over frames
        loss = loss + peak_weight * peak
        metrics["peak"] = float(peak.detach())
    metrics["total"] = float(loss.detach())
    return loss, metrics


def psnr_uint8(a: torch.Tensor, b: torch.Tensor, valid_bt: torch.Tensor | None = None) -> torch.Tensor:
    """Per-clip PSNR (dB) of uint8 frames (B, T, H, W, 3) over the valid frames (B, T)."""
    err = (a.float() - b.float()).pow(2).mean(dim=(2, 3, 4))  # (B, T)
    w = torch.ones_like(err) if valid_bt is None else valid_bt.to(err.dtype)
    mse = (err * w).sum(1) / w.sum(1).clamp_min(1)
    return 10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))


def pooled_pixels(frames_bthwc: torch.Tensor, grid: int) -> torch.Tensor:
    """Training-free reference: each frame averaged to grid×grid colours and upsampled back (uint8)."""
    B, T, H, W, _ = frames_bthwc.shape
    x = frames_bthwc.permute(0, 1, 4, 2, 3).reshape(B * T, 3, H, W).float()
    x = F.interpolate(F.adaptive_avg_pool2d(x, grid), size=(H, W), mode="bicubic", align_corners=False)
    return x.clamp(0, 255).round().to(torch.uint8).reshape(B, T, 3, H, W).permute(0, 1, 3, 4, 2)


@torch.no_grad()
def evaluate_reconstruction(model: PooledAutoencoder, clips: list[dict], bf16: bool = False,
                            key: str = "phase0.bf16") -> tuple[dict, tuple]:
    """Held-out PSNR through the pooled bottleneck at the frames' own resolution (pure inference).

    clips: batches from :meth:`FrameClipSampler.batch`; ``bf16`` (the config key ``key``): bf16 autocast where it
    pays (:mod:`dreamer.precision`). Metrics: ``psnr`` (dB, mean over clips, padded
    frames excluded), ``psnr_pooled_pixels`` (the training-free reference: every frame averaged to the
    token grid's colours), ``mse`` (in [-1, 1] at the model resolution). Also returns (originals,
    reconstructions) of the first batch, uint8 (B, T, H, W, 3), for pictures.
    """
    was_training = model.training
    model.eval()
    psnrs, refs, mses, first = [], [], [], None
    for batch in clips:
        frames, valid = batch["frames"], batch["valid"]
        with autocast(bf16, frames.device, key):
            recon, target, z_btnc = model(frames)
        _, m = reconstruction_loss(recon, target)
        mses.append(m["mse"])
        out = postprocess(recon, frames.shape[2], model.crop)  # as the wrapper's decode
        psnrs.append(psnr_uint8(out, frames, valid))
        refs.append(psnr_uint8(pooled_pixels(frames, math.isqrt(z_btnc.shape[2])), frames, valid))
        if first is None:
            first = (frames, out)
    model.train(was_training)
    metrics = {"psnr": float(torch.cat(psnrs).mean()), "psnr_pooled_pixels": float(torch.cat(refs).mean()),
               "mse": float(np.mean(mses))}
    return metrics, first


class FrameClipSampler:
    """Clips of 1 + S·k frames from whole episodes, for fitting the tokenizer.

    A clip starts at a chunk boundary (frame S·i) so its latents line up with the cached ones; a tail
    past the episode end is padded by repeating the last frame, as the cache does. Draws are uniform
    over all (episode, start) pairs and depend only on (seed, rank, step), so a resumed run sees the
    batches it would have seen.
    """

    def __init__(self, episodes: dict[str, np.ndarray], clip_frames: int, S: int, batch_size: int, seed: int = 0,
                 rank: int = 0, actions: dict[str, dict[str, np.ndarray]] | None = None):
        if clip_frames < 1 + S or (clip_frames - 1) % S:
            raise ValueError(f"phase0.clip_frames={clip_frames} must be 1 + S·k with k >= 1 (S={S}: e.g. {1 + S}, "
                             f"{1 + 2 * S}, {1 + 4 * S})")
        if not episodes:
            raise ValueError("FrameClipSampler needs at least one episode")
        self.names = sorted(episodes)
        self.episodes = episodes
        # name -> arrays per latent step (L, ...), as cached: {"actions" (L, S, D), "action_mask" (L, S)} for the
        # action head, {"view", "inventory", "facing", "state_mask"} for the state head (dreamer/tokenizer/state_head.py)
        self.actions = actions
        self.clip_frames, self.S, self.batch_size, self.seed, self.rank = clip_frames, S, batch_size, seed, rank
        k = (clip_frames - 1) // S
        starts = np.array([max(1, latent_steps(len(episodes[n]), S) - k) for n in self.names], dtype=np.int64)
        self._draw = UniformClipDraw(starts, batch_size, seed, rank)  # start latents, drawn as the cache's clips

    def draw(self, step: int) -> list[tuple[str, int]]:
        """(episode, first frame) of each clip of batch ``step`` for this rank."""
        return [(self.names[e], s * self.S) for e, s in self._draw.draw(step)]

    def batch(self, step: int, device: str | torch.device = "cpu") -> dict:
        return self.collate(self.draw(step), device)

    def collate(self, picks: list[tuple[str, int]], device: str | torch.device = "cpu") -> dict:
        """frames uint8 (B, clip_frames, H, W, 3), valid bool (B, clip_frames) (False = padding), provenance;
        with per-latent arrays, also each of them over the clip's latent steps (B, 1+k, ...), e.g. the action chunks
        (B, 1+k, S, D) and their mask (B, 1+k, S); latents past the episode end are zeros (masks False)."""
        clips, valid, per_latent = [], [], {}
        T_lat = (self.clip_frames - 1) // self.S + 1
        for name, s in picks:
            clip = self.episodes[name][s : s + self.clip_frames]
            n = len(clip)
            if n < self.clip_frames:
                clip = np.concatenate([clip, np.repeat(clip[-1:], self.clip_frames - n, axis=0)])
            clips.append(clip)
            valid.append(np.arange(self.clip_frames) < n)
            k0 = s // self.S
            for key, a in (self.actions or {}).get(name, {}).items():
                pad = max(0, k0 + T_lat - len(a))  # latents past the episode end
                per_latent.setdefault(key, []).append(
                    np.concatenate([a[k0 : k0 + T_lat], np.zeros((pad, *a.shape[1:]), a.dtype)]))
        out = {"frames": torch.from_numpy(np.stack(clips)).to(device),
               "valid": torch.from_numpy(np.stack(valid)).to(device), "provenance": list(picks)}
        out.update({k: torch.from_numpy(np.stack(v)).to(device) for k, v in per_latent.items()})
        return out


class ActionHead(nn.Module):
    """Phase 0's auxiliary behaviour head: the action chunk of latent step k from the pooled latent z_k
    (flattened N·C, layer-normalised), so that fitting the tokenizer also shapes its latents for what the
    agent must decide (docs/tokenizer.md). It exists only during phase 0: the phases never load it."""

    def __init__(self, num_tokens: int, channels: int, action_cards: list[int], S: int, hidden: int = 256):
        super().__init__()
        from dreamer.agent.policy import PolicyHead

        self.norm = nn.LayerNorm(num_tokens * channels)
        self.policy = PolicyHead(num_tokens * channels, action_cards, S, hidden, 1)

    def forward(self, z_btnc: torch.Tensor):
        """The distribution over each latent step's chunk, a :class:`dreamer.agent.policy.PolicyDist` (B, T, S)."""
        return self.policy(self.norm(z_btnc.flatten(2).float()))


def aligned_actions(paths: list[Path], S: int) -> dict[str, dict[str, np.ndarray]]:
    """name → the action chunks and masks of every latent step of each episode, as the cache aligns them."""
    from dreamer.data.cache import align_episode
    from dreamer.data.episode import load_episode

    out = {}
    for p in paths:
        a = align_episode(load_episode(p), S)
        out[Path(p).stem] = {"actions": a["actions"], "action_mask": a["action_mask"]}
    return out


def plateaued(curve: list, patience: int, min_delta: float) -> bool:
    """True when the last ``patience`` held-out PSNRs of ``curve`` ([(step, psnr), ...]) all stay below the
    best one before them + ``min_delta``: fitting has stopped improving. Never with ``patience`` = 0."""
    if patience <= 0 or len(curve) <= patience:
        return False
    best_before = max(p for _, p in curve[:-patience])
    return all(p < best_before + min_delta for _, p in curve[-patience:])


def side_by_side(originals_bthwc: torch.Tensor, recon_bthwc: torch.Tensor, max_items: int = 4) -> np.ndarray:
    """uint8 (H, W, 3) picture: per clip, a row of original frames above a row of reconstructions."""
    rows = [torch.cat(list(x[i]), dim=1) for i in range(min(max_items, len(originals_bthwc)))
            for x in (originals_bthwc, recon_bthwc)]
    return torch.cat(rows, dim=0).cpu().numpy()


def load_frames(paths: list[Path]) -> dict[str, np.ndarray]:
    """name → uint8 frames (T+1, H, W, 3) of each episode file; every episode must share one frame size."""
    from dreamer.data.episode import EpisodeError, load_episode

    out, shape = {}, None
    for p in paths:
        frames = load_episode(p).frames
        if shape is None:
            shape = frames.shape[1:]
        elif frames.shape[1:] != shape:
            raise EpisodeError(p, "frames", f"frame size {frames.shape[1:]} differs from {shape} of {paths[0]}")
        out[Path(p).stem] = frames
    return out


def save_tokenizer(vae: nn.Module, out_dir: str | os.PathLike, info: dict) -> Path:
    """``save_pretrained`` into a temporary folder beside ``out_dir``, then rename it into place.

    A crash never leaves a half-written tokenizer at ``out_dir``. ``info`` (plus the weights hash) is
    written to ``phase0.json`` in the folder.
    """
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        vae.save_pretrained(str(tmp))
        (tmp / "phase0.json").write_text(json.dumps(dict(info, weights_sha256=weights_hash(vae)), indent=1))
    return out
