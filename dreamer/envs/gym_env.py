"""Build environments from an EnvConfig and describe their actions as a MultiDiscrete view.

``make_env`` returns a gymnasium env whose observations are RGB uint8 frames (size, size, 3):
Crafter through :class:`CrafterEnv`; any other id through ``gymnasium.make(id,
render_mode="rgb_array")`` plus :class:`RGBFrames`, which resizes image observations or, when the
observation is not an image (CartPole's state vector, say), the rendered frame instead.
"""

from __future__ import annotations

import logging

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from PIL import Image

from dreamer.data.episode import ActionSpace
from dreamer.envs.config import EnvConfig
from dreamer.envs.crafter_env import CrafterEnv
from dreamer.errors import ConfigError

log = logging.getLogger(__name__)


def make_env(cfg: EnvConfig, seed: int | None = None) -> gym.Env:
    """The env of ``cfg``; ``seed`` (if given) seeds the first ``reset()`` and the action space."""
    if cfg.is_crafter:
        env: gym.Env = CrafterEnv(
            size=cfg.size, max_steps=cfg.max_steps, area=cfg.crafter_area, view=cfg.crafter_view, seed=seed
        )
    else:
        try:
            inner = gym.make(cfg.env_id, render_mode="rgb_array", max_episode_steps=cfg.max_steps)
        except gym.error.Error as e:
            raise ConfigError(f"env.env_id={cfg.env_id!r}: gymnasium cannot build it ({e})") from e
        env = RGBFrames(ZeroBasedActions(inner), cfg.size, seed=seed)
    action_space_of(env)  # fail early on continuous actions
    if seed is not None:
        env.action_space.seed(seed)
    return env


def action_space_of(env: gym.Env | spaces.Space) -> ActionSpace:
    """MultiDiscrete view of an env's (or a space's) actions: Discrete(n) → one component of card n."""
    space = env if isinstance(env, spaces.Space) else env.action_space
    if isinstance(space, spaces.Discrete):
        if int(space.start) != 0:
            raise ValueError(f"action space {space} starts at {space.start}; wrap it (make_env does) to start at 0")
        return ActionSpace(("action",), (int(space.n),))
    if isinstance(space, spaces.MultiDiscrete):
        if space.nvec.ndim != 1:
            raise ValueError(f"MultiDiscrete action space with nvec shape {space.nvec.shape} is not 1-D")
        if np.any(space.start != 0):
            raise ValueError(f"action space {space} has non-zero starts; wrap it (make_env does) to start at 0")
        return ActionSpace(tuple(f"action_{i}" for i in range(len(space.nvec))), tuple(int(n) for n in space.nvec))
    if isinstance(space, spaces.MultiBinary) and np.ndim(space.n) == 0:
        return ActionSpace(tuple(f"button_{i}" for i in range(int(space.n))), (2,) * int(space.n))
    raise ValueError(
        f"unsupported action space {space}: the pipeline needs discrete actions (Discrete, MultiDiscrete or "
        "MultiBinary); continuous spaces such as Box must be discretised first"
    )


def action_to_components(action, space: spaces.Space) -> np.ndarray:
    """An env action as an int64 (D,) row of component indices (the episode ``actions`` layout)."""
    row = np.asarray(action, dtype=np.int64).reshape(-1)
    if isinstance(space, spaces.Discrete):
        row = row - int(space.start)
    elif isinstance(space, spaces.MultiDiscrete):
        row = row - np.asarray(space.start, dtype=np.int64).reshape(-1)
    return row


def _is_image_space(space: spaces.Space) -> bool:
    return (
        isinstance(space, spaces.Box)
        and space.dtype == np.uint8
        and (len(space.shape) == 2 or (len(space.shape) == 3 and space.shape[-1] in (1, 3, 4)))
    )


def to_rgb_frame(img: np.ndarray, size: int) -> np.ndarray:
    """Any uint8 image (H, W), (H, W, 1|3|4) → RGB uint8 (size, size, 3), bilinear (antialiased) resize."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {img.dtype} with shape {img.shape}")
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an image (H, W[, 1|3|4]), got shape {img.shape}")
    img = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img[..., :3]
    if img.shape[:2] != (size, size):  # non-square frames are stretched to a square
        img = np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((size, size), Image.BILINEAR))
    return np.ascontiguousarray(img, dtype=np.uint8)


class ZeroBasedActions(gym.ActionWrapper):
    """Shift Discrete/MultiDiscrete action spaces to start at 0 (other spaces pass through)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        space = env.action_space
        if isinstance(space, spaces.Discrete):
            self._start = int(space.start)
            self.action_space = spaces.Discrete(int(space.n))
        elif isinstance(space, spaces.MultiDiscrete):
            self._start = np.asarray(space.start, dtype=np.int64)
            self.action_space = spaces.MultiDiscrete(space.nvec)
        else:
            self._start = 0

    def action(self, action):
        if isinstance(self.action_space, spaces.Discrete):
            return int(action) + self._start
        if isinstance(self.action_space, spaces.MultiDiscrete):
            return np.asarray(action, dtype=np.int64) + self._start
        return action


class RGBFrames(gym.ObservationWrapper):
    """Observations become RGB uint8 (size, size, 3): the image observation, or else the rendered frame."""

    def __init__(self, env: gym.Env, size: int, seed: int | None = None):
        super().__init__(env)
        self.size = int(size)
        self._from_render = not _is_image_space(env.observation_space)
        if self._from_render and env.render_mode != "rgb_array":
            raise ValueError(
                f"{env.spec.id if env.spec else env}: observations {env.observation_space} are not images and "
                f"render_mode is {env.render_mode!r}, not 'rgb_array'"
            )
        self.observation_space = spaces.Box(0, 255, (self.size, self.size, 3), np.uint8)
        self._first_seed = seed

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None and self._first_seed is not None:
            seed, self._first_seed = self._first_seed, None
        return super().reset(seed=seed, options=options)

    def observation(self, observation):
        img = self.env.render() if self._from_render else observation
        if img is None:
            raise RuntimeError(f"{self.env}: render() returned None; cannot build an RGB frame")
        return to_rgb_frame(img, self.size)
