"""One person driving the world model: a KV-cached rollout advanced one decision at a time.

A decision applies one action chunk (S sub-steps) and generates the next latent with
:class:`dreamer.dynamics.sampler.Rollout`, so the history is encoded once and each decision costs
``sample_steps`` passes over one latent step; the new latent alone is decoded to the frame at its
chunk boundary. A key press repeats its action over the S sub-steps; "agent" applies the agent's
suggested chunk. When the rollout reaches the dynamics' ``max_time`` it restarts from the last half
of the history (one pass over it). With an agent, every state shows the agent's suggested next chunk
(the policy's most likely actions), the predicted reward on entering the state and the probability
that the episode continues.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Sequence

import numpy as np
import torch

from dreamer.dynamics.sampler import Rollout
from dreamer.viewer.frames import decode_each, png_bytes
from dreamer.viewer.keys import keymap_for
from dreamer.viewer.load import World

log = logging.getLogger(__name__)


class PlayError(ValueError):
    """A bad request to the session (unknown episode, malformed action); the message names it."""


class PlaySession:
    def __init__(self, world: World, context: int = 2, seed: int = 0) -> None:
        self.world, self.context = world, max(1, int(context))
        self.keymap = keymap_for(world.action_space, world.cfg.env.env_id)
        self.device = world.device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.lock = threading.Lock()  # one request at a time drives the models
        self.starts = [n for n in (world.cache.val_names or world.cache.train_names) if len(world.cache.episode(n)) >= 2]
        if not self.starts:
            raise PlayError(f"latent cache {world.cache.root}: no episode with two latent steps to start from")
        self.decisions, self.latency_s = 0, []
        self.reset()

    # ---- state -----------------------------------------------------------------------------------------
    def reset(self, episode: str | None = None, start: int | None = None) -> dict:
        """Start from real latents: ``episode`` (default: a random validation one) up to latent ``start``."""
        cache, S = self.world.cache, self.world.S
        name = episode if episode is not None else self.starts[int(self.rng.integers(len(self.starts)))]
        if name not in cache.names:
            raise PlayError(f"episode {name!r} is not in the latent cache {cache.root}")
        e = cache.episode(name)
        L = len(e)
        c = max(1, min(self.context, L - 1, self.world.dynamics.cfg.max_time - 1))
        if start is None:
            start = c - 1 if episode is not None else int(self.rng.integers(c - 1, L - 1))
        if not 0 <= int(start) <= L - 1:
            raise PlayError(f"start={start} is outside episode {name!r} (latent steps 0..{L - 1})")
        start = int(start)
        first = max(0, start - c + 1)
        z = cache.standardise(torch.from_numpy(np.array(e.latents[first : start + 1])).to(self.device))  # (c, N, C)
        acts = torch.from_numpy(np.array(e.actions[first : start + 1])).to(self.device)  # (c, S, D)
        mask = torch.from_numpy(np.array(e.action_mask[first : start + 1])).to(self.device)  # (c, S)
        with self.lock:
            self.episode, self.start, self.decisions = name, start, 0
            self.z = list(z)
            self.chunks = [(acts[i], mask[i]) for i in range(len(z) - 1)]  # chunk from latent i to i+1
            self._restart(self.z, self.chunks)
            t0 = time.perf_counter()
            frame = self._frame(z[-1])
            self.last = self._state(frame, None, {"decode_ms": 1e3 * (time.perf_counter() - t0)})
            self.last["first_frame"] = S * start
        return self.last

    def _restart(self, zs: list[torch.Tensor], chunks: list) -> None:
        S, D = self.world.S, len(self.keymap.cards)
        a = torch.stack([c[0] for c in chunks] + [torch.zeros(S, D, dtype=torch.long, device=self.device)])[None]
        m = torch.stack([c[1] for c in chunks] + [torch.zeros(S, dtype=torch.bool, device=self.device)])[None]
        self.rollout = Rollout(self.world.dynamics, torch.stack(zs)[None], a, m, generator=self.generator)

    # ---- one decision ----------------------------------------------------------------------------------
    def action_chunk(self, keys: Sequence[str] | None = None, action: Sequence[int] | None = None,
                     agent: bool = False) -> np.ndarray:
        """(S, D) int64 chunk: the agent's suggestion, an explicit (D,) action, or the held keys' action."""
        S, cards = self.world.S, self.keymap.cards
        if agent:
            if self.last.get("agent") is None:
                raise PlayError("this checkpoint has no agent (pass phase2_final.pt or phase3_final.pt)")
            return np.asarray(self.last["agent"]["chunk"], dtype=np.int64)
        if action is not None:
            a = np.asarray(action, dtype=np.int64).reshape(-1)
            if a.shape != (len(cards),) or (a < 0).any() or (a >= np.asarray(cards)).any():
                raise PlayError(f"action {list(action)} must hold {len(cards)} values in [0, card) for cards {list(cards)}")
        else:
            a = self.keymap.action_for(keys or [])
        return np.repeat(a[None], S, 0)

    def step(self, keys: Sequence[str] | None = None, action: Sequence[int] | None = None, agent: bool = False) -> dict:
        with self.lock:
            chunk = torch.from_numpy(self.action_chunk(keys, action, agent)).to(self.device)  # (S, D)
            mask = torch.ones(self.world.S, dtype=torch.bool, device=self.device)
            t0 = time.perf_counter()
            if self.rollout.length + 1 > self.world.dynamics.cfg.max_time:  # full: keep the last half
                keep = max(1, self.world.dynamics.cfg.max_time // 2)
                self.z, self.chunks = self.z[-keep:], self.chunks[-(keep - 1):] if keep > 1 else []
                self._restart(self.z, self.chunks)
            z = self.rollout.step(chunk[None], mask[None])[0]  # (N, C)
            t1 = time.perf_counter()
            self.z.append(z)
            self.chunks.append((chunk, mask))
            frame = self._frame(z)
            t2 = time.perf_counter()
            self.decisions += 1
            self.last = self._state(frame, chunk, {"dynamics_ms": 1e3 * (t1 - t0), "decode_ms": 1e3 * (t2 - t1)}, t0)
            self.latency_s.append(self.last["latency_ms"]["total_ms"] / 1e3)
            self.last["mean_latency_ms"] = round(1e3 * float(np.mean(self.latency_s[-50:])), 2)
            return self.last

    # ---- pieces ----------------------------------------------------------------------------------------
    def _frame(self, z_nc: torch.Tensor) -> np.ndarray:
        w = self.world
        return decode_each(w.tokenizer, z_nc[None, None], w.cache.mean, w.cache.std, w.cfg.env.size)[0, 0]

    @torch.no_grad()
    def _agent(self) -> dict | None:
        agent = self.world.agent
        if agent is None:
            return None
        h = agent.trunk(torch.stack(self.z[-agent.trunk.max_time :])[None])[:, -1]  # (1, d)
        chunk = agent.policy(h).mode()[0].cpu().numpy()  # (S, D)
        return {"chunk": chunk.tolist(), "action": self.keymap.describe(chunk[0]),
                "actions": [self.keymap.describe(a) for a in chunk],
                "reward": float(agent.reward.predict(h)[0]), "continue": float(agent.cont.predict(h)[0])}

    def _state(self, frame: np.ndarray, chunk: torch.Tensor | None, ms: dict, t0: float | None = None) -> dict:
        ta = time.perf_counter()
        suggestion = self._agent()
        ms["agent_ms"] = 1e3 * (time.perf_counter() - ta)
        png = png_bytes(frame)
        if t0 is not None:
            ms["total_ms"] = 1e3 * (time.perf_counter() - t0)
        taken = None if chunk is None else chunk.cpu().numpy()
        return {
            "episode": self.episode, "start": self.start, "decision": self.decisions,
            "history": len(self.z), "frame": "data:image/png;base64," + base64.b64encode(png).decode(),
            "action": None if taken is None else self.keymap.describe(taken[0]),
            "action_vector": None if taken is None else taken[0].tolist(),
            "agent": suggestion, "latency_ms": {k: round(v, 2) for k, v in ms.items()},
            "mean_latency_ms": None,
        }

    def info(self) -> dict:
        w = self.world
        return {"checkpoint": str(w.path), "env_id": w.cfg.env.env_id, "S": w.S, "size": w.cfg.env.size,
                "num_tokens": w.tokenizer.num_tokens, "channels": w.tokenizer.channels,
                "max_time": w.dynamics.cfg.max_time, "sample_steps": w.dynamics.cfg.sample_steps,
                "context": self.context, "agent": w.agent is not None, "keymap": self.keymap.to_json(),
                "episodes": {n: len(w.cache.episode(n)) for n in self.starts},
                "world_model": world_model_line(w.dynamics_eval)}


def world_model_line(metrics: dict | None) -> dict | None:
    """{"ok", "verdict"}: phase 1's held-out figures in the plain line phase 1 ends with (None when unknown)."""
    if not metrics:
        return None
    from dreamer.dynamics import verdict

    ok, line = verdict(metrics)
    return {"ok": ok, "verdict": line}
