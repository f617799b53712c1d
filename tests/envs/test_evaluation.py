from __future__ import annotations

import math

import numpy as np
import pytest

from dreamer.envs.config import EnvConfig
from dreamer.envs.evaluation import crafter_achievements, crafter_score, summarise
from dreamer.envs.runner import random_policy, run_episodes

NAMES = crafter_achievements()


def test_crafter_score_hand_computed():
    assert len(NAMES) == 22
    assert crafter_score(dict.fromkeys(NAMES, 0.0)) == pytest.approx(0.0)
    assert crafter_score(dict.fromkeys(NAMES, 100.0)) == pytest.approx(100.0)
    half = {n: (100.0 if i < 11 else 0.0) for i, n in enumerate(NAMES)}
    assert crafter_score(half) == pytest.approx(math.sqrt(101) - 1)  # exp((11 ln 101 + 11 ln 1) / 22) - 1
    rates = {n: float(i) for i, n in enumerate(NAMES)}  # 0, 1, …, 21
    expected = math.exp(sum(math.log(1 + i) for i in range(22)) / 22) - 1
    assert crafter_score(rates) == pytest.approx(expected)


def test_crafter_score_rejects_bad_input():
    with pytest.raises(ValueError, match="missing"):
        crafter_score({"collect_wood": 50.0})
    with pytest.raises(ValueError, match="percentages"):
        crafter_score(dict.fromkeys(NAMES, 150.0))


def test_summarise_hand_made_results():
    results = [
        {"return": 1.0, "length": 10, "achievements": ["collect_wood"]},
        {"return": 2.0, "length": 20, "achievements": {"collect_wood": 3, "place_table": 1, "eat_cow": 0}},
        {"return": 6.0, "length": 30, "achievements": []},
    ]
    s = summarise(results)
    assert s["episodes"] == 3
    assert s["return_mean"] == pytest.approx(3.0) and s["return_std"] == pytest.approx(math.sqrt(7.0))
    assert s["return_ci95"] == pytest.approx(1.96 * math.sqrt(7.0) / math.sqrt(3))
    assert s["length_mean"] == pytest.approx(20.0) and s["length_std"] == pytest.approx(10.0)
    rates = s["success_rates"]
    assert set(rates) == set(NAMES)
    assert rates["collect_wood"] == pytest.approx(200 / 3) and rates["place_table"] == pytest.approx(100 / 3)
    assert rates["eat_cow"] == 0.0
    expected = math.exp((math.log(1 + 200 / 3) + math.log(1 + 100 / 3)) / 22) - 1
    assert s["score"] == pytest.approx(expected)


def test_summarise_without_crafter_achievements():
    s = summarise([{"return": 5.0, "length": 3}])
    assert s["return_std"] == 0.0 and "score" not in s
    s = summarise([{"return": 1.0, "length": 3, "achievements": ["found_key"]}])
    assert s["success_rates"] == {"found_key": 100.0} and s["score"] is None
    with pytest.raises(ValueError, match="no 'length'"):
        summarise([{"return": 1.0}])


def test_run_episodes_random():
    cfg = EnvConfig(max_steps=8, crafter_area=(16, 16))
    res = run_episodes(cfg, [0, 1], random_policy())
    assert [r["seed"] for r in res] == [0, 1]
    for r in res:
        assert 1 <= r["length"] <= 8 and r["terminated"] != r["truncated"]
        assert set(r["achievements"]) <= set(NAMES)
    s = summarise(res)
    assert s["episodes"] == 2 and 0.0 <= s["score"] <= 100.0
    assert np.isfinite(s["return_mean"])


def test_envs_reset_in_worker_processes_play_as_reset_here():
    """reset_envs with workers: the envs come back pickled from other processes and play exactly as envs
    reset here; the runner gives the same results either way."""
    import numpy as np

    from dreamer.envs.config import EnvConfig
    from dreamer.envs.runner import reset_envs

    cfg = EnvConfig(env_id="crafter", size=64, max_steps=20, crafter_area=(16, 16))
    here, there = reset_envs(cfg, [3, 4], 1), reset_envs(cfg, [3, 4], 2)
    for (e1, o1, _), (e2, o2, _) in zip(here, there):
        assert np.array_equal(o1, o2)
        for a in (3, 4, 1, 5):
            assert np.array_equal(e1.step(a)[0], e2.step(a)[0])
    assert run_episodes(cfg, [5, 6], random_policy([17]), reset_workers=2) == run_episodes(cfg, [5, 6], random_policy([17]))


def test_the_plain_verdict_of_one_policy_against_its_baseline():
    from dreamer.envs.evaluation import beats

    bc, blind = {"return_mean": 6.1, "return_ci95": 1.26, "score": 11.4}, {"return_mean": 2.23, "return_ci95": 0.48,
                                                                           "score": 2.4}
    ok, line = beats("BC", bc, "the frame-blind policy", blind)
    assert ok and line == ("BC return 6.10 ± 1.26 vs the frame-blind policy 2.23 ± 0.48; score 11.40% vs 2.40%: BC "
                           "beats the frame-blind policy beyond both 95% intervals")
    ok, line = beats("PMPO", {"return_mean": 6.34, "return_ci95": 1.15}, "BC", bc)
    assert not ok and "does NOT clearly beat BC" in line and "no difference" in line
    ok, line = beats("PMPO", {"return_mean": 5.0, "return_ci95": 1.0}, "BC", bc)
    assert not ok and line.endswith("WARNING, PMPO does NOT beat BC")
