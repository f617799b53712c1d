"""The frozen Cosmos tokenizer (docs/design.md §2).

uint8 frames (B, T, H, W, 3) → [-1, 1], (B, 3, T, H, W), bicubic resize to ``resolution`` →
``AutoencoderKLCosmos.encode(x).latent_dist.mode()`` → raw latents (B, C, T_lat, G, G) →
average pool (kernel ``pool``) → pooled latents (B, T_lat, N, C), N = (G/pool)^2 row-major.

Time: T_lat = 1 + ceil((T-1)/S). Latent 0 encodes frame 0 alone, latent k >= 1 frames S(k-1)+1 … Sk.
Long episodes are encoded in windows (:func:`latent_window`, the one definition shared by the cache
builder and by acting in the environment).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from dreamer.errors import PathKindError
from dreamer.precision import autocast
from dreamer.tokenizer.config import TokenizerConfig

log = logging.getLogger(__name__)

# Named architectures of diffusers' AutoencoderKLCosmos. cv8x8x8 is the class default (NVIDIA
# Cosmos-1.0-Tokenizer-CV8x8x8, ~106M parameters) and cv4x8x8 its S = 4 sibling: their layout is fixed by
# the pretrained weights. tiny (~0.25M) is for tests and the CPU demo; small (~1.4M) is the phase-0 preset.
# tiny and small are families: :func:`preset_config` lays them out for any temporal compression S.
PRESETS: dict[str, dict] = {
    "cv8x8x8": {},
    "cv4x8x8": {"temporal_compression_ratio": 4},
    "tiny": {
        "encoder_block_out_channels": (8, 16, 16, 16),
        "decode_block_out_channels": (16, 16, 16, 16),
        "num_layers": 1,
        "attention_resolutions": (),
        "resolution": 256,
    },
    "small": {
        "encoder_block_out_channels": (16, 32, 64, 64),
        "decode_block_out_channels": (32, 64, 64, 64),
        "num_layers": 1,
        "attention_resolutions": (),
        "resolution": 256,
    },
}
FIXED_LAYOUT = {"cv8x8x8": 8, "cv4x8x8": 4}  # pretrained layouts: their S cannot change
TEMPORAL_COMPRESSIONS = (1, 2, 4, 8)
HUB_ID = "nvidia/Cosmos-1.0-Tokenizer-CV8x8x8"
RANDOM_INIT_SEED = 0


def latent_steps(num_frames: int, S: int) -> int:
    """T_lat = 1 + ceil((T-1)/S) for T >= 1 frames."""
    if num_frames < 1:
        raise ValueError(f"need at least one frame, got {num_frames}")
    return 1 + math.ceil((num_frames - 1) / S)


def latent_window(k: int, S: int, m: int) -> tuple[int, int]:
    """Frames [start, stop) to encode so that the LAST latent of the result is latent k.

    Window j covers latents mj … m(j+1) and starts at frame S·m·j. Latent k >= 1 lies in window
    j = (k-1) // m; by causality, encoding the window's prefix up to frame S·k gives latent k as its
    last latent, identical to encoding the whole window. Latent 0 is frame 0 alone.

    m = 0 (S = 1 only): every latent k is frame k alone.
    """
    if m == 0:
        check_framewise(S)
        return k, k + 1
    if k == 0:
        return 0, 1
    j = (k - 1) // m
    return S * m * j, S * k + 1


def check_framewise(S: int) -> None:
    """Refuse tokenizer.window_latents=0 (every frame encoded alone) for a tokenizer with S != 1."""
    if S != 1:
        raise ValueError(f"tokenizer.window_latents=0 encodes every frame alone, which needs S = 1 (this tokenizer "
                         f"has S = {S}): set tokenizer.window_latents >= 1")


def window_plan(num_frames: int, S: int, m: int) -> list[tuple[int, int, int]]:
    """(start, stop, first_kept_latent) of each window that encodes a whole episode.

    Built from :func:`latent_window` at each window's last latent. ``stop`` may exceed
    ``num_frames``: the tail is padded by repeating the last frame (:func:`pad_frames`).
    """
    L = latent_steps(num_frames, S)
    if m == 0:
        check_framewise(S)
        return [(k, k + 1, 0) for k in range(L)]
    if L == 1:
        return [(0, 1, 0)]
    plan = []
    for last in range(m, L - 1 + m, m):
        k = min(last, L - 1)
        start, stop = latent_window(k, S, m)
        plan.append((start, stop, 0 if start == 0 else 1))
    return plan


def pad_frames(frames_bthwc: torch.Tensor, stop: int) -> torch.Tensor:
    """Repeat the last frame so that the clip holds ``stop`` frames (as NVIDIA's library does)."""
    T = frames_bthwc.shape[1]
    if stop <= T:
        return frames_bthwc[:, :stop]
    tail = frames_bthwc[:, -1:].expand(-1, stop - T, *frames_bthwc.shape[2:])
    return torch.cat([frames_bthwc, tail], dim=1)


def preprocess(frames_bthwc: torch.Tensor, resolution: int, crop: int = 0) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) → float in [-1, 1], (B, 3, T, R, R), bicubic resize, clamped.

    ``crop`` > 0 (``tokenizer.crop``): the top-left crop × crop pixels, resized by nearest neighbour instead (a
    game's cells land on whole patches)."""
    if frames_bthwc.dtype != torch.uint8 or frames_bthwc.ndim != 5 or frames_bthwc.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (B, T, H, W, 3), got {tuple(frames_bthwc.shape)} {frames_bthwc.dtype}")
    B, T, H, W, _ = frames_bthwc.shape
    if crop and crop > min(H, W):
        raise ValueError(f"tokenizer.crop={crop} is larger than the {H}x{W} frames")
    x = frames_bthwc.permute(0, 1, 4, 2, 3).reshape(B * T, 3, H, W).float() / 127.5 - 1.0
    if crop:
        x = x[..., :crop, :crop]
        if crop != resolution:
            x = F.interpolate(x, size=(resolution, resolution), mode="nearest-exact")
    elif (H, W) != (resolution, resolution):
        x = F.interpolate(x, size=(resolution, resolution), mode="bicubic", align_corners=False)
    x = x.clamp(-1.0, 1.0)
    return x.reshape(B, T, 3, resolution, resolution).permute(0, 2, 1, 3, 4)


def postprocess(x_bcthw: torch.Tensor, size: int | None = None, crop: int = 0) -> torch.Tensor:
    """Decoded frames (B, 3, T, R, R) in [-1, 1] → uint8 (B, T, size, size, 3) (size None: R), the inverse of
    :func:`preprocess`: a bicubic resize, or with ``crop`` > 0 a nearest-neighbour resize to crop × crop padded
    black (-1) to size on the right and bottom (size None: crop)."""
    B, C, T, R, _ = x_bcthw.shape
    x = x_bcthw.float().permute(0, 2, 1, 3, 4).reshape(B * T, C, R, R)
    size = size or crop or R
    if crop:
        if crop != R:
            x = F.interpolate(x, size=(crop, crop), mode="nearest-exact")
        x = F.pad(x, (0, max(0, size - crop), 0, max(0, size - crop)), value=-1.0)[..., :size, :size]
    elif size != R:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.reshape(B, T, C, size, size).permute(0, 1, 3, 4, 2)


def pool_latents(raw_bcthw: torch.Tensor, pool: int) -> torch.Tensor:
    """Raw latents (B, C, T, G, G) → pooled (B, T, N, C), N = (G/pool)^2 in row-major order."""
    B, C, T, G, _ = raw_bcthw.shape
    x = raw_bcthw.permute(0, 2, 1, 3, 4).reshape(B * T, C, G, G)
    x = F.avg_pool2d(x, kernel_size=pool) if pool > 1 else x
    return x.reshape(B, T, C, -1).transpose(2, 3)


def unpool_latents(z_btnc: torch.Tensor, pool: int) -> torch.Tensor:
    """Pooled (B, T, N, C) → raw layout (B, C, T, G, G) by nearest upsampling (inverse of pooling)."""
    B, T, N, C = z_btnc.shape
    g = math.isqrt(N)
    x = z_btnc.transpose(2, 3).reshape(B, T, C, g, g)
    x = x.repeat_interleave(pool, dim=3).repeat_interleave(pool, dim=4)
    return x.permute(0, 2, 1, 3, 4)


def preset_config(preset: str, temporal_compression: int = 0) -> dict:
    """Constructor arguments of ``preset`` laid out for temporal compression S (0 = the preset's own, 8).

    The architecture compresses space by 8 in all layouts: a Haar patch of size p = min(S, 4) divides
    time and space by p, then causal down-sampling blocks bring time to S and space to 8. So S = 8 and
    S = 4 patch by 4 (one temporal block for S = 8), S = 2 patches by 2, and S = 1 (no patching) gains a
    thin first level at full resolution, for the third spatial halving, with a decoder as narrow as the
    encoder (measured on 2 CPU cores at 64×64: half the fitting time of the preset's wider decoder). The real compression of the
    result is checked by :func:`probe_layout`, never taken from the config.
    """
    if preset not in PRESETS:
        raise ValueError(f"tokenizer.preset={preset!r} is not one of {sorted(PRESETS)}")
    S = temporal_compression
    if S and S not in TEMPORAL_COMPRESSIONS:
        raise ValueError(f"tokenizer.temporal_compression={S} must be 0 (the preset's) or one of {TEMPORAL_COMPRESSIONS}")
    kw = dict(PRESETS[preset])
    if preset in FIXED_LAYOUT:
        if S and S != FIXED_LAYOUT[preset]:
            raise ValueError(f"tokenizer.temporal_compression={S}: preset {preset!r} has the fixed layout of NVIDIA's "
                             f"weights (S = {FIXED_LAYOUT[preset]}); use preset tiny or small for another S")
        return kw
    S = S or 8
    enc, dec = list(kw["encoder_block_out_channels"]), list(kw["decode_block_out_channels"])
    if S == 1:  # one more level, at full resolution: half the first width, and a decoder that mirrors the
        enc = [max(4, enc[0] // 2)] + enc  # encoder (a wide full-resolution decoder level costs half the time)
        dec = list(enc)
    kw.update(encoder_block_out_channels=tuple(enc), decode_block_out_channels=tuple(dec), patch_size=min(S, 4),
              temporal_compression_ratio=S, spatial_compression_ratio=8)
    return kw


@torch.no_grad()
def probe_layout(vae, resolution: int) -> tuple[int, int]:
    """(S, grid): the temporal compression and the latent grid side that ``vae`` really gives at
    ``resolution``, measured by encoding a blank clip of 9 frames (latents 1 + 8 / S) at min(resolution, 64)
    and scaling the grid (diffusers' config may claim another compression than its blocks apply)."""
    size = min(resolution, 64)
    param = next(vae.parameters())
    x = torch.zeros(1, 3, 9, size, size, device=param.device, dtype=param.dtype)
    z = vae.encode(x).latent_dist.mode()
    T_lat, g = int(z.shape[2]), int(z.shape[-1])
    if T_lat < 2 or 8 % (T_lat - 1) or size % g:
        raise ValueError(f"tokenizer: a probe clip of 9 frames at {size}x{size} gave latents {tuple(z.shape)}; "
                         "expected 1 + 8/S latent steps for S in {1, 2, 4, 8} and a grid dividing the frame")
    factor = size // g
    if resolution % factor:
        raise ValueError(f"tokenizer.resolution={resolution} is not a multiple of the spatial compression {factor}")
    return 8 // (T_lat - 1), resolution // factor


def _loading() -> dict:
    """from_pretrained options: without ``accelerate`` ask for the plain loading diffusers falls back to anyway,
    so it does not warn on every load (the tokenizers here are small)."""
    import importlib.util

    return {} if importlib.util.find_spec("accelerate") else {"low_cpu_mem_usage": False}


def build_vae(preset: str, pretrained: str | None = None, temporal_compression: int = 0):
    """An AutoencoderKLCosmos from a local directory / hub id, or a named preset with random weights
    (laid out for ``temporal_compression``, see :func:`preset_config`), its convolutions given the one-frame
    fast path of :mod:`dreamer.tokenizer.framewise`. Returns (vae, source)."""
    from dreamer.tokenizer.framewise import framewise_convs

    vae, source = _load_vae(preset, pretrained, temporal_compression)
    return framewise_convs(vae), source


def _load_vae(preset: str, pretrained: str | None, temporal_compression: int):
    from diffusers import AutoencoderKLCosmos

    if pretrained:
        path = Path(pretrained)
        if path.is_file():
            raise PathKindError(f"tokenizer.pretrained={pretrained} is a file, not a folder: give the folder that holds "
                                "config.json (a phase-0 tokenizer folder or a downloaded Cosmos tokenizer)")
        if path.exists():
            sub = "vae" if (path / "vae" / "config.json").is_file() else None
            if sub is None and not (path / "config.json").is_file():
                raise PathKindError(f"tokenizer.pretrained={pretrained}: no config.json in this folder or in its vae/ folder")
            return AutoencoderKLCosmos.from_pretrained(str(path), subfolder=sub, **_loading()), str(path.resolve())
        if pretrained.startswith((".", "/", "~")) or pretrained.count("/") > 1 or path.parent.is_dir():
            raise PathKindError(
                f"tokenizer.pretrained={pretrained}: no such folder ({path.resolve()}). If it is the output of "
                "phase 0, fit it first: python train_phase0_tokenizer.py --config <the same config>"
            )
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        try:
            vae = AutoencoderKLCosmos.from_pretrained(pretrained, subfolder="vae", local_files_only=offline,
                                                      **_loading())
        except Exception as e:
            raise RuntimeError(
                f"tokenizer.pretrained={pretrained!r}: could not load from the hub ({type(e).__name__}: {e}). "
                "Download the weights and point tokenizer.pretrained at the local directory."
            ) from e
        return vae, pretrained
    kw = preset_config(preset, temporal_compression)
    log.warning(
        "=" * 72 + "\nTOKENIZER WEIGHTS ARE RANDOM (preset %r, no tokenizer.pretrained given).\n"
        "Latents are random projections of the frames. Fit the tokenizer with train_phase0_tokenizer.py\n"
        "or point tokenizer.pretrained at Cosmos weights (%s).\n" + "=" * 72,
        preset,
        HUB_ID,
    )
    # Random weights come from a fixed seed, independent of the global RNG: every rank, every phase and
    # every rerun builds the same tokenizer, so the cache's identity check holds.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return AutoencoderKLCosmos(**kw), None


def weights_hash(module: torch.nn.Module) -> str:
    """sha256 over the state dict (names, shapes, dtypes and bytes): the tokenizer's identity."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def check_fitted_geometry(cfg: TokenizerConfig) -> None:
    """A tokenizer fitted by phase 0 sees frames as it was fitted: its folder's phase0.json records the resolution
    and the crop, and a config that asks for others is refused, naming both (the latents would be off silently)."""
    info_path = Path(cfg.pretrained or "") / "phase0.json"
    if not cfg.pretrained or not info_path.is_file():
        return
    info = json.loads(info_path.read_text())
    for key in ("resolution", "crop"):
        fitted, asked = info.get(key, 0 if key == "crop" else None), getattr(cfg, key)
        if fitted is not None and fitted != asked:
            raise ValueError(f"tokenizer.{key}={asked} but {info_path} was fitted with {key} {fitted}: set "
                             f"tokenizer.{key}={fitted} (phase 0's config) or fit again")


class CosmosTokenizerWrapper(torch.nn.Module):
    """Frozen Cosmos tokenizer producing pooled latents (B, T_lat, N, C).

    Frozen: parameters have requires_grad=False, the module stays in eval mode, encoding and decoding
    run under ``torch.no_grad()`` (a local context; the global grad mode is never changed).
    """

    reads_info = False  # acting encodes the frames (the env's info is never read; cf. crafter_state)

    def __init__(self, preset: str = "tiny", pretrained: str | None = None, cfg: TokenizerConfig | None = None, **kw):
        super().__init__()
        self.cfg = cfg or TokenizerConfig(preset=preset, pretrained=pretrained, **kw)
        self.vae, self.source = build_vae(self.cfg.preset, self.cfg.pretrained, self.cfg.temporal_compression)
        check_fitted_geometry(self.cfg)
        self.vae.requires_grad_(False)
        self.vae.eval()
        # S (temporal compression = action-chunk length) and the grid as the blocks really apply them.
        self.S, grid = probe_layout(self.vae, self.cfg.resolution)
        if self.cfg.temporal_compression and self.cfg.temporal_compression != self.S:
            raise ValueError(f"tokenizer.temporal_compression={self.cfg.temporal_compression} but the tokenizer "
                             f"{self.source or self.cfg.preset} compresses time by {self.S}")
        if self.cfg.window_latents == 0:
            check_framewise(self.S)
        self.spatial = self.cfg.resolution // grid
        self.channels = int(self.vae.config.latent_channels)
        if grid % self.cfg.pool:
            raise ValueError(f"tokenizer.pool={self.cfg.pool} must divide the latent grid {grid}x{grid} "
                             f"(resolution {self.cfg.resolution} / spatial compression {self.spatial})")
        self.grid = grid // self.cfg.pool  # token grid side
        self.num_tokens = self.grid**2
        self._identity: dict | None = None
        self.train(False)

    def train(self, mode: bool = True):  # stays in eval mode whatever the caller asks
        return super().train(False)

    def latent_steps(self, num_frames: int) -> int:
        return latent_steps(num_frames, self.S)

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def identity(self) -> dict:
        """What makes two tokenizers produce the same latents: config, weights hash, pooling, windowing."""
        if self._identity is None:
            config = {k: v for k, v in dict(self.vae.config).items() if not k.startswith("_")}
            self._identity = {
                "vae_config": json.loads(json.dumps(config, default=list)),
                "weights_sha256": weights_hash(self.vae),
                "resolution": self.cfg.resolution,
                **({"crop": self.cfg.crop} if self.cfg.crop else {}),  # absent when 0: older caches stay valid
                "pool": self.cfg.pool,
                "window_latents": self.cfg.window_latents,
                "temporal_compression": self.S,
                "bf16": bool(self.cfg.bf16),  # bf16 encodes differ slightly from float32 ones
            }
        return self._identity

    def _autocast(self):
        dev = self.device
        return autocast(self.cfg.bf16 and dev.type in ("cuda", "cpu"), dev, "tokenizer.bf16")

    @torch.no_grad()
    def encode_clip(self, frames_bthwc: torch.Tensor) -> torch.Tensor:
        """Encode one clip of 1 + S·k frames (no windowing) → pooled latents (B, 1+k, N, C) float32."""
        x = preprocess(frames_bthwc.to(self.device), self.cfg.resolution, self.cfg.crop)
        with self._autocast():
            raw = self.vae.encode(x).latent_dist.mode()
        return pool_latents(raw.float(), self.cfg.pool)

    @torch.no_grad()
    def encode(self, frames) -> torch.Tensor:
        """uint8 frames (B, T, H, W, 3) → pooled latents (B, T_lat, N, C) float32, windowed and causal.

        The windows of :func:`window_plan` all hold 1 + S·m frames (the last one padded), so they are
        encoded ``cfg.batch_windows`` at a time; the result equals encoding them one by one.
        """
        frames = torch.as_tensor(frames)
        B, T = frames.shape[:2]
        plan = window_plan(T, self.S, self.cfg.window_latents)
        clips = [pad_frames(frames[:, start:], stop - start) for start, stop, _ in plan]
        out, i = [], 0
        while i < len(plan):
            n = self.cfg.batch_windows if all(c.shape[1] == clips[i].shape[1] for c in clips[i : i + self.cfg.batch_windows]) else 1
            group = torch.cat(clips[i : i + n])  # (n·B, frames, H, W, 3), window-major
            z = self.encode_clip(group).unflatten(0, (-1, B))  # (n', B, T_w, N, C)
            out.extend(z[j, :, plan[i + j][2] :] for j in range(z.shape[0]))
            i += z.shape[0]
        z = torch.cat(out, dim=1)
        assert z.shape[1] == self.latent_steps(T), (z.shape, T)
        return z

    @torch.no_grad()
    def encode_episode(self, ep, path=None) -> torch.Tensor:
        """An Episode → its latents (L, N, C) float32: :meth:`encode` of its frames (``path`` is unused; the
        tokenizers that read the episode's extras name it in their errors)."""
        return self.encode(torch.from_numpy(ep.frames)[None])[0]

    @torch.no_grad()
    def encode_latent(self, frames, k: int) -> torch.Tensor:
        """Latent k alone (B, N, C) from frames (B, >=1, H, W, 3) seen so far (acting in the env).

        Uses the same :func:`latent_window` as :meth:`encode`; missing tail frames are padded by
        repeating the last one, exactly as the cache does for an episode's last partial chunk.
        """
        frames = torch.as_tensor(frames)
        start, stop = latent_window(k, self.S, self.cfg.window_latents)
        if frames.shape[1] <= start:
            raise ValueError(f"latent {k} needs frames from {start}, only {frames.shape[1]} given")
        return self.encode_clip(pad_frames(frames[:, start:], stop - start))[:, -1]

    @torch.no_grad()
    def decode(self, latents_btnc: torch.Tensor, mean=None, std=None, size: int | None = None) -> torch.Tensor:
        """Pooled latents (B, T_lat, N, C) → uint8 frames (B, 1 + S(T_lat-1), size, size, 3), for pictures.

        When ``mean``/``std`` (C,) are given the latents are standardised ones and are mapped back first.
        """
        z = latents_btnc.to(self.device).float()
        if mean is not None:
            z = z * torch.as_tensor(std, device=z.device, dtype=z.dtype) + torch.as_tensor(mean, device=z.device, dtype=z.dtype)
        B, T = z.shape[:2]
        if self.cfg.window_latents == 0:  # every latent is one frame's alone: decode it alone, as it was encoded
            z = z.reshape(B * T, 1, *z.shape[2:])
        with self._autocast():
            x = self.vae.decode(unpool_latents(z, self.cfg.pool)).sample.float()
        if self.cfg.window_latents == 0:  # (B·T, 3, 1, R, R) -> (B, 3, T, R, R)
            x = x.reshape(B, T, *x.shape[1:]).squeeze(3).transpose(1, 2)
        return postprocess(x, size, self.cfg.crop)

