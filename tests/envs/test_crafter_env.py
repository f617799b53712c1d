from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from dreamer.envs.crafter_env import CrafterEnv, crafter_names, semantic_ids

ACT = {n: i for i, n in enumerate(crafter_names()["actions"])}
SMALL = {"area": (16, 16)}  # tiny worlds generate fast


def test_check_env_passes():
    env = CrafterEnv(size=64, max_steps=20, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # only the "no spec" notice about alternative render modes
        check_env(env)
    assert env.observation_space.shape == (64, 64, 3) and env.observation_space.dtype == np.uint8
    assert env.action_space.n == 17


def test_seeding_gives_same_first_observation_and_world():
    env = CrafterEnv(size=32, max_steps=10, **SMALL)
    o1, i1 = env.reset(seed=7)
    env.step(ACT["move_left"])
    o2, i2 = env.reset(seed=7)
    assert o1.shape == (32, 32, 3) and o1.dtype == np.uint8
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(i1["semantic"], i2["semantic"])
    _, i3 = env.reset(seed=8)
    assert not np.array_equal(i1["semantic"], i3["semantic"])
    _, i4 = env.reset()  # unseeded reset continues the generator: a new world
    assert not np.array_equal(i2["semantic"], i4["semantic"])


def test_constructor_seed_applies_to_first_reset():
    a, b = CrafterEnv(seed=3, **SMALL), CrafterEnv(**SMALL)
    np.testing.assert_array_equal(a.reset()[0], b.reset(seed=3)[0])


def test_truncated_at_max_steps():
    env = CrafterEnv(max_steps=5, **SMALL)
    env.reset(seed=0)
    flags = [env.step(ACT["noop"])[2:4] for _ in range(5)]
    assert flags[:4] == [(False, False)] * 4
    assert flags[4] == (False, True)
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step(ACT["noop"])


def test_terminated_on_death():
    env = CrafterEnv(max_steps=100, **SMALL)
    env.reset(seed=0)
    env.player.health = 0
    _, reward, terminated, truncated, info = env.step(ACT["noop"])
    assert terminated and not truncated
    assert info["inventory"]["health"] == 0 and reward < 0


def test_info_and_sleep_ignores_actions():
    env = CrafterEnv(max_steps=100, **SMALL)
    _, info = env.reset(seed=1)
    for key in ("inventory", "achievements", "sleeping", "ignores_action", "player_pos", "player_facing",
                "daylight", "semantic", "plants"):
        assert key in info
    assert len(info["inventory"]) == 16 and len(info["achievements"]) == 22
    ids = semantic_ids()
    assert info["semantic"][tuple(info["player_pos"])] == ids["player"]
    assert not info["sleeping"] and not info["ignores_action"]
    env.player.inventory["energy"] = 3
    _, _, _, _, info = env.step(ACT["sleep"])
    assert info["sleeping"] and info["ignores_action"]
    pos = info["player_pos"].copy()
    for move in ("move_left", "move_right", "move_up", "move_down"):
        _, _, _, _, info = env.step(ACT[move])
        np.testing.assert_array_equal(info["player_pos"], pos)  # the game ignored the move


def test_invalid_action_raises():
    env = CrafterEnv(**SMALL)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside Discrete"):
        env.step(17)
    with pytest.raises(ValueError, match="outside Discrete"):
        env.step(np.array([1, 2]))
    env.step(np.int64(3))  # numpy ints are fine
    env.step(np.array([3]))  # and so is a (1,) MultiDiscrete row


@pytest.mark.parametrize("cause", ["lava", "food+drink", "attacked"])
def test_death_cause_is_reported_and_summarised(cause):
    from dreamer.envs.evaluation import summarise
    from dreamer.envs.runner import episode_result

    env = CrafterEnv(size=64, max_steps=50, **SMALL)
    env.reset(seed=1)
    p = env.player
    action = ACT["noop"]
    if cause == "lava":
        env.world[(p.pos[0], p.pos[1] + 1)] = "lava"
        action = ACT["move_down"]
    else:
        p.health = 0  # dies on the next step, before any regeneration counts
        if cause == "food+drink":
            p.inventory["food"] = p.inventory["drink"] = 0
    _, _, term, _, info = env.step(action)
    assert term and info["death_cause"] == cause
    res = episode_result(0.0, 1, info, seed=1)
    assert res["death_cause"] == cause
    assert summarise([res, episode_result(1.0, 50, {"achievements": {}})])["deaths"] == {cause: 1}


def _replay(env, actions, seed: int = 10001, pickled: bool = False):
    import pickle

    frames = [env.reset(seed=seed)[0]]
    if pickled:  # as evaluation's reset workers hand their envs back
        env = pickle.loads(pickle.dumps(env))
    for a in actions:
        obs, _, term, trunc, _ = env.step(int(a))
        frames.append(obs)
        if term or trunc:
            break
    return np.stack(frames)


def test_the_same_seed_and_actions_replay_the_same_episode():
    """Crafter's balancing despawns the i-th creature of a chunk's set: in memory order, the same seed and actions
    parted after a few dozen steps from one env to the next (an evaluation of one BC gave 212, 225 and 170 steps).
    With the adapter's insertion-ordered sets, two envs (one of them pickled after its reset) replay one episode."""
    from dreamer.envs.crafter_env import InsertionOrderSet

    actions = np.random.default_rng(0).integers(0, 17, 300)
    first = _replay(CrafterEnv(size=32, max_steps=300), actions)
    junk = [object() for _ in range(10_000)]  # other addresses for the second env's creatures
    env = CrafterEnv(size=32, max_steps=300)
    second = _replay(env, actions, pickled=True)
    del junk
    assert len(first) > 100
    np.testing.assert_array_equal(first, second)
    chunks = env.world._chunks
    assert chunks and all(type(objs) is InsertionOrderSet for objs in chunks.values())
    s = InsertionOrderSet([3, 1, 2])
    s.add(0)
    s.remove(1)
    assert list(s) == [3, 2, 0] and 2 in s and len(s) == 3
    with pytest.raises(KeyError):
        s.remove(1)
