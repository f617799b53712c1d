"""The state probe: its ground truth (materials in front of the player) and a fit on real Crafter episodes."""

from __future__ import annotations

import numpy as np

from diagnostics.probe import MATERIALS, near_flags, run_probe
from dreamer.data.cache import LatentCache, build_cache
from dreamer.envs.collect import collect_episodes
from dreamer.envs.config import CollectConfig, EnvConfig
from dreamer.envs.crafter_env import semantic_ids


def test_near_flags_look_where_the_player_faces():
    ids = semantic_ids()
    view = np.full((2, 9, 7), ids["grass"], dtype=np.int16)
    view[:, 4, 5] = ids["tree"]  # two cells below the player (x = 4, y = 3 + 2)
    facing = np.array([[0, 1], [0, -1]])  # down, then up
    flags = near_flags(view, facing)
    tree = MATERIALS.index("tree")
    assert flags[0, tree] and not flags[1, tree]
    assert not flags[:, MATERIALS.index("water")].any()


def test_probe_on_real_episodes(tmp_path, tiny_tokenizer):
    env = EnvConfig(env_id="crafter", size=64, max_steps=60, crafter_area=(32, 32))
    paths = collect_episodes(env, CollectConfig(num_episodes=4, policy="scripted", seed=3), tmp_path / "eps",
                             progress=False)
    build_cache(paths, tiny_tokenizer, tmp_path / "cache", val_fraction=0.25)
    cache = LatentCache(tmp_path / "cache")
    for pixels in (False, True):
        out = run_probe(cache, pixels=pixels, epochs=2)
        assert out["input"] == ("pixels" if pixels else "latents") and out["samples"] > 0
        assert out["features"] == (16 * 3 if pixels else 16 * 16)  # 4x4 colours, or 16 tokens x 16 channels
        assert set(out["near"]) == set(MATERIALS) and len(out["inventory"]) == 16
        for v in [*out["inventory"].values(), *out["near"].values()]:
            assert 0.0 <= v["accuracy"] <= 1.0 and 0.0 <= v["majority"] <= 1.0
    assert run_probe(cache, epochs=1, pool=2)["features"] == 4 * 16  # 2x2 tokens averaged: 4 tokens
