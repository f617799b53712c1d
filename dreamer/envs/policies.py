"""Step-level policies ``policy(obs, info) -> env action`` with ``reset(seed)``: the behaviour policies of
collection and the baselines of evaluation (uniform random, the data's action frequencies)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from gymnasium import spaces

POLICY_STREAM = 0x5EED  # policies seed (seed, POLICY_STREAM): a stream apart from the env's own seed


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


class RandomPolicy:
    """Uniformly random actions of a Discrete / MultiDiscrete / MultiBinary space, seeded per episode."""

    def __init__(self, action_space: spaces.Space, seed: int = 0):
        if not isinstance(action_space, (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
            raise TypeError(f"RandomPolicy needs a discrete action space, got {action_space}")
        self.space = action_space
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(None if seed is None else [int(seed), POLICY_STREAM])

    def __call__(self, obs, info):
        s = self.space
        if isinstance(s, spaces.Discrete):
            return int(s.start + self.rng.integers(s.n))
        if isinstance(s, spaces.MultiDiscrete):
            return (s.start + self.rng.integers(0, s.nvec)).astype(s.dtype)
        return self.rng.integers(0, 2, size=s.shape).astype(s.dtype)


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
