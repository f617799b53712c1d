"""Real against imagined, frame by frame: MP4 files and animated TensorBoard images.

From a real start (``context`` latents of a cached episode, the last at latent ``start``) one clip
holds, side by side at the full frame rate:

- ``real``: the episode's frames;
- ``reconstructed``: the real latents decoded (what the tokenizer alone loses);
- ``open loop``: the world model's prediction under the real actions (:func:`dreamer.dynamics.rollout`);
- ``imagined``: for an agent, a rollout under the agent's own sampled actions
  (:func:`dreamer.imagination.imagine`).

The caption under each frame says whether it is context or dreamed, and the real and the agent's
action at that env step. :func:`phase_video` is the one call each phase script makes at its end.
"""

from __future__ import annotations

import io
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dreamer.data.episode import EpisodeError, load_episode
from dreamer.dynamics import rollout
from dreamer.imagination import imagine
from dreamer.tags import tag
from dreamer.viewer.frames import compose, decode_frames, fit_length
from dreamer.viewer.keys import KeyMap, keymap_for

log = logging.getLogger(__name__)
PHASE_FRAMES = 64  # frames of the video each phase writes (decisions = ceil(64 / S)); cheap on CPU


@dataclass
class DreamClip:
    panels: dict[str, np.ndarray]  # name -> (F, H, W, 3) uint8, F = 1 + S·(context + horizon - 1)
    captions: list[str]
    episode: str
    start: int
    context: int
    horizon: int


def clip_bounds(cache, dynamics, name: str, start: int | None, context: int, horizon: int | None,
                max_frames: int | None = None) -> tuple[int, int, int]:
    """(start, context, horizon) clamped to the episode and the dynamics' max_time."""
    L, S, max_time = len(cache.episode(name)), cache.chunk_len, dynamics.cfg.max_time
    context = max(1, min(context, L - 1, max_time - 1)) if L > 1 else 1
    start = context - 1 if start is None else start
    if not context - 1 <= start <= L - 2:
        raise ValueError(f"episode {name}: start latent {start} must lie in [{context - 1}, {L - 2}] "
                         f"({L} latent steps, context {context})")
    most = min(L - 1 - start, max_time - context)
    if max_frames is not None:
        most = min(most, max(1, math.ceil(max_frames / S)))
    horizon = most if horizon is None else min(horizon, most)
    if horizon < 1:
        raise ValueError(f"episode {name}: no room to dream after latent {start} (max_time {max_time})")
    return start, context, horizon


def _real_frames(cache, name: str, first_frame: int, n: int, size: int) -> np.ndarray | None:
    path = cache.manifest["sources"][name]["path"]
    try:
        frames = load_episode(path).frames[first_frame : first_frame + n]
    except (EpisodeError, OSError) as e:  # the cache outlives its episode files: show the other panels
        log.warning("episode %s: real frames unavailable (%s); the video shows latents only", name, e)
        return None
    if frames.shape[1] != size:
        frames = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR)) for f in frames])
    return fit_length(frames, n)


def _name(keymap: KeyMap, acts_sd: torch.Tensor, mask_s: torch.Tensor | None, i: int) -> str:
    if mask_s is not None and not bool(mask_s[i]):
        return "-"
    return keymap.describe(acts_sd[i].cpu().numpy())


@torch.no_grad()
def dream_clip(tokenizer, cache, dynamics, agent, name: str, start: int | None = None, context: int = 2,
               horizon: int | None = None, size: int = 64, keymap: KeyMap | None = None,
               generator: torch.Generator | None = None, max_frames: int | None = None) -> DreamClip:
    """The panels of one real start (see the module docstring); ``horizon`` decisions after ``context``."""
    start, context, horizon = clip_bounds(cache, dynamics, name, start, context, horizon, max_frames)
    S, dev = cache.chunk_len, next(dynamics.parameters()).device
    keymap = keymap or keymap_for(cache.action_space)
    e, first, stop = cache.episode(name), start - context + 1, start + horizon + 1
    z = cache.standardise(torch.from_numpy(np.array(e.latents[first:stop])).to(dev))[None]  # (1, c+H, N, C)
    acts = torch.from_numpy(np.array(e.actions[first:stop])).to(dev)[None]  # (1, c+H, S, D)
    mask = torch.from_numpy(np.array(e.action_mask[first:stop])).to(dev)[None]  # (1, c+H, S)
    c = context
    pred = rollout(dynamics, z[:, :c], acts[:, :c], mask[:, :c], acts[:, c - 1 : -1], mask[:, c - 1 : -1],
                   generator=generator)  # (1, H, N, C)
    sequences = {"reconstructed": z, "open loop": torch.cat([z[:, :c], pred], 1)}
    dreamed = None
    if agent is not None:
        ctx = {"latents": z[:, :c], "actions": acts[:, :c], "action_mask": mask[:, :c]}
        dreamed = imagine(dynamics, agent, ctx, horizon, generator=generator)
        sequences["imagined"] = torch.cat([z[:, :c], dreamed.latents[:, 1:]], 1)
    n = 1 + S * (c + horizon - 1)
    panels = {k: fit_length(decode_frames(tokenizer, v, cache.mean, cache.std, size)[0], n) for k, v in sequences.items()}
    real = _real_frames(cache, name, S * first, n, size)
    if real is not None:
        panels = {"real": real, **panels}
    captions = []
    for f in range(n):
        j, i = (f - 1) // S, (f - 1) % S  # frame f > 0 ends sub-step i of the chunk from clip latent j
        h = 0 if f <= S * (c - 1) else j - c + 2
        text = f"{name}  t={S * first + f}  " + ("context" if h == 0 else f"dream {h}/{horizon}")
        if f > 0:
            text += f" | real: {_name(keymap, acts[0, j], mask[0, j], i)}"
            if dreamed is not None and h > 0:
                text += f" | agent: {_name(keymap, dreamed.actions[0, h - 1], None, i)}"
                text += f" | r^={float(dreamed.rewards[0, h - 1]):+.2f}" if i == S - 1 else ""
        captions.append(text)
    return DreamClip(panels, captions, name, start, context, horizon)


def write_mp4(frames_fhwc: np.ndarray, path: str | Path, fps: float = 10.0, preset: str = "veryfast") -> Path:
    """H.264 MP4 (yuv420p, even sizes, x264 ``preset``), written to a temporary file beside ``path`` and renamed."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.mp4")
    H, W = frames_fhwc.shape[1:3]
    try:
        with av.open(str(tmp), mode="w") as box:
            stream = box.add_stream("libx264", rate=max(1, round(fps)))
            stream.width, stream.height, stream.pix_fmt = W - W % 2, H - H % 2, "yuv420p"
            stream.options = {"crf": "18", "preset": preset}
            for f in frames_fhwc:
                box.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f[: H - H % 2, : W - W % 2]),
                                                                 format="rgb24")))
            box.mux(stream.encode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def gif_bytes(frames_fhwc: np.ndarray, fps: float = 10.0) -> bytes:
    # fast octree quantisation: PIL's default (median cut) takes minutes on noisy frames of a random tokenizer
    images = [Image.fromarray(f).quantize(256, method=Image.Quantize.FASTOCTREE) for f in frames_fhwc]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return buf.getvalue()


def add_animation(writer, tag: str, frames_fhwc: np.ndarray, step: int, fps: float = 10.0) -> None:
    """An animated GIF in TensorBoard's image dashboard (what add_video does, without moviepy)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    H, W = frames_fhwc.shape[1:3]
    image = Summary.Image(height=H, width=W, colorspace=3, encoded_image_string=gif_bytes(frames_fhwc, fps))
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def episode_fps(cache, name: str, default: float = 10.0) -> float:
    return float(cache.manifest["sources"][name].get("meta", {}).get("fps", default) or default)


def phase_video(rt, payload: dict, tokenizer, cache, scale: int = 2) -> Path | None:
    """Each phase's last act: ``<run>/phase<k>_dream.mp4`` and the same clip in TensorBoard (``eval/<phase>/dream/…``,
    rank 0).

    The models are rebuilt from the final checkpoint ``payload`` (so FSDP shards and compiled wrappers
    play no part). A failure never ends the run: it is logged as a warning naming the cause.
    """
    if not rt.is_main:
        return None
    phase = payload.get("phase", "?")
    try:
        from dreamer.pipeline.build import imagining
        from dreamer.viewer.load import models_from_checkpoint

        t0 = time.perf_counter()
        dynamics, agent = models_from_checkpoint(payload, rt.cfg, tokenizer, cache, rt.device)
        if phase == 3:  # phase 3's dreams as it trained on them
            dynamics = imagining(dynamics, rt.cfg.phase3.sample_steps)
        names = [n for n in cache.val_names + cache.train_names if len(cache.episode(n)) >= 2]
        if not names:
            raise ValueError(f"latent cache {cache.root}: no episode with two latent steps")
        name = names[0]
        gen = torch.Generator(device=rt.device).manual_seed(rt.cfg.seed)
        clip = dream_clip(tokenizer, cache, dynamics, agent, name, keymap=keymap_for(cache.action_space,
                          rt.cfg.env.env_id), size=rt.cfg.env.size, generator=gen, max_frames=PHASE_FRAMES)
        frames = compose(clip.panels, clip.captions, scale=scale)
        fps = episode_fps(cache, name)
        path = write_mp4(frames, rt.run_dir / f"phase{phase}_dream.mp4", fps)
        if rt.writer is not None:
            add_animation(rt.writer, tag("eval", rt.phase, f"dream/{'|'.join(clip.panels)}"), frames,
                          int(payload.get("step", 0)), fps)
            rt.writer.flush()
        log.info("wrote %s: %s, %d frames, %.1f s", path, " | ".join(clip.panels), len(frames),
                 time.perf_counter() - t0)
        return path
    except Exception as e:  # a video must never cost a finished run; say why there is none
        log.warning("phase %s: no dream video (%s: %s)", phase, type(e).__name__, e, exc_info=True)
        return None
