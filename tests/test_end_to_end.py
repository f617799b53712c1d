"""The whole pipeline at one latent per frame (S = 1) and at the design's S = 8: Crafter episodes collected
here, phase 0, the cache, phases 1-3 with their diagnostics, acting in the real env and the summary."""

from __future__ import annotations

from pathlib import Path

import pytest

import train_phase0_tokenizer
import train_phase1_cosmos
import train_phase2
import train_phase3
from dreamer.config import load
from dreamer.data.cache import LatentCache
from dreamer.summary import summarise_run

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = str(ROOT / "configs" / "test.yaml")


@pytest.mark.slow
@pytest.mark.parametrize("S", [1, 8])
def test_every_phase_at_decision_rate(tmp_path, S):
    sets = [
        f"checkpoint_root={tmp_path / 'ck'}", f"data.episodes_dir={tmp_path / 'eps'}", f"data.cache_dir={tmp_path / 'cache'}",
        "data.collect=true", "collect.num_episodes=3", "collect.workers=2", "env.max_steps=40", "eval.max_steps=20",
        # S = 1 as the Crafter presets: every frame encoded alone (window_latents 0); S = 8 in windows of 2 latents
        f"tokenizer.temporal_compression={S}", f"tokenizer.window_latents={0 if S == 1 else 2}",
        "data.clip_len=6" if S == 1 else "data.clip_len=3",
        f"tokenizer.pretrained={tmp_path / 'ck' / 't' / 'tokenizer'}", f"phase0.clip_frames={1 + 2 * S}",
        "phase0.steps=2", "phase0.eval_every=2", "phase0.eval_clips=2", "phase0.batch_size=1",
        "phase1.steps=2", "phase1.eval_every=2", "phase1.diagnose=true",
        "phase2.steps=2", "phase2.eval_every=2", "phase2.eval_episodes=2", "phase2.diagnose=true",
        "phase3.steps=2", "phase3.eval_episodes=1", "phase3.diagnose=true", "phase3.context=3", "phase3.horizon=3",
    ]
    args = ["--config", TEST_CONFIG, *[a for s in sets for a in ("--set", s)]]
    run = tmp_path / "ck" / "t"
    fitted = train_phase0_tokenizer.main(args)
    assert fitted["psnr"] > fitted["before_fitting"]["psnr"]
    train_phase1_cosmos.main([*args, "--no-diagnose"])
    cache = LatentCache(tmp_path / "cache")
    assert cache.chunk_len == S and cache.episode(cache.names[0]).actions.shape[1] == S
    p2 = train_phase2.main([*args, "--no-diagnose"])
    assert p2["env"]["summaries"]["bc"]["episodes"] == 2 and p2["env"]["summaries"]["bc"]["length_mean"] > 0
    p3 = train_phase3.main([*args, "--no-diagnose"])
    assert set(p3["summaries"]) >= {"bc", "pmpo"}
    for name in ("phase1_cosmos_final.pt", "phase2_final.pt", "phase3_final.pt", "phase2_eval.json"):
        assert (run / name).is_file(), name
    summary = summarise_run(load([TEST_CONFIG], args[3::2]))
    assert summary["heldout_reconstruction"]["psnr_db"] > 0 and (run / "reconstruction.png").is_file()

    # A saved agent, outside the pipeline (dreamer/evaluate.py): the README's three lines act in the env with the
    # checkpoint's normalisation (no cache), and `python -m dreamer.evaluate` plays it beside the baselines.
    import json

    import numpy as np

    import dreamer
    from dreamer import evaluate

    agent = dreamer.load_agent(run / "phase3_final.pt")
    env = agent.make_env(); obs, info = env.reset(seed=10000); agent.reset(seed=10000)
    obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
    assert env.action_space.contains(agent.act(obs, info)) and agent.phase == 3
    assert isinstance(reward, float) and not (terminated or truncated)
    assert np.allclose(agent.data.mean, cache.mean) and np.allclose(agent.data.std, cache.std)
    assert agent.action_counts is not None and sum(agent.action_counts[0]) > 0  # phase 2's, carried by phase 3
    out = evaluate.main(["--checkpoint", str(run / "phase3_final.pt"), "--episodes", "2", "--video"])
    written = json.loads((run / "phase3_final.evaluate.json").read_text())
    assert set(written["summaries"]) == {"random", "frame_blind", "pmpo"} == set(out["summaries"])
    assert written["seeds"] == [10000, 10001] and all(s["episodes"] == 2 for s in written["summaries"].values())
    assert (run / "phase3_final_episode10000.mp4").stat().st_size > 0
    assert (run / "phase3_final.evaluate.png").is_file() and (run / "phase3_results.png").is_file()
    assert (run / "phase2_results.png").is_file()
    # every evaluation file of the run has the one schema (dreamer.envs.records)
    from dreamer.envs.records import FIELDS, check_eval_record

    files = sorted([*run.glob("*_eval.json"), *run.glob("*.evaluate.json")])
    assert [p.name for p in files] == ["phase2_eval.json", "phase3_eval.json", "phase3_final.evaluate.json"]
    for p in files:
        raw = json.loads(p.read_text())
        assert check_eval_record(raw, p) is raw and None not in (raw[f] for f in FIELDS), p
    assert written["phase"] == 3 and written["checkpoint"] == str((run / "phase3_final.pt").resolve())
