"""Acting in the real environment with a trained agent (docs/design.md §6, "Acting in the real env").

The agent decides once per chunk (:class:`ChunkActor`): at each chunk boundary k (after S·k env steps)
the frames seen so far are encoded into latent k exactly as the cache encodes them, and trunk + policy on
the latent history give a chunk of S actions for the next S env steps; an episode that ends mid-chunk
just stops. Evaluation plays many episodes together, one env each, in lockstep, through the one episode
runner :func:`dreamer.envs.runner.run_episodes`, with :class:`AgentBatchPolicy` as its policy: one batched
encode and one batched policy call per decision. :class:`AgentPolicy` is the same actor for one env, step by
step (``dreamer.load_agent``, the collector).

With a tokenizer that ``reads_info`` (``tokenizer.kind: crafter_state``) latent k is encoded from the env's
``info`` at the chunk boundary instead of the frames: PRIVILEGED game state, a reference for what the
pipeline can learn, never a pixel agent. The actor then needs every step's info (``act(observations,
infos)``; the runner and :class:`AgentPolicy` pass them, the reset info first).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence

import numpy as np
import torch
from gymnasium import spaces

from dreamer.envs.policies import to_env_action
from dreamer.envs.runner import BatchPolicy
from dreamer.tokenizer.cosmos import latent_window

from .model import Agent, eval_modes, restore_modes

log = logging.getLogger(__name__)


class ChunkActor:
    """Acts for E episodes stepped together: ``reset(first_obs, generators)``, then every env step
    ``act(observations, infos=None) -> actions`` (int64 (E, D), one row per episode still running), and
    ``keep(rows)`` when some episodes end.

    At each chunk boundary k (after S·k steps of every episode) the frames seen so far are encoded into
    latent k with :meth:`CosmosTokenizerWrapper.encode_latent` (the windowing of :func:`latent_window`, the
    one the cache uses), rounded through float16 as the cache stores it, standardised with the cache
    statistics (``mean``/``std`` (C,)), and trunk + policy on the last ``context`` latents (default
    ``agent.cfg.max_time``) give a chunk of S actions per episode; the next S steps execute it. All
    episodes advance in lockstep, so every decision is ONE batched encode and ONE batched policy call.
    ``greedy`` takes the most likely action; otherwise episode e samples with ``generators[e]`` (on the
    agent's device), so it draws what it would draw acted alone. Only the frames of the current tokenizer
    window are kept (at most S·m + 1 per episode). ``history[e]`` holds episode e's standardised latents.

    A tokenizer with ``reads_info`` (crafter_state) encodes latent k from ``infos`` (the env's info of each
    episode at step S·k; PRIVILEGED state) with ``tokenizer.encode_infos``, rounded and standardised the same
    way, and keeps no frames; ``act`` then refuses to go on without infos.
    """

    def __init__(self, tokenizer, agent: Agent, mean, std, greedy: bool = False, context: int | None = None):
        self.tokenizer, self.agent, self.greedy = tokenizer, agent, greedy
        self.S, self.m = int(tokenizer.S), int(tokenizer.cfg.window_latents)
        self.reads_info = bool(getattr(tokenizer, "reads_info", False))
        if self.reads_info:
            log.info("acting on the PRIVILEGED game state (tokenizer.kind=%s reads the env's info, not the frames)",
                     tokenizer.cfg.kind)
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
        self.reset([])

    def reset(self, first_obs: Sequence[np.ndarray | None], generators: Sequence[torch.Generator] | None = None):
        """Start one episode per entry of ``first_obs`` (None: its first frame comes with the first ``act``)."""
        E = len(first_obs)
        self.frames: list[list[np.ndarray]] = [[] if o is None else [np.asarray(o, dtype=np.uint8)] for o in first_obs]
        self.generators = list(generators) if generators is not None else None
        if self.generators is not None and len(self.generators) != E:
            raise ValueError(f"ChunkActor.reset: {len(self.generators)} generators for {E} episodes")
        self.history: list[deque[torch.Tensor]] = [deque(maxlen=self.context) for _ in range(E)]
        self._first = 0  # episode frame index of frames[e][0] (the same for every episode: lockstep)
        self._t = 0  # env steps acted so far
        self._chunk: np.ndarray | None = None  # (E, S, D) the current chunks
        self.chunks_decided = 0

    @property
    def chunk(self) -> np.ndarray | None:
        """The chunk each running episode is executing, int64 (E, S, D)."""
        return self._chunk

    def keep(self, rows: Sequence[int]) -> None:
        """Go on with the episodes ``rows`` (indices into the current batch) only."""
        rows = list(rows)
        self.frames = [self.frames[i] for i in rows]
        self.history = [self.history[i] for i in rows]
        if self.generators is not None:
            self.generators = [self.generators[i] for i in rows]
        if self._chunk is not None:
            self._chunk = self._chunk[rows]

    def act(self, observations: Sequence[np.ndarray], infos: Sequence[dict] | None = None) -> np.ndarray:
        """The current observation (and, for a tokenizer that ``reads_info``, the env's info) of every running
        episode → their actions now, int64 (E, D). ``infos`` is ignored by a pixel tokenizer."""
        if len(observations) != len(self.frames):
            raise ValueError(f"ChunkActor.act: {len(observations)} observations for {len(self.frames)} episodes")
        if self.reads_info:
            if infos is None or len(infos) != len(observations):
                raise ValueError(f"ChunkActor.act: tokenizer.kind={self.tokenizer.cfg.kind} encodes the env's info "
                                 f"(privileged state): pass one info per observation, got "
                                 f"{'none' if infos is None else len(infos)} for {len(observations)}")
        else:
            for frames, obs in zip(self.frames, observations):
                if self._first + len(frames) == self._t:  # a new observation (not the reset frame)
                    frames.append(np.asarray(obs, dtype=np.uint8))
        k, i = divmod(self._t, self.S)
        if i == 0:
            self._chunk = self._decide(k, infos)
        self._t += 1
        return self._chunk[:, i].copy()

    def _encode_infos(self, infos: Sequence[dict]) -> torch.Tensor:
        """Standardised latent of every episode (E, N, C) from its info (privileged state), as the cache holds it."""
        z = self.tokenizer.encode_infos(infos)  # (E, N, C) float32
        z = z.to(self.device).half().float()  # the cache stores float16 latents
        return (z - self.mean) / self.std

    def _encode(self, k: int) -> torch.Tensor:
        """Standardised latent k of every episode (E, N, C), encoded exactly as the cache does."""
        start, stop = latent_window(k, self.S, self.m)
        # Re-index so the frames handed over start at the window start: window j = start // (S·m)
        # is window 0 of the shifted frames, and latent k is latent k - m·j there.
        clips = np.stack([np.stack(f[start - self._first : stop - self._first]) for f in self.frames])
        if clips.shape[1] != stop - start:
            raise RuntimeError(f"ChunkActor: latent {k} needs frames {start}..{stop - 1}, have {clips.shape[1]}")
        z = self.tokenizer.encode_latent(torch.from_numpy(clips), k - start // self.S)  # (E, N, C) float32
        z = z.to(self.device).half().float()  # the cache stores float16 latents
        nxt = latent_window(k + 1, self.S, self.m)[0]  # frames before it are never needed again
        for f in self.frames:
            del f[: nxt - self._first]
        self._first = nxt
        return (z - self.mean) / self.std

    def _decide(self, k: int, infos: Sequence[dict] | None = None) -> np.ndarray:
        latents = self._encode_infos(infos) if self.reads_info else self._encode(k)
        for hist, z in zip(self.history, latents):
            hist.append(z)
        z_btnc = torch.stack([torch.stack(list(h)) for h in self.history])  # (E, T, N, C)
        modes = eval_modes(self.agent)
        try:
            chunk = self.agent.act(z_btnc, greedy=self.greedy, generator=self.generators)  # (E, S, D)
        finally:
            restore_modes(modes)
        self.chunks_decided += 1
        return chunk.cpu().numpy().astype(np.int64)


class AgentPolicy:
    """The actor as a step-level evaluation policy for one env: ``reset(seed)`` per episode (reseeds the
    sampling generator), ``policy(obs, info) -> env action`` (``info`` is ignored by a pixel tokenizer: the
    agent sees frames only; a tokenizer that ``reads_info`` encodes it, privileged, from the reset info on)."""

    def __init__(self, tokenizer, agent: Agent, mean, std, action_space: spaces.Space, greedy: bool = False,
                 context: int | None = None):
        self.space = action_space
        self.generator = torch.Generator(device=next(agent.parameters()).device)
        self.actor = ChunkActor(tokenizer, agent, mean, std, greedy, context)
        self.actor.reset([None], [self.generator])

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.generator.manual_seed(int(seed))
        self.actor.reset([None], [self.generator])

    def __call__(self, obs, info=None):
        return to_env_action(self.actor.act([obs], None if info is None else [info])[0], self.space)


class AgentBatchPolicy(BatchPolicy):
    """The agent as the episode runner's policy (:func:`dreamer.envs.runner.run_episodes`): each decision of the
    running episodes is one batched encode and one batched policy call (:class:`ChunkActor`, the last ``context``
    latents); episode e samples with a generator seeded by its seed (unless ``greedy``), so it acts as it would
    alone. While it plays, every module of the agent is in eval mode; each gets its own mode back at the end (a
    phase-3 agent's frozen trunk stays in eval mode, its trained heads go on training)."""

    def __init__(self, tokenizer, agent: Agent, mean, std, greedy: bool = False, context: int | None = None,
                 name: str = "agent"):
        self.actor = ChunkActor(tokenizer, agent, mean, std, greedy, context)
        self.agent, self.name, self.cards = agent, name, list(agent.action_cards)
        self._modes: dict | None = None  # each module's mode before begin(), for end()

    def begin(self, space: spaces.Space) -> None:
        super().begin(space)
        self._modes = eval_modes(self.agent)

    def start(self, seeds: list[int]) -> None:
        self.actor.reset([None] * len(seeds), [torch.Generator(device=self.actor.device).manual_seed(s) for s in seeds])

    def act(self, observations: list, infos: list[dict]) -> list:
        return [to_env_action(a, self.space) for a in self.actor.act(observations, infos)]

    def keep(self, rows: list[int]) -> None:
        self.actor.keep(rows)

    def end(self) -> None:
        restore_modes(self._modes or {})
        self._modes = None
