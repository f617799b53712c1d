"""A saved agent, evaluated in the real environment or loaded to act (docs/agent.md, "A saved agent").

    python -m dreamer.evaluate --checkpoint checkpoints/crafter_tiny/phase3_final.pt [--episodes 30]
        [--seed 10000] [--greedy] [--video] [--out results.json] [--set key=value]

plays the checkpoint's agent next to the uniform random policy and the frame-blind one (the data's action
frequencies, when the checkpoint or its run carries them) on seeds seed + i, prints the comparison table
and writes it as JSON in the schema of every evaluation (:mod:`dreamer.envs.records`; default
``<checkpoint>.evaluate.json`` beside the checkpoint) and as a bar chart (``.png``); ``--video`` also writes the
agent's first episode as an mp4. In Python, three lines act in a gymnasium env::

    agent = dreamer.load_agent("checkpoints/crafter_tiny/phase3_final.pt")   # tokenizer, agent, normalisation
    env = agent.make_env(); obs, info = env.reset(seed=10000); agent.reset(seed=10000)
    obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))  # once per env step

Everything comes from the checkpoint: the config it was trained with (``--set`` on top), the latent
statistics, the action space and the chunk length; the latent cache is not needed. The tokenizer is rebuilt
from the config and must match the checkpoint's identity (a fitted one: its folder, ``tokenizer.pretrained``).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dreamer.agent import Agent
from dreamer.agent.acting import AgentBatchPolicy, AgentPolicy
from dreamer.atomic import atomic_write_bytes
from dreamer.config import Config
from dreamer.data.episode import ActionSpace
from dreamer.envs.evaluation import comparison_table, save_comparison_chart
from dreamer.envs.gym_env import make_env
from dreamer.envs.records import eval_json, eval_record
from dreamer.envs.runner import checked_action_space, frame_blind_policy, random_policy, run_episodes
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

    def batch_policy(self, name: str = "agent") -> AgentBatchPolicy:
        """The agent as the episode runner's policy (:func:`dreamer.envs.runner.run_episodes`)."""
        return AgentBatchPolicy(self.tokenizer, self.agent, self.data.mean, self.data.std, self.greedy,
                                eval_context(self.cfg, self.agent.cfg), name)

    def play(self, seeds: Sequence[int], max_steps: int | None = None, name: str = "agent") -> list[dict]:
        """One episode per seed, played together through the episode runner."""
        return run_episodes(self.cfg.env, seeds, self.batch_policy(name), max_steps or self.cfg.eval.max_steps,
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


class Filmed(AgentBatchPolicy):
    """The agent's runner policy keeping the frames of its episode (one at a time: ``parallel=1``)."""

    def start(self, seeds: list[int]) -> None:
        super().start(seeds)
        self.frames: list[np.ndarray] = []

    def act(self, observations: list, infos: list[dict]) -> list:
        if not self.frames:  # the reset's frame
            self.frames.append(np.asarray(observations[0]))
        return super().act(observations, infos)

    def stepped(self, rewards: list[float], observations: list, infos: list[dict]) -> None:
        self.frames.append(np.asarray(observations[0]))


def record_video(agent: LoadedAgent, seed: int, path: Path, max_steps: int) -> Path:
    """The agent's episode on ``seed`` as an mp4 (the env's frames), played as the evaluation plays it."""
    from dreamer.viewer.video import write_mp4

    film = Filmed(agent.tokenizer, agent.agent, agent.data.mean, agent.data.std, agent.greedy,
                  eval_context(agent.cfg, agent.agent.cfg), "video")
    run_episodes(agent.cfg.env, [seed], film, max_steps, parallel=1)
    fps = 10.0
    return write_mp4(np.stack(film.frames), path, fps)


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
    policies = {"random": random_policy(agent.agent.action_cards)}
    if agent.action_counts is not None:
        policies["frame_blind"] = frame_blind_policy(agent.action_counts)
    else:
        log.warning("no action frequencies in %s, its run or its cache: the frame-blind baseline is left out",
                    args.checkpoint)
    policies[name] = agent.batch_policy(name)
    t0 = time.perf_counter()
    with torch.no_grad():
        episodes = {k: run_episodes(cfg.env, seeds, p, cfg.eval.max_steps, reset_workers=cfg.eval.reset_workers)
                    for k, p in policies.items()}
    out = eval_record(agent.phase, seeds, cfg.eval.max_steps, eval_context(cfg, agent.agent.cfg), args.greedy,
                      time.perf_counter() - t0, episodes, checkpoint=str(Path(args.checkpoint).resolve()))
    target = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".evaluate.json")
    atomic_write_bytes(target, eval_json(out))
    save_comparison_chart(out["summaries"], target.with_suffix(".png"), Path(args.checkpoint).name)
    print(comparison_table(out["summaries"]))
    log.info("wrote %s", target)
    if args.video:
        log.info("wrote %s", record_video(agent, seeds[0], target.with_name(f"{Path(args.checkpoint).stem}_episode"
                                                                            f"{seeds[0]}.mp4"), cfg.eval.max_steps))
    return out


if __name__ == "__main__":
    from dreamer.errors import run_cli

    run_cli(main)
