"""Acting in the real environment with a trained agent (SPEC section 6, "acting in the real env").

The agent decides once per chunk: at each chunk boundary k (after S·k env steps) the frames seen so
far are encoded into latent k with :meth:`CosmosTokenizerWrapper.encode_latent` (the windowing of
:func:`latent_window`, the one the cache uses), rounded through float16 as the cache stores it,
standardised with the cache statistics, and trunk + policy on the latent history give a chunk of S
actions. The next S env steps execute that chunk; an episode that ends mid-chunk just stops.

Only the frames of the current tokenizer window are kept (at most S·m + 1), so memory and the cost
per chunk do not grow with the episode.

Episodes are played by :func:`dreamer.envs.evaluation.run_policy_episodes` (one runner for every
policy compared): per-episode dicts with seed, return, length, terminated, truncated (+ Crafter
achievements), the input of :func:`dreamer.envs.evaluation.summarise`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Sequence

import numpy as np
import torch
from gymnasium import spaces

from dreamer.tokenizer.cosmos import latent_window

from .model import Agent

log = logging.getLogger(__name__)


def to_env_action(action_d: np.ndarray, space: spaces.Space):
    """A D-vector of component indices as the env expects it: an int for Discrete, an array otherwise."""
    a = np.asarray(action_d, dtype=np.int64).reshape(-1)
    if isinstance(space, spaces.Discrete):
        if a.shape[0] != 1:
            raise ValueError(f"a Discrete env takes one action component, got {a.shape[0]}: {a.tolist()}")
        return int(a[0]) + int(space.start)
    if isinstance(space, spaces.MultiDiscrete):
        return a + np.asarray(space.start, dtype=np.int64).reshape(-1)
    if isinstance(space, spaces.MultiBinary):
        return a.astype(np.int8)
    raise ValueError(f"unsupported action space {space}: expected Discrete, MultiDiscrete or MultiBinary")


class ChunkActor:
    """Step-level actor: ``reset(first_obs=None)``, then ``act(obs) -> action_d`` (int64 (D,)) every step.

    ``obs`` is the current observation (H, W, 3) uint8; the first ``act`` after ``reset`` gets the
    frame given to ``reset`` (or, when ``reset()`` had none, the episode's first frame). ``mean``/``std`` (C,) are the cache's latent statistics. ``context`` is
    the number of latent steps the trunk sees (default ``agent.cfg.max_time``). ``greedy`` takes the
    most likely action, otherwise the chunk is sampled with ``generator`` (on the agent's device).
    After acting, ``history`` holds the standardised latents (N, C) of the last ``context`` chunks.
    """

    def __init__(self, tokenizer, agent: Agent, mean, std, greedy: bool = False,
                 generator: torch.Generator | None = None, context: int | None = None):
        self.tokenizer, self.agent, self.greedy, self.generator = tokenizer, agent, greedy, generator
        self.S, self.m = int(tokenizer.S), int(tokenizer.cfg.window_latents)
        if agent.chunk_len != self.S:
            raise ValueError(f"agent chunk_len={agent.chunk_len} differs from the tokenizer's S={self.S}")
        self.device = next(agent.parameters()).device
        self.mean = torch.as_tensor(np.asarray(mean, dtype=np.float32), device=self.device)  # (C,)
        self.std = torch.as_tensor(np.asarray(std, dtype=np.float32), device=self.device)  # (C,)
        if self.mean.shape != (agent.latent_dim,) or self.std.shape != (agent.latent_dim,):
            raise ValueError(f"latent statistics must have shape ({agent.latent_dim},), got mean "
                             f"{tuple(self.mean.shape)} and std {tuple(self.std.shape)}")
        self.context = int(context or agent.cfg.max_time)
        if not 1 <= self.context <= agent.cfg.max_time:
            raise ValueError(f"context={self.context} must be in [1, agent max_time={agent.cfg.max_time}]")
        self.history: deque[torch.Tensor] = deque(maxlen=self.context)
        self.chunks_decided = 0
        self._frames: list[np.ndarray] = []
        self._first = 0  # episode index of self._frames[0]
        self._t = 0  # env steps acted so far in this episode
        self._chunk: np.ndarray | None = None  # (S, D) actions of the current chunk

    def reset(self, first_obs: np.ndarray | None = None) -> None:
        self._frames = [] if first_obs is None else [np.asarray(first_obs, dtype=np.uint8)]
        self._first, self._t, self._chunk = 0, 0, None
        self.history.clear()
        self.chunks_decided = 0

    def act(self, obs: np.ndarray) -> np.ndarray:
        if self._first + len(self._frames) == self._t:  # a new observation (not the reset frame)
            self._frames.append(np.asarray(obs, dtype=np.uint8))
        k, i = divmod(self._t, self.S)
        if i == 0:
            self._chunk = self._decide(k)
        self._t += 1
        return self._chunk[i].copy()

    def _encode(self, k: int) -> torch.Tensor:
        """Standardised latent k (N, C) from frames 0 … S·k, encoded exactly as the cache does."""
        start, stop = latent_window(k, self.S, self.m)
        # Re-index so the frames handed over start at the window start: window j = start // (S·m)
        # is window 0 of the shifted frames, and latent k is latent k - m·j there.
        clip = np.stack(self._frames[start - self._first : stop - self._first])[None]  # (1, stop-start, H, W, 3)
        if clip.shape[1] != stop - start:
            raise RuntimeError(f"ChunkActor: latent {k} needs frames {start}..{stop - 1}, have {clip.shape[1]}")
        rel = k - start // self.S
        z = self.tokenizer.encode_latent(torch.from_numpy(clip), rel)[0]  # (N, C) float32
        z = z.to(self.device).half().float()  # the cache stores float16 latents
        nxt = latent_window(k + 1, self.S, self.m)[0]  # frames before it are never needed again
        del self._frames[: nxt - self._first]
        self._first = nxt
        return (z - self.mean) / self.std

    def _decide(self, k: int) -> np.ndarray:
        self.history.append(self._encode(k))
        z_btnc = torch.stack(list(self.history))[None]  # (1, T, N, C)
        was_training = self.agent.training
        self.agent.eval()
        try:
            chunk = self.agent.act(z_btnc, greedy=self.greedy, generator=self.generator)  # (1, S, D)
        finally:
            self.agent.train(was_training)
        self.chunks_decided += 1
        return chunk[0].cpu().numpy().astype(np.int64)


class AgentPolicy:
    """The actor as an evaluation policy: ``reset(seed)`` per episode (reseeds the sampling generator),
    ``policy(obs, info) -> env action`` (``info`` is ignored: the agent sees frames only)."""

    def __init__(self, tokenizer, agent: Agent, mean, std, action_space: spaces.Space, greedy: bool = False,
                 context: int | None = None):
        self.space = action_space
        self.generator = torch.Generator(device=next(agent.parameters()).device)
        self.actor = ChunkActor(tokenizer, agent, mean, std, greedy, self.generator, context)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.generator.manual_seed(int(seed))
        self.actor.reset()

    def __call__(self, obs, info=None):
        return to_env_action(self.actor.act(obs), self.space)


class FrequencyPolicy:
    """Samples each component i.i.d. from ``freqs`` (per component, e.g. the data's action counts): a
    baseline that knows how often the demonstrator takes each action but never looks at a frame."""

    def __init__(self, freqs: Sequence[np.ndarray], action_space: spaces.Space, seed: int = 0):
        freqs = [np.asarray(f, dtype=np.float64) for f in freqs]
        if any(not np.isfinite(f).all() or (f < 0).any() or f.sum() <= 0 for f in freqs):
            raise ValueError(f"FrequencyPolicy: frequencies must be >= 0 with a positive sum, got {freqs}")
        self.probs = [f / f.sum() for f in freqs]
        self.space = action_space
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(None if seed is None else [int(seed), 0xF4E9])

    def __call__(self, obs, info=None):
        return to_env_action(np.array([self.rng.choice(len(p), p=p) for p in self.probs]), self.space)


def _with_max_steps(env_cfg, max_steps: int | None):
    if max_steps is None or max_steps == env_cfg.max_steps:
        return env_cfg
    return dataclasses.replace(env_cfg, max_steps=int(max_steps))


def _action_space(env_cfg, cards: Sequence[int] | None) -> spaces.Space:
    """The env's action space (built once to look), checked against ``cards`` when given."""
    from dreamer.envs import evaluation
    from dreamer.envs.gym_env import action_space_of

    env = evaluation.make_env(env_cfg)
    try:
        space = env.action_space
        if cards is not None and tuple(action_space_of(env).cards) != tuple(int(c) for c in cards):
            raise ValueError(f"env {env_cfg.env_id}: action cardinalities {list(action_space_of(env).cards)} "
                             f"differ from the agent's {list(cards)}")
    finally:
        env.close()
    return space


def run_agent_episodes(env_cfg, seeds: Sequence[int], tokenizer, agent: Agent, mean, std, greedy: bool = False,
                       max_steps: int | None = None, context: int | None = None, progress: bool = False) -> list[dict]:
    """One episode per seed (env reset with it, sampling seeded by it unless greedy), at most
    ``max_steps`` env steps (default ``env_cfg.max_steps``)."""
    from dreamer.envs.evaluation import run_policy_episodes

    env_cfg = _with_max_steps(env_cfg, max_steps)
    policy = AgentPolicy(tokenizer, agent, mean, std, _action_space(env_cfg, agent.action_cards), greedy, context)
    was_training = agent.training
    agent.eval()
    try:
        return run_policy_episodes(env_cfg, seeds, policy, progress=progress)
    finally:
        agent.train(was_training)


def run_random_episodes(env_cfg, seeds: Sequence[int], cards: Sequence[int] | None = None,
                        max_steps: int | None = None, progress: bool = False) -> list[dict]:
    """The uniform random baseline on the same seeds and the same runner."""
    from dreamer.envs.evaluation import run_policy_episodes
    from dreamer.envs.policies import RandomPolicy

    env_cfg = _with_max_steps(env_cfg, max_steps)
    return run_policy_episodes(env_cfg, seeds, RandomPolicy(_action_space(env_cfg, cards)), progress=progress)


def run_frequency_episodes(env_cfg, seeds: Sequence[int], freqs: Sequence[np.ndarray], max_steps: int | None = None,
                           progress: bool = False) -> list[dict]:
    """The action-frequency baseline (:class:`FrequencyPolicy`) on the same seeds and the same runner."""
    from dreamer.envs.evaluation import run_policy_episodes

    env_cfg = _with_max_steps(env_cfg, max_steps)
    space = _action_space(env_cfg, [len(f) for f in freqs])
    return run_policy_episodes(env_cfg, seeds, FrequencyPolicy(freqs, space), progress=progress)
