"""Small real runs for the viewer tests: synthetic episodes, a latent cache built by a tiny tokenizer
(the preset, or a saved folder with another S), and phase-1 / phase-2 checkpoints written with the
phase scripts' own payload (random but real models of the configured sizes)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from dreamer.agent import Agent
from dreamer.config import Config
from dreamer.data.cache import build_cache
from dreamer.data.episode import Episode, save_episode
from dreamer.data.synthetic import make_episode
from dreamer.dynamics import DynamicsModel
from dreamer.minecraft.actions import MINERL_V04
from dreamer.tokenizer import CosmosTokenizerWrapper
from dreamer.training.checkpoint import atomic_save, data_info, payload

SETS = {
    "tokenizer": {"preset": "tiny", "resolution": 64, "pool": 2, "window_latents": 2},
    "env": {"env_id": "crafter", "size": 64},
    "dynamics": {"d_model": 32, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1, "num_registers": 1,
                 "max_time": 8, "sample_steps": 2},
    "agent": {"d_model": 32, "num_layers": 1, "num_heads": 2, "max_time": 8, "mlp_hidden": 32, "head_hidden": 32},
}


# held-out figures as phase 1 stores them: this (untrained) world model is worse than copy-last at h2
PHASE1_EVAL = {"open_loop_mse_h1": 0.05, "copy_last_mse_h1": 0.06, "open_loop_mse_h2": 0.09, "copy_last_mse_h2": 0.07,
               "action_shuffle_ratio": 1.02}


def _config(tmp: Path, tokenizer_dir: Path | None, env_id: str) -> Config:
    cfg = Config(run="v", device="cpu", checkpoint_root=str(tmp / "ckpt"))
    for section, values in SETS.items():
        setattr(cfg, section, dataclasses.replace(getattr(cfg, section), **values))
    cfg.env = dataclasses.replace(cfg.env, env_id=env_id)
    if tokenizer_dir is not None:
        cfg.tokenizer = dataclasses.replace(cfg.tokenizer, pretrained=str(tokenizer_dir))
    cfg.data = dataclasses.replace(cfg.data, episodes_dir=str(tmp / "eps"), cache_dir=str(tmp / "cache"),
                                   val_fraction=0.34, collect=False)
    return cfg


def save_tokenizer(folder: Path, S: int) -> Path:
    """A tiny Cosmos autoencoder with temporal compression S, saved like phase 0 saves a fitted one."""
    from diffusers import AutoencoderKLCosmos

    from dreamer.tokenizer.cosmos import PRESETS

    torch.manual_seed(1)
    AutoencoderKLCosmos(**{**PRESETS["tiny"], "temporal_compression_ratio": S}).save_pretrained(str(folder))
    return folder


def minecraft_episode(T: int, seed: int) -> Episode:
    rng = np.random.default_rng(seed)
    acts = np.stack([rng.integers(0, c, size=T) for c in MINERL_V04.cards], 1).astype(np.int64)
    frames = rng.integers(0, 256, size=(T + 1, 64, 64, 3), dtype=np.uint8)
    return Episode(frames, acts, rng.normal(size=T).astype(np.float32), False, True, MINERL_V04.space, {},
                   {"env_id": "minerl", "fps": 20})


def make_run(tmp: Path, S: int | None = None, minecraft: bool = False) -> dict:
    """Episodes, cache and checkpoints under ``tmp``; S=None: the tiny preset (S=8), else a saved folder."""
    tok_dir = save_tokenizer(tmp / "tokenizer", S) if S is not None else None
    cfg = _config(tmp, tok_dir, "minerl" if minecraft else "crafter")
    tokenizer = CosmosTokenizerWrapper(cfg=cfg.tokenizer)
    s = tokenizer.S
    paths = []
    for i in range(3):  # 4..6 latent steps each, whatever S
        T = s * (3 + i) + 1
        ep = minecraft_episode(T, i) if minecraft else make_episode(T=T, seed=i, terminated=i == 0)
        paths.append(save_episode(tmp / "eps" / f"ep{i}.npz", ep))
    cache = build_cache(paths, tokenizer, tmp / "cache", val_fraction=0.34, frame_size=64)
    from dreamer.data.cache import LatentCache

    cache = LatentCache(cache)
    torch.manual_seed(0)
    cards = list(cache.action_space.cards)
    dynamics = DynamicsModel(cfg.dynamics, tokenizer.num_tokens, tokenizer.channels, cards, s)
    agent = Agent(cfg.agent, tokenizer.num_tokens, tokenizer.channels, cards, s)
    run = cfg.run_dir
    info = data_info(cache)
    atomic_save(payload(cfg, 1, {"dynamics": dynamics}, data_info=info, extra={"phase": 1, "eval": PHASE1_EVAL}),
                run / "phase1_cosmos_final.pt")
    atomic_save(payload(cfg, 1, {"dynamics": dynamics, "agent": agent}, data_info=info, extra={"phase": 2}),
                run / "phase2_final.pt")
    return {"tmp": tmp, "cfg": cfg, "S": s, "phase1": run / "phase1_cosmos_final.pt",
            "phase2": run / "phase2_final.pt", "tokenizer_dir": tok_dir, "cache": cache}
