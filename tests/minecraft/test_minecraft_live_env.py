"""The optional live-MineRL gymnasium adapter, driven by a stand-in env with MineRL's old gym API."""

from __future__ import annotations

import numpy as np
import pytest

from dreamer.minecraft.actions import MINERL_V04, VPT
from dreamer.minecraft.live_env import (
    MineRLGymnasiumEnv,
    MineRLUnavailableError,
    default_layout,
    make_minerl_env,
    minerl_available,
)


class FakeSpace:
    def __init__(self, keys):
        self.spaces = dict.fromkeys(keys)

    def noop(self):
        out = {k: 0 for k in self.spaces if k != "camera"}
        out["camera"] = np.zeros(2, np.float32)
        for k in ("place", "equip", "craft", "nearbyCraft", "nearbySmelt"):
            if k in self.spaces:
                out[k] = "none"
        return out


class FakeMineRL:
    """Old gym API: reset() -> obs, step(a) -> (obs, reward, done, info); obs["pov"] is 64x64 RGB."""

    def __init__(self, keys, limit=3):
        self.action_space = FakeSpace(keys)
        self.limit, self.t, self.actions = limit, 0, []

    def reset(self):
        self.t = 0
        return {"pov": np.full((64, 64, 3), 7, np.uint8), "inventory": {}}

    def step(self, action):
        self.actions.append(action)
        self.t += 1
        done = self.t >= self.limit
        return {"pov": np.full((64, 64, 3), 7 + self.t, np.uint8)}, 1.5, done, {"TimeLimit.truncated": False}


def test_adapter_translates_actions_and_observations():
    inner = FakeMineRL(list(MINERL_V04.keys) + ["camera", "place", "equip", "craft", "nearbyCraft", "nearbySmelt"])
    env = MineRLGymnasiumEnv(inner, "minerl_v04", size=32)
    assert tuple(env.action_space.nvec) == MINERL_V04.cards and env.observation_space.shape == (32, 32, 3)
    obs, info = env.reset(seed=0)
    assert obs.shape == (32, 32, 3) and obs.dtype == np.uint8 and (obs == 7).all() and info == {}
    a = MINERL_V04.noop()
    a[MINERL_V04.index("attack")] = 1
    a[MINERL_V04.index("camera_pitch")] = 0
    a[MINERL_V04.index("craft")] = 2
    obs, r, term, trunc, _ = env.step(a)
    sent = inner.actions[-1]
    assert sent["attack"] == 1 and sent["forward"] == 0 and sent["craft"] == "stick"
    assert sent["camera"].tolist() == pytest.approx([-10.0, 0.0])
    assert (obs == 8).all() and r == 1.5 and not term and not trunc
    env.step(a)
    *_, term, trunc, _ = env.step(a)
    assert term and not trunc and (env.render() == 10).all()


def test_adapter_drops_keys_the_env_lacks():
    inner = FakeMineRL(["forward", "attack", "camera", "use", "ESC"])
    env = MineRLGymnasiumEnv(inner, "vpt")
    env.reset()
    v = VPT.noop()
    v[VPT.index("use")] = 1
    v[VPT.index("hotbar.3")] = 1
    env.step(v)
    assert set(inner.actions[-1]) == {"forward", "attack", "camera", "use", "ESC"}
    assert inner.actions[-1]["use"] == 1 and inner.actions[-1]["ESC"] == 0


def test_missing_minerl_is_reported_clearly():
    assert default_layout("MineRLBasaltFindCave-v0") == "vpt" and default_layout("MineRLTreechop-v0") == "minerl_v04"
    if minerl_available():
        pytest.skip("minerl is installed here")
    with pytest.raises(MineRLUnavailableError, match=r"needs the optional `minerl` package.*JDK 8.*convert"):
        make_minerl_env("MineRLTreechop-v0")
