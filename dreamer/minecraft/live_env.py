"""Optional gymnasium adapter for the live MineRL environment.

``minerl`` is not a dependency (its build needs JDK 8 and downloads Minecraft from hosts outside the
package registries); recorded data never needs it. When it imports, :func:`make_minerl_env` wraps a
MineRL env (old gym API, dict actions, ``obs["pov"]``) as a gymnasium env with the pipeline's
MultiDiscrete action space and square uint8 frames. When it does not, the call raises
:class:`MineRLUnavailableError` saying why and what to use instead.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from dreamer.errors import UserError
from dreamer.minecraft.actions import MinecraftLayout, layout_for
from dreamer.minecraft.video import resize_frame


class MineRLUnavailableError(UserError, RuntimeError):
    """``minerl`` cannot be imported here."""


def minerl_import_error() -> str | None:
    """None when ``minerl`` imports, else the reason."""
    try:
        importlib.import_module("minerl")
    except Exception as e:  # noqa: BLE001 - a broken install can raise anything at import
        return f"{type(e).__name__}: {e}"
    return None


def minerl_available() -> bool:
    return minerl_import_error() is None


def default_layout(env_id: str) -> str:
    """MineRL 1.0 / BASALT envs use the VPT keyboard layout; the v0.4 envs the ``minerl_v04`` one."""
    return "vpt" if ("Basalt" in env_id or "HumanSurvival" in env_id) else "minerl_v04"


class MineRLGymnasiumEnv(gym.Env):
    """A MineRL env (``inner``) seen through the Minecraft MultiDiscrete layout.

    Observations are (size, size, 3) uint8 frames from ``obs["pov"]``; actions are (D,) vectors of
    the layout, turned into MineRL dicts (camera at the bin centre in degrees, enums as strings) on
    top of the env's no-op. Old-API ``done`` becomes ``terminated`` unless the info marks a time limit.
    """

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, inner: Any, layout: str | MinecraftLayout = "minerl_v04", size: int = 64,
                 resize: str = "squash"):
        self.inner = inner
        self.layout = layout if isinstance(layout, MinecraftLayout) else layout_for(layout)
        self.size, self.resize = size, resize
        self.render_mode = "rgb_array"
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = gym.spaces.MultiDiscrete(np.asarray(self.layout.cards, dtype=np.int64))
        inner_space = getattr(inner, "action_space", None)
        self._inner_keys = set(getattr(inner_space, "spaces", {}) or {}) or None
        self._last = np.zeros((size, size, 3), np.uint8)

    def _noop(self) -> dict:
        space = getattr(self.inner, "action_space", None)
        return dict(space.noop()) if hasattr(space, "noop") else {}

    def to_inner_action(self, action: np.ndarray) -> dict:
        """(D,) MultiDiscrete vector → the dict the MineRL env takes (keys it lacks are dropped)."""
        a = self._noop()
        a.update(self.layout.to_env_action(np.asarray(action)))
        return a if self._inner_keys is None else {k: v for k, v in a.items() if k in self._inner_keys}

    def _frame(self, obs: Any) -> np.ndarray:
        pov = obs["pov"] if isinstance(obs, dict) else obs
        pov = np.asarray(pov)
        if pov.dtype != np.uint8 or pov.ndim != 3 or pov.shape[-1] != 3:
            raise ValueError(f"MineRL observation 'pov' must be uint8 (H, W, 3), got {pov.dtype} {pov.shape}")
        self._last = resize_frame(pov, self.size, self.resize)
        return self._last

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None and hasattr(self.inner, "seed"):
            self.inner.seed(seed)
        out = self.inner.reset()
        obs, info = out if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict) else (out, {})
        return self._frame(obs), dict(info)

    def step(self, action):
        out = self.inner.step(self.to_inner_action(action))
        if len(out) == 5:
            obs, reward, terminated, truncated, info = out
        else:
            obs, reward, done, info = out
            truncated = bool(info.get("TimeLimit.truncated", False))
            terminated = bool(done) and not truncated
        return self._frame(obs), float(reward), bool(terminated), bool(truncated), dict(info)

    def render(self) -> np.ndarray:
        return self._last

    def close(self) -> None:
        if hasattr(self.inner, "close"):
            self.inner.close()


def make_minerl_env(env_id: str = "MineRLTreechop-v0", size: int = 64, layout: str | None = None,
                    resize: str = "squash") -> MineRLGymnasiumEnv:
    """Create the live MineRL env ``env_id`` wrapped for the pipeline (needs ``minerl``)."""
    reason = minerl_import_error()
    if reason is not None:
        raise MineRLUnavailableError(
            f"the live MineRL environment '{env_id}' needs the optional `minerl` package, which does not import "
            f"here ({reason}). Installing it needs JDK 8 and network access to Minecraft's asset hosts "
            "(pip install 'minerl==0.4.4' for the v0.4 tasks, minerl>=1.0 for BASALT/VPT). Recorded MineRL/VPT "
            "data does not need it: convert it with `python -m dreamer.minecraft.convert`.")
    gym_old = importlib.import_module("gym")  # minerl registers its envs with the old gym package
    inner = gym_old.make(env_id)
    return MineRLGymnasiumEnv(inner, layout or default_layout(env_id), size, resize)
