"""Collect episodes with a behaviour policy and write one ``ep_XXXXXX.npz`` per episode (docs/design.md §1).

Resumable: files already on disk are skipped (writes are atomic, so an existing file is complete).
Episode i is reset with seed ``collect_cfg.seed + i``; frames are stored, so that reading a dataset needs no game
(the Crafter adapter replays an episode from its seed and actions, but episodes collected before it did would not).

Crafter extras, aligned with the frames (T+1 rows):
  inventory int32 (T+1, 16), names in meta["inventory_names"];
  achievements int32 (T+1, 22) cumulative counts, names in meta["achievement_names"];
  ignore_action bool (T+1,): entry t is True when the game ignores the action taken at o_t because the
  player sleeps (mask those labels in behaviour cloning); the last entry is False;
  facing int8 (T+1, 2): the direction the player faces (world dx, dy);
  local_view int16 (T+1, 9, 7): semantic ids of the world cells the frame shows (x − 4 … x + 4,
  y − 3 … y + 3 around the player at x, y; 0 outside the world), ids as crafter_env.semantic_ids();
  daylight float32 (T+1,): the game's daylight in [0, 1] (1 = noon; the frame darkens below 1);
  sleeping bool (T+1,): the player sleeps (the frame is drawn grey and dark).
  facing, local_view and inventory are the ground truth of the latent state probes (diagnostics/probe.py);
  with daylight and sleeping they are what the crafter_state tokenizer encodes
  (dreamer/tokenizer/crafter_state.py; episodes collected before daylight and sleeping were recorded must be
  collected again for it). All five come from crafter_env.state_arrays, as acting with that tokenizer does.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
from gymnasium import spaces

from dreamer.data.episode import Episode, load_episode, save_episode
from dreamer.envs.config import CollectConfig, EnvConfig
from dreamer.envs.crafter_env import CRAFTER_FPS, crafter_names, state_arrays
from dreamer.envs.evaluation import summarise
from dreamer.envs.gym_env import action_space_of, action_to_components, make_env
from dreamer.envs.policies import RandomPolicy
from dreamer.envs.scripted_crafter import ScriptedCrafterPolicy
from dreamer.errors import ConfigError

log = logging.getLogger(__name__)


def make_policy(env_cfg: EnvConfig, collect_cfg: CollectConfig, action_space: spaces.Space):
    """The behaviour policy named by ``collect_cfg.policy`` ("scripted" is Crafter only)."""
    if collect_cfg.policy == "random":
        return RandomPolicy(action_space, seed=collect_cfg.seed)
    if collect_cfg.policy == "scripted":
        if not env_cfg.is_crafter:
            raise ConfigError(f"collect.policy='scripted' exists for Crafter only, not env_id={env_cfg.env_id!r}")
        return ScriptedCrafterPolicy(epsilon=collect_cfg.epsilon, seed=collect_cfg.seed)
    raise ConfigError(f"collect.policy={collect_cfg.policy!r} is not a known policy")


def episode_path(out_dir: str | Path, index: int) -> Path:
    return Path(out_dir) / f"ep_{index:06d}.npz"


def source_name(env_cfg: EnvConfig, collect_cfg: CollectConfig) -> str:
    """E.g. "crafter-scripted-eps0.2" or "crafter-random"."""
    src = f"{env_cfg.env_id.lower()}-{collect_cfg.policy}"
    return src + (f"-eps{collect_cfg.epsilon:g}" if collect_cfg.policy == "scripted" else "")


def rollout(env, policy, seed: int, env_cfg: EnvConfig, collect_cfg: CollectConfig, index: int = 0) -> Episode:
    """Play one episode from ``env.reset(seed=seed)`` and return it (not yet saved)."""
    space = action_space_of(env)
    crafter = env_cfg.is_crafter
    names = crafter_names() if crafter else None
    obs, info = env.reset(seed=seed)
    if hasattr(policy, "reset"):
        policy.reset(seed)
    frames, actions, rewards, infos = [obs], [], [], [info]
    term = trunc = False
    while not (term or trunc):
        action = policy(obs, info)
        obs, reward, term, trunc, info = env.step(action)
        frames.append(obs)
        actions.append(action_to_components(action, env.action_space))
        rewards.append(reward)
        infos.append(info)
    meta = {
        "env_id": env_cfg.env_id,
        "fps": CRAFTER_FPS if crafter else env.metadata.get("render_fps"),
        "source": source_name(env_cfg, collect_cfg),
        "seed": int(seed),
        "episode_index": int(index),
        "policy": collect_cfg.policy,
        "epsilon": collect_cfg.epsilon if collect_cfg.policy == "scripted" else None,
        "max_steps": env_cfg.max_steps,
        "size": env_cfg.size,
    }
    extras = {}
    if crafter:
        inv, ach = names["inventory"], names["achievements"]
        state = state_arrays(infos)  # the conversion acting with the state tokenizer uses too
        extras["inventory"] = state["inventory"]
        extras["achievements"] = np.array([[i["achievements"][k] for k in ach] for i in infos], dtype=np.int32)
        ignore = np.array([i["ignores_action"] for i in infos], dtype=bool)
        ignore[-1] = False  # no action is taken at the last frame
        extras["ignore_action"] = ignore
        extras.update(facing=state["facing"], local_view=state["local_view"], daylight=state["daylight"],
                      sleeping=state["sleeping"])
        meta.update(inventory_names=list(inv), achievement_names=list(ach), action_names=list(names["actions"]))
    return Episode(
        frames=np.stack(frames).astype(np.uint8),
        actions=np.stack(actions).astype(np.int64).reshape(len(actions), space.dims),
        rewards=np.asarray(rewards, dtype=np.float32),
        terminated=bool(term),
        truncated=bool(trunc),
        action_space=space,
        extras=extras,
        meta=meta,
    )


def collect_episodes(env_cfg: EnvConfig, collect_cfg: CollectConfig, out_dir: str | Path, progress: bool = True) -> list[Path]:
    """Write episodes 0 … num_episodes−1 to ``out_dir`` (skipping existing files); return all their paths.

    With ``collect_cfg.workers`` > 1 the missing episodes are shared out over that many processes.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [episode_path(out_dir, i) for i in range(collect_cfg.num_episodes)]
    todo = [i for i, p in enumerate(paths) if not p.exists()]
    if len(todo) < len(paths):
        log.info("%s: %d of %d episodes already on disk, skipped", out_dir, len(paths) - len(todo), len(paths))
    if not todo:
        return paths
    workers = min(collect_cfg.workers, len(todo))
    if workers == 1:
        _collect_some(env_cfg, collect_cfg, out_dir, todo, progress)
        return paths
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # no forked copies of a parent's torch threads
    with ctx.Pool(workers) as pool:
        jobs = [pool.apply_async(_collect_some, (env_cfg, collect_cfg, out_dir, todo[w::workers], progress and w == 0))
                for w in range(workers)]
        for job in jobs:
            job.get()  # re-raises a worker's error here
    return paths


def _collect_some(env_cfg: EnvConfig, collect_cfg: CollectConfig, out_dir: Path, indices: list[int],
                  progress: bool) -> None:
    """Play and save the episodes ``indices`` with one env (one worker's share)."""
    env = make_env(env_cfg)
    try:
        policy = make_policy(env_cfg, collect_cfg, env.action_space)
        it = indices
        if progress:
            from tqdm import tqdm

            it = tqdm(indices, desc=f"collect {source_name(env_cfg, collect_cfg)}", disable=None)  # a terminal only
        for i in it:
            ep = rollout(env, policy, collect_cfg.seed + i, env_cfg, collect_cfg, index=i)
            save_episode(episode_path(out_dir, i), ep)
            log.debug("wrote %s: %d steps, return %.2f", episode_path(out_dir, i), ep.num_steps, float(ep.rewards.sum()))
    finally:
        env.close()


def result_of_episode(ep: Episode) -> dict:
    """The evaluation result of a stored episode (achievements from the Crafter extras, if any)."""
    res = {"return": float(ep.rewards.sum()), "length": ep.num_steps}
    if "achievements" in ep.extras and "achievement_names" in ep.meta:
        last = ep.extras["achievements"][-1]
        res["achievements"] = [n for n, c in zip(ep.meta["achievement_names"], last) if c > 0]
    return res


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description="Collect episodes with a scripted or random policy.")
    p.add_argument("--out", required=True, help="output folder for ep_XXXXXX.npz files")
    p.add_argument("--episodes", type=int, required=True)
    p.add_argument("--policy", default="scripted", choices=("scripted", "random"))
    p.add_argument("--epsilon", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="parallel processes")
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--env-id", default="crafter")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    env_cfg = EnvConfig(env_id=a.env_id, size=a.size, max_steps=a.max_steps)
    collect_cfg = CollectConfig(num_episodes=a.episodes, policy=a.policy, epsilon=a.epsilon, seed=a.seed,
                                workers=a.workers)
    paths = collect_episodes(env_cfg, collect_cfg, a.out, progress=not a.no_progress)
    eps = [load_episode(path) for path in paths]
    summary = summarise([result_of_episode(e) for e in eps]) if eps else {"episodes": 0}
    summary["frames"] = int(sum(e.frames.shape[0] for e in eps))
    log.info("collected %s", json.dumps(summary, sort_keys=True))
    return summary


if __name__ == "__main__":
    from dreamer.errors import run_cli

    run_cli(main)
