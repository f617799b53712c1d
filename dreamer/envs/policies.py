"""Step-level behaviour policies ``policy(obs, info) -> env action`` with ``reset(seed)``."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from dreamer.envs.config import CollectConfig, EnvConfig

POLICY_STREAM = 0x5EED  # policies seed (seed, POLICY_STREAM): a stream apart from the env's own seed


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


def make_policy(env_cfg: EnvConfig, collect_cfg: CollectConfig, action_space: spaces.Space):
    """The behaviour policy named by ``collect_cfg.policy`` ("scripted" is Crafter only)."""
    if collect_cfg.policy == "random":
        return RandomPolicy(action_space, seed=collect_cfg.seed)
    if collect_cfg.policy == "scripted":
        if not env_cfg.is_crafter:
            raise ValueError(f"CollectConfig.policy='scripted' exists for Crafter only, not env_id={env_cfg.env_id!r}")
        from dreamer.envs.scripted_crafter import ScriptedCrafterPolicy

        return ScriptedCrafterPolicy(epsilon=collect_cfg.epsilon, seed=collect_cfg.seed)
    raise ValueError(f"unknown policy {collect_cfg.policy!r}")
