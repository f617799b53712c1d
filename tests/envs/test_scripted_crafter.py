from __future__ import annotations

import numpy as np

from dreamer.envs.crafter_env import CrafterEnv, crafter_names
from dreamer.envs.crafter_nav import IDS, MOVE_ACTION, GridView
from dreamer.envs.scripted_crafter import ScriptedCrafterPolicy

ACT = {n: i for i, n in enumerate(crafter_names()["actions"])}


def _grid(rows: list[str]) -> np.ndarray:
    """ASCII map, one string per y row: . grass, T tree, L lava, W water, S stone."""
    code = {".": IDS["grass"], "T": IDS["tree"], "L": IDS["lava"], "W": IDS["water"], "S": IDS["stone"]}
    return np.array([[code[ch] for ch in row] for row in rows], dtype=np.uint8).T  # index [x, y]


def test_bfs_turns_towards_blocked_cells_and_walks_around():
    sem = _grid(["....T", ".SSS.", "....."])
    sem[0, 1] = IDS["player"]
    v = GridView(sem, pos=(0, 1), facing=(0, 1))
    r = v.bfs_face({(4, 0)})
    assert r[0] == "move" and r[1] == (0, -1)  # up, then right along the top row
    v2 = GridView(sem, pos=(3, 0), facing=(0, 1))
    assert v2.bfs_face({(4, 0)})[:2] == ("move", (1, 0))  # the tree is next door: just turn to it
    assert GridView(sem, pos=(3, 0), facing=(1, 0)).bfs_face({(4, 0)})[0] == "here"


def test_random_actions_never_step_into_lava():
    sem = _grid(["...", "L..", "..."])
    policy = ScriptedCrafterPolicy(epsilon=1.0, seed=0)
    info = {"semantic": sem, "player_pos": np.array([1, 1]), "player_facing": np.array([0, 1]), "step": 0}
    actions = {policy(None, info) for _ in range(400)}
    assert MOVE_ACTION[(-1, 0)] not in actions
    assert {MOVE_ACTION[(1, 0)], ACT["do"], ACT["noop"]} <= actions


def test_scripted_policy_collects_wood_quickly():
    env = CrafterEnv(max_steps=300, area=(32, 32))
    policy = ScriptedCrafterPolicy(epsilon=0.0, seed=0)
    obs, info = env.reset(seed=0)
    policy.reset(0)
    for _ in range(300):
        obs, _, term, trunc, info = env.step(policy(obs, info))
        if info["achievements"]["place_table"] or term or trunc:
            break
    assert info["achievements"]["collect_wood"] > 0
    assert info["achievements"]["place_table"] > 0


def test_shelter_geometry():
    from dreamer.envs.crafter_shelter import corridor_sealable, find_shelter, shelter_gaps

    open_field = _grid(["......"] * 6)
    v = GridView(open_field, pos=(0, 0), facing=(0, 1))
    room = frozenset({(2, 2), (3, 2), (2, 3), (3, 3)})
    assert len(shelter_gaps(v, room)) == 8  # every outside neighbour of a 2×2 room is open
    assert find_shelter(v, stone=0, dig=frozenset(), avoid=frozenset(), skeletons=set()) is None
    found = find_shelter(v, stone=8, dig=frozenset(), avoid=frozenset(), skeletons=set())
    assert found is not None and len(found) == 4
    # a corridor cut into stone: only its two ends are open, and those can be faced from inside
    cave = _grid(["SSSS", "...S", "SSSS"])
    v = GridView(cave, pos=(0, 1), facing=(1, 0))
    corridor = frozenset({(1, 1), (2, 1)})
    assert shelter_gaps(v, corridor) == set()  # (0, 1) is the player itself, (3, 1) is stone
    assert corridor_sealable(v, corridor)
    side_open = _grid(["S.SS", "...S", "SSSS"])
    assert not corridor_sealable(GridView(side_open, pos=(0, 1), facing=(1, 0)), corridor)
