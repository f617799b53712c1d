"""A saved agent, evaluated in the real environment or loaded to act (docs/agent.md, "A saved agent").

    python -m dreamer.evaluate --checkpoint checkpoints/crafter_tiny/phase3_final.pt [--episodes 30]
        [--seed 10000] [--greedy] [--video] [--out results.json] [--set key=value]

plays the checkpoint's agent next to the uniform random policy and the frame-blind one (the data's action
frequencies, when the checkpoint or its run carries them) on seeds seed + i, prints the comparison table
and writes it as JSON (default ``<checkpoint>.evaluate.json`` beside the checkpoint) and as a bar chart (``.png``); ``--video`` also
writes the agent's first episode as an mp4. In Python, three lines act in a gymnasium env::

    agent = dreamer.load_agent("checkpoints/crafter_tiny/phase3_final.pt")   # tokenizer, agent, normalisation
    env = agent.make_env(); obs, info = env.reset(seed=10000); agent.reset(seed=10000)
    obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))  # once per env step

Everything comes from the checkpoint: the config it was trained with (``--set`` on top), the latent
statistics, the action space and the chunk length; the latent cache is not needed. The tokenizer is rebuilt
from the config and must match the checkpoint's identity (a fitted one: its folder, ``tokenizer.pretrained``).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dreamer.agent import Agent
from dreamer.agent.acting import AgentPolicy, run_agent_episodes
from dreamer.atomic import atomic_write_bytes
from dreamer.config import Config
from dreamer.data.episode import ActionSpace
from dreamer.envs.evaluation import (
    checked_action_space,
    comparison_table,
    run_frequency_episodes,
    run_random_episodes,
    save_comparison_chart,
    summarise,
    with_max_steps,
)
from dreamer.envs.gym_env import make_env
from dreamer.pipeline.build import build_agent, frozen
from dreamer.pipeline.evaluate import eval_context
from dreamer.training.checkpoint import CheckpointError, load_checkpoint
from dreamer.training.runtime import pick_device

log = logging.getLogger(__name__)


@dataclass
class CheckpointData:
    """What the models take from the data, read from a checkpoint instead of the latent cache."""

    action_space: ActionSpace
    chunk_len: int
    mean: np.ndarray  # (C,) latent statistics the agent was trained with
    std: np.ndarray  # (C,)


@dataclass
class LoadedAgent:
    """A trained agent ready to act: ``reset(seed)`` per episode, then ``act(obs, info) -> env action`` each step
    (the frames it sees are encoded as in training; a ``crafter_state`` agent reads the PRIVILEGED ``info``)."""

    path: Path
    cfg: Config
    tokenizer: object
    agent: Agent
    data: CheckpointData
    phase: int
    action_counts: list[np.ndarray] | None = None  # the data's action frequencies (the frame-blind baseline)
    greedy: bool = False
    _policy: AgentPolicy | None = None

    @property
    def action_space(self):
        return checked_action_space(self.cfg.env, self.agent.action_cards)

    def make_env(self, seed: int | None = None):
        """The environment the agent was trained for (``cfg.env``)."""
        return make_env(self.cfg.env, seed)

    def reset(self, seed: int | None = None) -> None:
        """Start an episode: forget the history; ``seed`` seeds the action sampling."""
        if self._policy is None:
            self._policy = AgentPolicy(self.tokenizer, self.agent, self.data.mean, self.data.std, self.action_space,
                                       self.greedy, eval_context(self.cfg, self.agent.cfg))
        self._policy.reset(seed)

    def act(self, obs, info=None):
        """The env action for this step (decided once per chunk of S steps)."""
        if self._policy is None:
            self.reset()
        return self._policy(obs, info)

    def play(self, seeds: Sequence[int], max_steps: int | None = None) -> list[dict]:
        """One episode per seed, played together (:func:`dreamer.agent.acting.run_agent_episodes`)."""
        return run_agent_episodes(self.cfg.env, seeds, self.tokenizer, self.agent, self.data.mean, self.data.std,
                                  greedy=self.greedy, max_steps=max_steps or self.cfg.eval.max_steps,
                                  context=eval_context(self.cfg, self.agent.cfg),
                                  reset_workers=self.cfg.eval.reset_workers)


def load_agent(path: str | Path, overrides: Sequence[str] = (), device: str = "cpu",
               greedy: bool = False) -> LoadedAgent:
    """The agent of a phase-2 or phase-3 checkpoint, with its tokenizer and the checkpoint's normalisation."""
    from dreamer.viewer.load import checkpoint_tokenizer, config_for

    path = Path(path)
    ckpt = load_checkpoint(path)
    models = ckpt.get("models") or {}
    if "agent" not in models:
        raise CheckpointError(f"checkpoint {path} holds no agent (models {sorted(models)}); give a phase-2 or phase-3 "
                              "checkpoint (phase2_final.pt, phase3_final.pt)")
    for key in ("config", "latent_stats", "action_space", "chunk_len"):
        if key not in ckpt:
            raise CheckpointError(f"checkpoint {path} lacks '{key}': it was not written by a phase script")
    cfg = config_for(ckpt, (), list(overrides))
    dev = pick_device(device)
    tokenizer = checkpoint_tokenizer(ckpt, cfg, path, dev)
    data = CheckpointData(ActionSpace.from_dict(ckpt["action_space"]), int(ckpt["chunk_len"]),
                          np.asarray(ckpt["latent_stats"]["mean"], np.float32),
                          np.asarray(ckpt["latent_stats"]["std"], np.float32))
    agent = frozen(build_agent(cfg, tokenizer, data, dev, models["agent"]))
    return LoadedAgent(path, cfg, tokenizer, agent, data, int(ckpt.get("phase", 0)), _action_counts(ckpt, path, cfg),
                       greedy)


def _action_counts(ckpt: dict, path: Path, cfg: Config) -> list[np.ndarray] | None:
    """The data's action counts: the checkpoint's, its phase-2 checkpoint's, or the run's cache's; None if none."""
    if ckpt.get("action_counts"):
        return [np.asarray(c, np.int64) for c in ckpt["action_counts"]]
    p2 = ckpt.get("phase2_checkpoint")
    if p2 and Path(p2).is_file():
        try:
            counts = load_checkpoint(p2).get("action_counts")
            if counts:
                return [np.asarray(c, np.int64) for c in counts]
        except CheckpointError as e:
            log.warning("%s: %s", p2, e)
    manifest = Path(cfg.data.cache_dir) / "manifest.json"
    if manifest.is_file():
        from dreamer.agent.heldout import action_counts
        from dreamer.data.cache import LatentCache

        try:
            cache = LatentCache(cfg.data.cache_dir, expect_tokenizer=ckpt.get("tokenizer"))
            return action_counts(cache, cache.train_names)
        except Exception as e:  # noqa: BLE001 - a baseline, never a reason to fail the evaluation
            log.warning("the frame-blind baseline's action frequencies: %s", e)
    return None


def record_video(agent: LoadedAgent, seed: int, path: Path, max_steps: int) -> Path:
    """The agent's episode on ``seed`` as an mp4 (the env's frames)."""
    from dreamer.viewer.video import write_mp4

    env = make_env(with_max_steps(agent.cfg.env, max_steps))
    try:
        obs, info = env.reset(seed=seed)
        agent.reset(seed)
        frames, done = [np.asarray(obs)], False
        while not done:
            obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
            frames.append(np.asarray(obs))
            done = terminated or truncated
    finally:
        env.close()
    fps = 10.0
    return write_mp4(np.stack(frames), path, fps)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="phase2_final.pt or phase3_final.pt (or a periodic one)")
    p.add_argument("--episodes", type=int, default=30)
    p.add_argument("--seed", type=int, default=None, help="first seed (default the config's eval.seed, 10000)")
    p.add_argument("--greedy", action="store_true", help="the most likely action instead of sampling")
    p.add_argument("--video", action="store_true", help="also write the agent's first episode as an mp4")
    p.add_argument("--out", default=None, help="the JSON file (default <checkpoint>.evaluate.json)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config key")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    if args.episodes < 1:
        p.error("--episodes must be >= 1")
    agent = load_agent(args.checkpoint, args.set, args.device, args.greedy)
    cfg = agent.cfg
    seeds = [(cfg.eval.seed if args.seed is None else args.seed) + i for i in range(args.episodes)]
    name = {2: "bc", 3: "pmpo"}.get(agent.phase, "agent")
    if getattr(agent.tokenizer, "reads_info", False):
        log.info("tokenizer.kind=%s: the agent acts on the PRIVILEGED game state (a reference, not a pixel agent)",
                 cfg.tokenizer.kind)
    episodes = {"random": run_random_episodes(cfg.env, seeds, agent.agent.action_cards, cfg.eval.max_steps,
                                              reset_workers=cfg.eval.reset_workers)}
    if agent.action_counts is not None:
        episodes["frame_blind"] = run_frequency_episodes(cfg.env, seeds, agent.action_counts, cfg.eval.max_steps,
                                                         reset_workers=cfg.eval.reset_workers)
    else:
        log.warning("no action frequencies in %s, its run or its cache: the frame-blind baseline is left out",
                    args.checkpoint)
    with torch.no_grad():
        episodes[name] = agent.play(seeds)
    summaries = {k: summarise(v) for k, v in episodes.items()}
    out = {"checkpoint": str(Path(args.checkpoint).resolve()), "phase": agent.phase, "seeds": seeds,
           "max_steps": cfg.eval.max_steps, "greedy": args.greedy, "context": eval_context(cfg, agent.agent.cfg),
           "summaries": summaries, "episodes": episodes}
    target = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".evaluate.json")
    atomic_write_bytes(target, json.dumps(out, indent=1, default=float).encode())
    save_comparison_chart(summaries, target.with_suffix(".png"), Path(args.checkpoint).name)
    print(comparison_table(summaries))
    log.info("wrote %s", target)
    if args.video:
        log.info("wrote %s", record_video(agent, seeds[0], target.with_name(f"{Path(args.checkpoint).stem}_episode"
                                                                            f"{seeds[0]}.mp4"), cfg.eval.max_steps))
    return out


if __name__ == "__main__":
    from dreamer.errors import run_cli

    run_cli(main)
