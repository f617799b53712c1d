"""The one episode runner of the real-env evaluation (docs/design.md §6): every policy, baseline or agent, plays
through :func:`run_episodes`.

Episodes are played together in lockstep, one env each: the envs of a group of ``parallel`` seeds are reset (each
with its own seed, in ``reset_workers`` processes: :func:`reset_envs`), then every step asks the policy for one
action per running episode and steps each env; an episode that ends leaves the group. A policy is a small object
(:class:`BatchPolicy`) the runner drives; each episode draws from a random stream of its own, seeded by its seed,
so what it does does not depend on its neighbours or on ``parallel``. The per-episode result record
(:func:`episode_result`) and the progress bar are made here and nowhere else.

The policies: :class:`StepPolicies` (a step-level ``policy(obs, info) -> env action`` per episode: the uniform
random and frame-blind baselines, :func:`random_policy`, :func:`frame_blind_policy`, or the scripted teacher) and,
in :mod:`dreamer.agent.acting`, the trained agent (``AgentBatchPolicy``), which the model-exploitation check
wraps to record what it sees (:mod:`dreamer.imagination.exploitation`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from gymnasium import spaces

from dreamer.envs.config import EnvConfig
from dreamer.envs.gym_env import action_space_of, make_env
from dreamer.envs.policies import FrequencyPolicy, RandomPolicy

log = logging.getLogger(__name__)


class BatchPolicy:
    """What :func:`run_episodes` drives. In order: :meth:`begin` once, then per group of episodes :meth:`start`,
    and every env step :meth:`act`, :meth:`stepped` and :meth:`keep`; :meth:`end` once at the end (also after an
    error). Rows are the running episodes of the group, in the order of its seeds."""

    name: str = "policy"  # the progress bar's label
    cards: Sequence[int] | None = None  # the action components it acts with, checked against the env's; None: any

    def begin(self, space: spaces.Space) -> None:
        """Once, before any env is reset: the env's action space."""
        self.space = space

    def start(self, seeds: list[int]) -> None:
        """A new group: one episode per seed, each drawing from a random stream seeded by its seed."""
        raise NotImplementedError

    def act(self, observations: list, infos: list[dict]) -> list:
        """The current observation and info (the reset's first) of every running episode → one env action each."""
        raise NotImplementedError

    def stepped(self, rewards: list[float], observations: list, infos: list[dict]) -> None:
        """What the step just taken gave each running episode (the same rows as :meth:`act`)."""

    def keep(self, rows: list[int]) -> None:
        """Go on with the running episodes ``rows`` (indices into the current rows) only."""

    def end(self) -> None:
        """Once, after the last episode."""


class StepPolicies(BatchPolicy):
    """One step-level policy ``policy(obs, info) -> env action`` per episode, made by ``make(space)`` and reset with
    the episode's seed (``reset(seed)``, when it has one). ``make`` is called once in :meth:`begin` too, so a
    policy that cannot be made fails before any env is reset."""

    def __init__(self, make: Callable[[spaces.Space], Callable], name: str = "policy",
                 cards: Sequence[int] | None = None):
        self.make, self.name, self.cards = make, name, None if cards is None else [int(c) for c in cards]
        self.policies: list[Callable] = []

    def begin(self, space: spaces.Space) -> None:
        super().begin(space)
        self.make(space)

    def start(self, seeds: list[int]) -> None:
        self.policies = []
        for seed in seeds:
            policy = self.make(self.space)
            if hasattr(policy, "reset"):
                policy.reset(seed)
            self.policies.append(policy)

    def act(self, observations: list, infos: list[dict]) -> list:
        return [p(o, i) for p, o, i in zip(self.policies, observations, infos)]

    def keep(self, rows: list[int]) -> None:
        self.policies = [self.policies[r] for r in rows]


def random_policy(cards: Sequence[int] | None = None) -> StepPolicies:
    """The uniform random baseline (``random``); ``cards``, when given, must be the env's action components."""
    return StepPolicies(RandomPolicy, "random", cards)


def frame_blind_policy(counts: Sequence[np.ndarray]) -> StepPolicies:
    """The frame-blind baseline (``frame_blind``): each action component drawn from the data's action counts
    (:class:`FrequencyPolicy`), never looking at a frame."""
    counts = [np.asarray(c) for c in counts]
    return StepPolicies(lambda space: FrequencyPolicy(counts, space), "frame_blind", [len(c) for c in counts])


def unlocked(achievements) -> set[str]:
    """The achievement names unlocked: a list of names, or a dict name → count where a count > 0 means unlocked."""
    if isinstance(achievements, dict):
        return {str(k) for k, v in achievements.items() if v > 0}
    return {str(k) for k in achievements}


def episode_result(total_return: float, length: int, info: dict | None = None, **extra) -> dict:
    """The per-episode result record: ``return``, ``length`` and ``extra`` (the runner's: ``seed``,
    ``terminated``, ``truncated``); for Crafter the ``achievements`` unlocked and the ``death_cause``, read from
    the final ``info``."""
    res = {"return": float(total_return), "length": int(length), **extra}
    if info is not None and "achievements" in info:
        res["achievements"] = sorted(unlocked(info["achievements"]))
    if info is not None and "death_cause" in info:
        res["death_cause"] = str(info["death_cause"])
    return res


def _reset_one(env_cfg: EnvConfig, seed: int) -> tuple:
    env = make_env(env_cfg)
    obs, info = env.reset(seed=seed)
    return env, obs, info


def reset_envs(env_cfg: EnvConfig, seeds: Sequence[int], workers: int = 1) -> list[tuple]:
    """(env, first observation, info) for each seed, one env each. With ``workers`` > 1 the resets run in
    that many processes and the reset envs come back pickled: Crafter generates its world in pure Python,
    about a second per episode, which is most of an evaluation's time on a CPU."""
    seeds = [int(s) for s in seeds]
    if workers <= 1 or len(seeds) < 2:
        return [_reset_one(env_cfg, s) for s in seeds]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(min(workers, len(seeds)), mp_context=mp.get_context("spawn")) as pool:
        return list(pool.map(_reset_one, [env_cfg] * len(seeds), seeds))


def with_max_steps(env_cfg, max_steps: int | None):
    """``env_cfg`` with its episode limit set to ``max_steps`` (unchanged when None)."""
    if max_steps is None or max_steps == env_cfg.max_steps:
        return env_cfg
    return dataclasses.replace(env_cfg, max_steps=int(max_steps))


def checked_action_space(env_cfg, cards: Sequence[int] | None) -> spaces.Space:
    """The env's action space (built once to look), checked against ``cards`` when given."""
    env = make_env(env_cfg)
    try:
        space = env.action_space
        if cards is not None and tuple(action_space_of(env).cards) != tuple(int(c) for c in cards):
            raise ValueError(f"env {env_cfg.env_id}: action cardinalities {list(action_space_of(env).cards)} "
                             f"differ from the agent's {list(cards)}")
    finally:
        env.close()
    return space


def run_episodes(env_cfg: EnvConfig, seeds: Iterable[int], policy: BatchPolicy, max_steps: int | None = None,
                 parallel: int = 32, reset_workers: int = 1, progress: bool = False) -> list[dict]:
    """One episode of ``policy`` per seed (env reset with it), at most ``max_steps`` env steps (default
    ``env_cfg.max_steps``), up to ``parallel`` at once in lockstep, their envs reset in ``reset_workers``
    processes. Returns one :func:`episode_result` per seed, in the order of ``seeds``: seed, return, length,
    terminated, truncated (+ Crafter's achievements and death cause)."""
    if parallel < 1:
        raise ValueError(f"run_episodes: parallel={parallel} must be >= 1")
    env_cfg = with_max_steps(env_cfg, max_steps)
    seeds = [int(s) for s in seeds]
    space = checked_action_space(env_cfg, policy.cards)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(seeds), desc=f"episodes {env_cfg.env_id} ({policy.name})", disable=None)  # a terminal
    results: list[dict] = []
    policy.begin(space)
    try:
        for i in range(0, len(seeds), parallel):
            results += _play_group(env_cfg, seeds[i : i + parallel], policy, reset_workers, bar)
    finally:
        policy.end()
        if bar is not None:
            bar.close()
    return results


def _play_group(env_cfg: EnvConfig, seeds: list[int], policy: BatchPolicy, reset_workers: int, bar) -> list[dict]:
    started = reset_envs(env_cfg, seeds, reset_workers)
    envs, obs, infos = [e for e, *_ in started], [o for _, o, _ in started], [i for *_, i in started]
    try:
        policy.start(seeds)
        totals, steps, results = [0.0] * len(seeds), [0] * len(seeds), [None] * len(seeds)
        running = list(range(len(seeds)))
        while running:
            actions = policy.act([obs[e] for e in running], [infos[e] for e in running])
            rewards, still = [], []
            for row, e in enumerate(running):
                obs[e], reward, term, trunc, infos[e] = envs[e].step(actions[row])
                totals[e] += float(reward)
                steps[e] += 1
                rewards.append(float(reward))
                if term or trunc:
                    results[e] = episode_result(totals[e], steps[e], infos[e], seed=seeds[e], terminated=term,
                                                truncated=trunc)
                    log.debug("%s, seed %d: return %.2f length %d", policy.name, seeds[e], totals[e], steps[e])
                    if bar is not None:
                        bar.update(1)
                else:
                    still.append(row)
            policy.stepped(rewards, [obs[e] for e in running], [infos[e] for e in running])
            policy.keep(still)
            running = [running[row] for row in still]
        return results
    finally:
        for env in envs:
            env.close()
