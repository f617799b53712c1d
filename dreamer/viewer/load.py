"""A trained world model, ready to watch: models, tokenizer and latent cache from one checkpoint.

:func:`models_from_checkpoint` is the one place the viewers build models from a checkpoint payload;
:func:`load_world` adds the config, the tokenizer and the latent cache around it, and refuses a
checkpoint of the wrong kind, a missing tokenizer folder or cache, and a checkpoint that does not fit
the cache, each with an error naming what is wrong.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from dreamer.agent import Agent, AgentConfig
from dreamer.config import Config, from_saved, load
from dreamer.data.cache import LatentCache
from dreamer.data.episode import ActionSpace
from dreamer.dynamics import DynamicsConfig, DynamicsModel
from dreamer.errors import PathKindError, UserError
from dreamer.pipeline.build import build_agent, build_dynamics, frozen
from dreamer.pipeline.checkpoints import FINAL, phase1_eval
from dreamer.presets import from_dict
from dreamer.tokenizer import CosmosTokenizerWrapper, build_tokenizer
from dreamer.training.checkpoint import CheckpointMismatchError, check_compatible, load_checkpoint
from dreamer.training.runtime import pick_device

log = logging.getLogger(__name__)
FINALS = " or ".join(FINAL[p] for p in (1, 2, 3))


class CheckpointKindError(UserError, ValueError):
    """The file is a checkpoint, but not one holding a world model (and, when needed, an agent)."""


@dataclass
class World:
    """Everything the viewers need; ``agent`` is None for a phase-1 (dynamics only) checkpoint."""

    path: Path
    cfg: Config
    tokenizer: CosmosTokenizerWrapper  # or the crafter_state reference (same interface)
    cache: LatentCache
    dynamics: DynamicsModel
    agent: Agent | None
    device: torch.device
    # The world model's held-out figures (phase 1's final eval: open-loop error against copy-last per horizon,
    # action-shuffle ratio), from the checkpoint when it is phase 1's, else from the run folder's phase-1 final.
    dynamics_eval: dict | None = None

    @property
    def S(self) -> int:
        return self.cache.chunk_len

    @property
    def action_space(self) -> ActionSpace:
        return self.cache.action_space


def world_arguments(description: str) -> argparse.ArgumentParser:
    """The command line both viewers share: the checkpoint, the config it is read with, device and seed."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help=f"one of {FINALS}")
    p.add_argument("--config", action="append", default=[], help="YAML preset instead of the checkpoint's config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config key")
    p.add_argument("--context", type=int, default=2, help="real latent steps the dream starts from")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    return p


def check_kind(ckpt: dict, path: Path, need_agent: bool = False) -> None:
    models = ckpt.get("models") if isinstance(ckpt, dict) else None
    if not isinstance(models, dict) or "dynamics" not in models or "config" not in ckpt:
        found = sorted(models) if isinstance(models, dict) else sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt)
        raise CheckpointKindError(f"checkpoint {path} holds no world model (found {found}, no models['dynamics']); "
                                  f"pass a phase-1/2/3 checkpoint ({FINALS})")
    if need_agent and "agent" not in models:
        raise CheckpointKindError(f"checkpoint {path} holds no agent (models {sorted(models)}); pass a phase-2 or "
                                  f"phase-3 checkpoint ({FINAL[2]}, {FINAL[3]})")


def config_for(ckpt: dict, configs: Sequence[str] = (), overrides: Sequence[str] = ()) -> Config:
    """The checkpoint's saved config (an older layout's moved keys read under their new names,
    :func:`dreamer.config.from_saved`), or the given presets instead; ``--set`` overrides on top. The
    dynamics and agent configs are always the checkpoint's (they must match its weights)."""
    if configs:
        cfg = load(list(configs), list(overrides))
    else:
        cfg = from_saved(ckpt["config"], list(overrides))
    cfg.dynamics = from_dict(DynamicsConfig, ckpt["config"]["dynamics"], "dynamics")
    cfg.agent = from_dict(AgentConfig, ckpt["config"]["agent"], "agent")
    return cfg


def models_from_checkpoint(ckpt: dict, cfg: Config, tokenizer, cache,
                           device: torch.device | str = "cpu") -> tuple[DynamicsModel, Agent | None]:
    """Dynamics (and the agent, when the checkpoint holds one) with the checkpoint's weights, in eval mode,
    frozen, on ``device``; built by :mod:`dreamer.pipeline.build` from the tokenizer's and cache's sizes."""
    dynamics = frozen(build_dynamics(cfg, tokenizer, cache, device, ckpt["models"]["dynamics"]))
    agent = None
    if "agent" in ckpt["models"]:
        agent = frozen(build_agent(cfg, tokenizer, cache, device, ckpt["models"]["agent"]))
    return dynamics, agent


def checkpoint_tokenizer(ckpt: dict, cfg: Config, path: Path, device) -> CosmosTokenizerWrapper:
    """The tokenizer of ``cfg`` on ``device``, refused unless it is the one the checkpoint was trained on."""
    try:
        tokenizer = build_tokenizer(cfg.tokenizer).to(device)
    except FileNotFoundError as e:
        raise PathKindError(f"checkpoint {path}: its tokenizer is missing: {e}. Point "
                            "--set tokenizer.pretrained=<folder> at the tokenizer it was trained with") from e
    if ckpt.get("tokenizer") is not None and ckpt["tokenizer"] != tokenizer.identity():
        raise CheckpointMismatchError(
            f"checkpoint {path} was trained on latents of another tokenizer than tokenizer.kind={cfg.tokenizer.kind!r} "
            f"preset="
            f"{cfg.tokenizer.preset!r} pretrained={cfg.tokenizer.pretrained!r} resolution={cfg.tokenizer.resolution} "
            f"pool={cfg.tokenizer.pool} gives; pass the config it was trained with (--config / --set tokenizer.*)")
    return tokenizer


def load_world(path: str | Path, configs: Sequence[str] = (), overrides: Sequence[str] = (), device: str = "auto",
               need_agent: bool = False) -> World:
    """Checkpoint → :class:`World` (tokenizer and cache from the checkpoint's config unless overridden)."""
    path = Path(path)
    ckpt = load_checkpoint(path)
    check_kind(ckpt, path, need_agent)
    cfg = config_for(ckpt, configs, overrides)
    dev = pick_device(device)
    tokenizer = checkpoint_tokenizer(ckpt, cfg, path, dev)
    try:
        cache = LatentCache(cfg.data.cache_dir, expect_tokenizer=tokenizer.identity())
    except FileNotFoundError as e:
        raise PathKindError(f"{e}. The viewers start from real latents of data.cache_dir; run the phase "
                                "scripts first or pass --set data.cache_dir=<folder>") from e
    check_compatible(ckpt, cache, path)
    dynamics, agent = models_from_checkpoint(ckpt, cfg, tokenizer, cache, dev)
    log.info("%s: phase %s, S=%d, N=%d, C=%d, actions %s, agent %s", path, ckpt.get("phase", "?"), cache.chunk_len,
             tokenizer.num_tokens, tokenizer.channels, list(cache.action_space.cards), agent is not None)
    return World(path, cfg, tokenizer, cache, dynamics, agent, dev, phase1_eval(ckpt, path))

