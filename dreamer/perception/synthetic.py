"""Synthetic Crafter-like episodes and latents, for tests and for running the head with no cache.

The episodes follow Crafter's bookkeeping (16 inventory entries, 22 cumulative achievement counters,
death when health reaches 0) with a crude random process in place of the game. The "latents" are not
Cosmos latents: each latent step's pooled grid (N, C) is a fixed random linear map of the state at
its last frame (inventory, and which counters went up during its chunk) plus Gaussian noise. They
carry the answers to the QA task in a form a projector has to learn to read, which is all the
with/without-world-tokens ablation needs to show on a machine without the real cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .records import latent_frame, num_latent_steps

INVENTORY_NAMES = ("health", "food", "drink", "energy", "sapling", "wood", "stone", "coal", "iron", "diamond",
                   "wood_pickaxe", "stone_pickaxe", "iron_pickaxe", "wood_sword", "stone_sword", "iron_sword")
ACHIEVEMENT_NAMES = ("collect_coal", "collect_diamond", "collect_drink", "collect_iron", "collect_sapling",
                     "collect_stone", "collect_wood", "defeat_skeleton", "defeat_zombie", "eat_cow", "eat_plant",
                     "make_iron_pickaxe", "make_iron_sword", "make_stone_pickaxe", "make_stone_sword",
                     "make_wood_pickaxe", "make_wood_sword", "place_furnace", "place_plant", "place_stone",
                     "place_table", "wake_up")
_COLLECT = {"sapling": 0.01, "wood": 0.03, "stone": 0.015, "coal": 0.008, "iron": 0.003, "diamond": 0.001}
_MAKE = ("wood_pickaxe", "stone_pickaxe", "iron_pickaxe", "wood_sword", "stone_sword", "iron_sword")
_RARE = ("defeat_skeleton", "defeat_zombie", "eat_plant", "place_furnace", "place_plant", "place_stone",
         "place_table", "wake_up")


@dataclass
class SyntheticEpisode:
    """Duck-types ``dreamer.data.episode.Episode`` for what the QA generator reads."""

    frames: np.ndarray  # uint8 (T+1, 8, 8, 3), blank: only the shape matters here
    actions: np.ndarray  # int64 (T, 1)
    rewards: np.ndarray  # float32 (T,)
    terminated: bool
    truncated: bool
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def synthetic_episode(rng: np.random.Generator, max_steps: int = 400, hazard: float = 0.03) -> SyntheticEpisode:
    """One episode: vitals decay, materials and tools are gained at random, damage ends it at health 0."""
    inv_ix = {n: i for i, n in enumerate(INVENTORY_NAMES)}
    ach_ix = {n: i for i, n in enumerate(ACHIEVEMENT_NAMES)}
    inv = np.zeros(len(INVENTORY_NAMES), np.int32)
    inv[[inv_ix[v] for v in ("health", "food", "drink", "energy")]] = 9
    ach = np.zeros(len(ACHIEVEMENT_NAMES), np.int32)
    inv_hist, ach_hist, rewards = [inv.copy()], [ach.copy()], []
    terminated = False
    for _ in range(max_steps):
        before = ach.copy()
        for vital, p in (("food", 0.02), ("drink", 0.025), ("energy", 0.015)):
            if rng.random() < p:
                inv[inv_ix[vital]] = max(0, inv[inv_ix[vital]] - 1)
        if rng.random() < 0.02:
            inv[inv_ix["drink"]] = min(9, inv[inv_ix["drink"]] + 1)
            ach[ach_ix["collect_drink"]] += 1
        if rng.random() < 0.01:
            inv[inv_ix["food"]] = min(9, inv[inv_ix["food"]] + 6)
            ach[ach_ix["eat_cow"]] += 1
        for item, p in _COLLECT.items():
            if rng.random() < p:
                inv[inv_ix[item]] = min(9, inv[inv_ix[item]] + 1)
                ach[ach_ix[f"collect_{item}"]] += 1
        if rng.random() < 0.005:
            tool = _MAKE[rng.integers(len(_MAKE))]
            inv[inv_ix[tool]] = min(9, inv[inv_ix[tool]] + 1)
            ach[ach_ix[f"make_{tool}"]] += 1
        if rng.random() < 0.005:
            ach[ach_ix[_RARE[rng.integers(len(_RARE))]]] += 1
        starving = (inv[[inv_ix["food"], inv_ix["drink"], inv_ix["energy"]]] == 0).any()
        if rng.random() < hazard or (starving and rng.random() < 0.2):
            inv[inv_ix["health"]] = max(0, inv[inv_ix["health"]] - int(rng.integers(1, 4)))
        elif rng.random() < 0.05:
            inv[inv_ix["health"]] = min(9, inv[inv_ix["health"]] + 1)
        rewards.append(float((ach > before).sum()))  # like Crafter: +1 per unlocking step
        inv_hist.append(inv.copy())
        ach_hist.append(ach.copy())
        if inv[inv_ix["health"]] == 0:
            terminated = True
            break
    T = len(rewards)
    return SyntheticEpisode(
        frames=np.zeros((T + 1, 8, 8, 3), np.uint8),
        actions=rng.integers(0, 17, size=(T, 1)).astype(np.int64),
        rewards=np.asarray(rewards, np.float32),
        terminated=terminated,
        truncated=not terminated,
        extras={"inventory": np.stack(inv_hist), "achievements": np.stack(ach_hist)},
        meta={"env_id": "synthetic-crafter", "inventory_names": list(INVENTORY_NAMES),
              "achievement_names": list(ACHIEVEMENT_NAMES)},
    )


def synthetic_latents(ep: SyntheticEpisode, chunk_len: int, tokens: int = 16, channels: int = 16,
                      noise: float = 0.3, map_seed: int = 1234, rng: np.random.Generator | None = None
                      ) -> np.ndarray:
    """float16 (L, N, C): a fixed random linear map of the state at each latent step, plus noise."""
    rng = rng or np.random.default_rng(0)
    inv, ach = ep.extras["inventory"], ep.extras["achievements"]
    T = len(ep.rewards)
    L = num_latent_steps(T, chunk_len)
    frames = [latent_frame(k, T, chunk_len) for k in range(L)]
    prev = [frames[max(k - 1, 0)] for k in range(L)]
    state_ld = np.concatenate([inv[frames] / 9.0, (ach[frames] > ach[prev]).astype(np.float64)], axis=1)
    w = np.random.default_rng(map_seed).normal(size=(state_ld.shape[1], tokens * channels))
    lat = (state_ld - 0.3) @ w + noise * rng.normal(size=(L, tokens * channels))
    return lat.reshape(L, tokens, channels).astype(np.float16)
