"""Synthetic episodes (random frames, actions and rewards) for tests and benchmarks."""

from __future__ import annotations

import numpy as np

from dreamer.data.episode import ActionSpace, Episode


def make_episode(T: int = 20, size: int = 64, cards=(17,), seed: int = 0, terminated: bool = True) -> Episode:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(T + 1, size, size, 3), dtype=np.uint8)
    actions = np.stack([rng.integers(0, c, size=T) for c in cards], axis=1).astype(np.int64)
    rewards = rng.normal(size=T).astype(np.float32)
    space = ActionSpace(tuple(f"a{i}" for i in range(len(cards))), tuple(cards))
    return Episode(frames, actions, rewards, terminated, not terminated, space, {}, {"env_id": "test", "fps": 10})


# The four moves of :func:`scrolling_latents` (action 0 is "stay"): (drow, dcol) of the view over the world.
MOVES = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


def material_codes(materials: int, channels: int) -> np.ndarray:
    """The fixed N(0, 1) code (``channels``,) of each material of :func:`scrolling_latents` (and of each action value
    of its ``"action_code"`` kind), float32 (max(materials, 5), channels)."""
    return np.random.default_rng(12345).standard_normal((max(materials, len(MOVES)), channels)).astype(np.float32)


def scrolling_latents(batch: int, time: int, grid: int = 4, channels: int = 8, world: int = 8, materials: int = 6,
                      seed: int = 0, kind: str = "scroll") -> dict:
    """Latent clips whose next step is fully determined by the action: the answer to a world-model test is known.

    A (B, T, N = grid², C) batch in the layout :class:`dreamer.data.loader.ClipSampler` gives (latents, cache-aligned
    actions (B, T, 1, 1) of 5 values, all-True action_mask (B, T, 1)), for the phase-1 learning test
    (tests/dynamics/test_learning.py). Each token is the code (a fixed N(0, 1) vector of C channels) of a material.

    - ``"scroll"``: a ``world`` × ``world`` torus of random materials seen through a grid × grid view; action k moves
      the view by ``MOVES[k]`` (0 stays). Copying the last latent is wrong after every move, and knowing the action
      predicts every token but the row or column that comes into view.
    - ``"copy"``: the same, but no action moves the view: the next latent is the last one.
    - ``"blocked"``: ``"scroll"`` where a move into a wall (material 0) does not happen, as a Crafter player cannot
      walk into a tree: the view stays when the world cell the move would bring under the centre token
      (grid // 2, grid // 2) is material 0. The next latent is still fully determined by the last one and the action.
    - ``"action_code"``: every token of latent t is the code of the action taken at t-1 (t = 0: action 0's).
    """
    if kind not in ("scroll", "copy", "blocked", "action_code"):
        raise ValueError(f"scrolling_latents: kind must be 'scroll', 'copy', 'blocked' or 'action_code', got {kind!r}")
    g = np.random.default_rng(seed)
    codes = material_codes(materials, channels)
    acts = g.integers(0, len(MOVES), size=(batch, time))
    if kind == "action_code":
        prev = np.concatenate([np.zeros((batch, 1), dtype=np.int64), acts[:, :-1]], 1)
        z = np.broadcast_to(codes[prev][:, :, None], (batch, time, grid * grid, channels)).copy()
    else:
        worlds = g.integers(0, materials, size=(batch, world, world))
        pos = g.integers(0, world, size=(batch, 2))
        moves = np.asarray(MOVES) * (kind != "copy")
        ar = np.arange(grid)
        z = np.empty((batch, time, grid * grid, channels), dtype=np.float32)
        for t in range(time):
            rows, cols = (pos[:, :1] + ar) % world, (pos[:, 1:] + ar) % world  # (B, grid)
            ids = worlds[np.arange(batch)[:, None, None], rows[:, :, None], cols[:, None, :]]  # (B, grid, grid)
            z[:, t] = codes[ids.reshape(batch, -1)]
            step = moves[acts[:, t]]
            if kind == "blocked":
                target = (pos + grid // 2 + step) % world
                step = step * (worlds[np.arange(batch), target[:, 0], target[:, 1]] != 0)[:, None]
            pos = (pos + step) % world
    import torch

    return {"latents": torch.from_numpy(z), "actions": torch.from_numpy(acts)[..., None, None],
            "action_mask": torch.ones(batch, time, 1, dtype=torch.bool)}
