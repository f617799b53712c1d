from __future__ import annotations

import numpy as np
import pytest

from dreamer.data.episode import load_episode
from dreamer.envs.collect import collect_episodes, main, result_of_episode, rollout
from dreamer.envs.config import CollectConfig, EnvConfig
from dreamer.envs.crafter_env import CrafterEnv, crafter_names

CFG = EnvConfig(max_steps=25, crafter_area=(16, 16))


def test_collect_writes_valid_aligned_episodes_and_resumes(tmp_path):
    cc = CollectConfig(num_episodes=2, policy="scripted", epsilon=0.2, seed=5)
    paths = collect_episodes(CFG, cc, tmp_path, progress=False)
    assert [p.name for p in paths] == ["ep_000000.npz", "ep_000001.npz"]
    names = crafter_names()
    for i, p in enumerate(paths):
        ep = load_episode(p)
        T = ep.num_steps
        assert 1 <= T <= 25 and ep.frames.shape == (T + 1, 64, 64, 3)
        assert ep.truncated == (T == 25) and ep.terminated != ep.truncated
        assert ep.action_space.cards == (17,)
        inv, ach, ign = ep.extras["inventory"], ep.extras["achievements"], ep.extras["ignore_action"]
        assert inv.dtype == np.int32 and inv.shape == (T + 1, 16)
        assert ach.dtype == np.int32 and ach.shape == (T + 1, 22)
        assert ign.dtype == bool and ign.shape == (T + 1,) and not ign[-1]
        assert ep.meta["inventory_names"] == list(names["inventory"])
        assert ep.meta["achievement_names"] == list(names["achievements"])
        assert ep.meta["source"] == "crafter-scripted-eps0.2" and ep.meta["seed"] == 5 + i
        assert ep.meta["env_id"] == "crafter" and ep.meta["fps"] > 0
        # row 0 is the state at reset: initial inventory, nothing achieved
        assert inv[0, names["inventory"].index("health")] == 9 and inv[0, names["inventory"].index("wood")] == 0
        assert (ach[0] == 0).all() and (np.diff(ach, axis=0) >= 0).all()
        # a new achievement is rewarded +1 on the step that unlocks it (plus health change / 10)
        first = (np.diff((ach > 0).sum(1)) > 0).astype(np.float32)
        health = np.diff(inv[:, names["inventory"].index("health")]) / 10
        np.testing.assert_allclose(ep.rewards, first + health, atol=1e-5)
        # frame 0 is the observation of reset(seed)
        env = CrafterEnv(area=CFG.crafter_area)
        np.testing.assert_array_equal(ep.frames[0], env.reset(seed=5 + i)[0])
    mtimes = [p.stat().st_mtime_ns for p in paths]
    more = collect_episodes(CFG, CollectConfig(num_episodes=3, seed=5), tmp_path, progress=False)
    assert [p.stat().st_mtime_ns for p in more[:2]] == mtimes  # existing files untouched
    assert more[2].exists() and load_episode(more[2]).meta["seed"] == 7


def test_ignore_action_marks_sleeping_steps():
    env = CrafterEnv(max_steps=12, area=(16, 16))
    sleep = crafter_names()["actions"].index("sleep")

    def policy(obs, info):
        env.player.inventory["energy"] = 2  # tired: "sleep" puts the player to sleep
        return sleep

    ep = rollout(env, policy, 3, CFG, CollectConfig(policy="random"))
    ign = ep.extras["ignore_action"]
    assert not ign[0]  # the first "sleep" is executed (it is what puts the player to sleep)
    assert ign[1:-1].all() and not ign[-1]


def test_random_policy_generic_env(tmp_path):
    cfg = EnvConfig(env_id="DreamerTestImage-v0", size=16, max_steps=50)
    (p,) = collect_episodes(cfg, CollectConfig(num_episodes=1, policy="random"), tmp_path, progress=False)
    ep = load_episode(p)
    assert ep.num_steps == 4 and ep.terminated and ep.action_space.cards == (3, 4)
    assert ep.frames.shape == (5, 16, 16, 3) and ep.extras == {}
    assert ep.meta["source"] == "dreamertestimage-v0-random"
    assert result_of_episode(ep) == {"return": 2.0, "length": 4}


def test_scripted_policy_needs_crafter(tmp_path):
    cfg = EnvConfig(env_id="DreamerTestImage-v0", size=16)
    with pytest.raises(ValueError, match="Crafter only"):
        collect_episodes(cfg, CollectConfig(num_episodes=1, policy="scripted"), tmp_path, progress=False)


def test_cli_logs_summary(tmp_path):
    summary = main(["--out", str(tmp_path), "--episodes", "1", "--policy", "random", "--max-steps", "10",
                    "--env-id", "DreamerTestImage-v0", "--size", "16", "--no-progress"])
    assert summary["episodes"] == 1 and summary["frames"] == 5


def test_config_validation():
    with pytest.raises(ValueError, match="policy"):
        CollectConfig(policy="greedy")
    with pytest.raises(ValueError, match="epsilon"):
        CollectConfig(epsilon=1.5)
    with pytest.raises(ValueError, match="max_steps"):
        EnvConfig(max_steps=0)
    with pytest.raises(ValueError, match="crafter_area"):
        EnvConfig(crafter_area=(8,))
