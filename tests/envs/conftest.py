"""Tiny gymnasium envs for the generic (non-Crafter) path; registered once per test session."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces


class VectorObsEnv(gym.Env):
    """Vector observations, Discrete(3, start=1) actions, renders a 40×60 gradient whose red channel counts steps."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 7}  # noqa: RUF012

    def __init__(self, render_mode=None):
        self.render_mode = render_mode
        self.observation_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.action_space = spaces.Discrete(3, start=1)
        self.t, self.last_action = 0, None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 4).astype(np.float32), {}

    def step(self, action):
        assert self.action_space.contains(action), action
        self.t, self.last_action = self.t + 1, action
        return np.zeros(4, np.float32), 1.0, False, False, {}

    def render(self):
        img = np.zeros((40, 60, 3), np.uint8)
        img[..., 0] = 10 * self.t
        img[..., 1] = np.linspace(0, 255, 60, dtype=np.uint8)[None, :]
        return img


class ImageObsEnv(gym.Env):
    """48×48 RGB observations, MultiDiscrete([3, 4]) actions, terminates after 4 steps."""

    metadata = {"render_modes": ["rgb_array"]}  # noqa: RUF012

    def __init__(self, render_mode=None):
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0, 255, (48, 48, 3), np.uint8)
        self.action_space = spaces.MultiDiscrete([3, 4])
        self.t = 0

    def _obs(self):
        return np.full((48, 48, 3), 20 * self.t, np.uint8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        assert self.action_space.contains(np.asarray(action)), action
        self.t += 1
        return self._obs(), 0.5, self.t >= 4, False, {}

    def render(self):
        return self._obs()


@pytest.fixture(scope="session", autouse=True)
def _register_test_envs():
    for name, cls in (("DreamerTestVector-v0", VectorObsEnv), ("DreamerTestImage-v0", ImageObsEnv)):
        if name not in gym.registry:
            gym.register(id=name, entry_point=cls)
    yield
