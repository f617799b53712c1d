"""Acting in the real environment with a trained agent (docs/design.md §6, "Acting in the real env").

The agent decides once per chunk: at each chunk boundary k (after S·k env steps) the frames seen so
far are encoded into latent k with :meth:`CosmosTokenizerWrapper.encode_latent` (the windowing of
:func:`latent_window`, the one the cache uses), rounded through float16 as the cache stores it,
standardised with the cache statistics, and trunk + policy on the latent history give a chunk of S
actions. The next S env steps execute that chunk; an episode that ends mid-chunk just stops.

Only the frames of the current tokenizer window are kept (at most S·m + 1), so memory and the cost
per chunk do not grow with the episode.

Episodes are played by :func:`dreamer.envs.evaluation.run_policy_episodes` (one runner for every
policy compared, the baselines included: :mod:`dreamer.envs.evaluation`): per-episode dicts with seed,
return, length, terminated, truncated (+ Crafter achievements), the input of
:func:`dreamer.envs.evaluation.summarise`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence

import numpy as np
import torch
from gymnasium import spaces

from dreamer.envs.evaluation import checked_action_space, run_policy_episodes, with_max_steps
from dreamer.envs.policies import to_env_action
from dreamer.tokenizer.cosmos import latent_window

from .model import Agent

log = logging.getLogger(__name__)


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


def run_agent_episodes(env_cfg, seeds: Sequence[int], tokenizer, agent: Agent, mean, std, greedy: bool = False,
                       max_steps: int | None = None, context: int | None = None, progress: bool = False) -> list[dict]:
    """One episode per seed (env reset with it, sampling seeded by it unless greedy), at most
    ``max_steps`` env steps (default ``env_cfg.max_steps``)."""
    env_cfg = with_max_steps(env_cfg, max_steps)
    policy = AgentPolicy(tokenizer, agent, mean, std, checked_action_space(env_cfg, agent.action_cards), greedy,
                         context)
    was_training = agent.training
    agent.eval()
    try:
        return run_policy_episodes(env_cfg, seeds, policy, progress=progress)
    finally:
        agent.train(was_training)
