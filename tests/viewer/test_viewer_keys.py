"""Key maps: Crafter's 17 named actions, Minecraft keys that combine, any other discrete space."""

from __future__ import annotations

import numpy as np
import pytest

from dreamer.data.episode import ActionSpace
from dreamer.envs.crafter_env import crafter_names
from dreamer.minecraft.actions import MINERL_V04, VPT
from dreamer.minecraft.camera import CAMERA_NULL_BIN
from dreamer.viewer.keys import keymap_for


def test_crafter_keys_reach_every_action():
    km = keymap_for(ActionSpace(("action",), (17,)), "crafter")
    actions = crafter_names()["actions"]
    assert km.kind == "crafter" and {b.value for b in km.bindings} == set(range(17))
    assert km.describe(km.action_for(["a"])) == "move_left" == km.describe(km.action_for(["arrowleft"]))
    assert km.describe(km.action_for([" "])) == "do" and km.describe(km.action_for([])) == "noop"
    assert km.describe(km.action_for(["w", "d"])) == "move_right"  # one component: the last key wins
    assert km.describe(km.action_for(["W"])) == "move_up"  # caps lock
    for b in km.bindings:
        assert actions[b.value] == b.label
    assert km.action_for(["?"]).tolist() == [0]


@pytest.mark.parametrize("layout", [MINERL_V04, VPT])
def test_minecraft_keys_combine_movement_attack_and_camera(layout):
    km = keymap_for(layout.space)
    assert km.kind == layout.kind and list(km.noop) == layout.noop().tolist()
    a = km.action_for(["w", " ", "j", "arrowleft"])
    assert a[layout.index("forward")] == 1 and a[layout.index("jump")] == 1 and a[layout.index("attack")] == 1
    assert a[layout.index("camera_yaw")] < CAMERA_NULL_BIN == a[layout.index("camera_pitch")]
    assert km.describe(a).startswith("forward+jump+attack+camera_yaw=")
    env = layout.to_env_action(a)  # a valid action for the env: camera turns left, keys pressed
    assert env["forward"] == 1 and env["camera"][1] < 0 and env["camera"][0] == 0
    assert km.describe(layout.noop()) == "noop"
    if layout is VPT:
        assert km.describe(km.action_for(["k", "3"])) == "use+hotbar.3"
    else:
        v = layout.noop()
        v[layout.index("craft")] = 2
        assert km.describe(v) == "craft:stick"


def test_other_discrete_spaces():
    km = keymap_for(ActionSpace(("action",), (4,)), "CartPole-v1")
    assert [(b.key, b.value) for b in km.bindings] == [("0", 0), ("1", 1), ("2", 2), ("3", 3)]
    assert km.describe(km.action_for(["2"])) == "action=2"
    km = keymap_for(ActionSpace(("a", "b"), (3, 2)))
    assert km.describe(km.action_for(["2", "3"])) == "a=2+b" and km.kind == "discrete"
    with pytest.raises(ValueError, match="3 components, the action space has 2"):
        km.describe(np.zeros(3))
