"""train_phase3.main end to end on a tiny cache of synthetic episodes and a phase-2 checkpoint built here:
final checkpoint layout, frozen parts untouched, the real-env comparison table, exact resume, refusals."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import train_phase3
from dreamer.agent import Agent
from dreamer.config import load
from dreamer.data.episode import ActionSpace, Episode, save_episode
from dreamer.dynamics import DynamicsModel
from dreamer.envs.records import FIELDS, check_eval_record
from dreamer.pipeline import phase3 as phase3_module
from dreamer.pipeline.data import prepare_data
from dreamer.training.checkpoint import CheckpointMismatchError, atomic_save, data_info, load_checkpoint, payload
from dreamer.training.runtime import Runtime, seed_everything

ROOT = Path(__file__).resolve().parents[1]


def crafter_like_episode(T: int, seed: int) -> Episode:
    """Random 64x64 frames with Crafter's action space (one component of 17), so the real env can act."""
    rng = np.random.default_rng(seed)
    return Episode(rng.integers(0, 256, (T + 1, 64, 64, 3), dtype=np.uint8), rng.integers(0, 17, (T, 1)),
                   (rng.random(T) < 0.1).astype(np.float32), True, False, ActionSpace(("action",), (17,)), {},
                   {"env_id": "crafter", "fps": 10})


TEST_CONFIG = str(ROOT / "configs" / "test.yaml")  # the shared test overlay; the keys below are this test's own


def overrides(tmp, run: str, steps: int, extra: tuple[str, ...] = ()) -> list[str]:
    sets = [
        f"run={run}", f"checkpoint_root={tmp / 'ckpt'}", f"data.episodes_dir={tmp / 'eps'}",
        f"data.cache_dir={tmp / 'cache'}", "dynamics.d_model=16", "dynamics.sample_steps=2", "agent.d_model=16",
        f"phase3.steps={steps}", "phase3.keep_checkpoints=10", *extra,
    ]
    return ["--config", TEST_CONFIG, *[a for s in sets for a in ("--set", s)]]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Episodes, their cache and a phase2_final.pt (payload layout of train_phase2.py)."""
    tmp = tmp_path_factory.mktemp("phase3")
    for i in range(4):
        save_episode(tmp / "eps" / f"ep_{i}.npz", crafter_like_episode(T=40, seed=i))
    cfg = load([TEST_CONFIG], overrides(tmp, "p2", 1)[3::2])
    seed_everything(cfg.seed)  # as runtime.start(): the random tiny tokenizer is the script's
    tokenizer, cache = prepare_data(Runtime(cfg=cfg, device=torch.device("cpu")))
    S, cards = cache.chunk_len, list(cache.action_space.cards)
    torch.manual_seed(1)
    dyn = DynamicsModel(cfg.dynamics, tokenizer.num_tokens, tokenizer.channels, cards, S)
    agent = Agent(cfg.agent, tokenizer.num_tokens, tokenizer.channels, cards, S)
    with torch.no_grad():  # a phase-2 reward head that predicts something
        for p in agent.reward.mlp.out.parameters():
            p.normal_(0, 0.5)
    ckpt = payload(cfg, 10, {"dynamics": dyn, "agent": agent}, data_info=data_info(cache),
                        extra={"phase": 2})
    path = tmp / "phase2_final.pt"
    atomic_save(ckpt, path)
    return tmp, path, ckpt


def _final(tmp, run):
    return load_checkpoint(tmp / "ckpt" / run / "phase3_final.pt")


def test_trains_heads_only_and_compares_in_the_real_env(setup, capsys):
    tmp, p2_path, p2 = setup
    args = overrides(tmp, "main", 2, ("phase3.eval_episodes=1", "phase3.diagnose=true", "phase3.eval_every=1"))
    result = train_phase3.main([*args, "--phase2-checkpoint", str(p2_path), "--no-diagnose"])  # too few pairs to pass
    final = _final(tmp, "main")
    assert final["step"] == 2 and final["phase"] == 3 and set(final["models"]) == {"dynamics", "agent", "prior"}
    for k, v in p2["models"]["dynamics"].items():
        assert torch.equal(final["models"]["dynamics"][k], v), k
    changed = set()
    for k, v in p2["models"]["agent"].items():
        if not torch.equal(final["models"]["agent"][k], v):
            changed.add(k.split(".")[0])
    assert changed == {"policy", "value"}  # trunk, reward and continue heads untouched
    for k, v in final["models"]["prior"].items():  # pi_prior is the phase-2 policy head
        assert torch.equal(v, p2["models"]["agent"][f"policy.{k}"])
    path = tmp / "ckpt" / "main" / "phase3_eval.json"
    saved = json.loads(path.read_text())
    assert check_eval_record(saved, path) is saved and None not in (saved[f] for f in FIELDS)  # the one schema
    assert saved["schema"] == 1 and saved["phase"] == 3 and set(saved["exploitation"]) == {"bc", "pmpo"}
    assert list(saved["summaries"]) == list(saved["episodes"]) == ["random", "bc", "pmpo"]
    assert saved["seeds"] == [10_000]
    for s in saved["summaries"].values():
        assert s["episodes"] == 1 and 1 <= s["length_mean"] <= 12 and "score" in s
    assert result["summaries"]["pmpo"]["return_mean"] == saved["summaries"]["pmpo"]["return_mean"]
    out = capsys.readouterr().out
    assert "pmpo" in out and "bc" in out and "success rate (%)" in out and "collect_wood" in out
    assert list((tmp / "ckpt" / "main" / "tb" / "phase3").glob("events.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp / "ckpt" / "main" / "tb" / "phase3"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    points = [(e.step, e.value) for e in acc.Scalars("env/pmpo/return_mean")]  # the curve, then the final point
    assert [s for s, _ in points] == [1, 2] and points[-1][1] == pytest.approx(saved["summaries"]["pmpo"]["return_mean"])
    assert {"loss/phase3/policy", "loss/phase3/value", "train/phase3/adv/frac_pos", "env/random/return_mean",
            "env/bc/return_mean"} <= set(acc.Tags()["scalars"])
    assert {"eval/phase3/results", "eval/phase3/context|imagined"} <= set(acc.Tags()["images"])
    scheme = re.compile(r"(loss|train|eval)/phase3/.+|env/(random|bc|pmpo)/.+")
    tags = [t for kind in ("scalars", "images") for t in acc.Tags()[kind]]
    assert [t for t in tags if not scheme.fullmatch(t)] == []
    assert (tmp / "ckpt" / "main" / "phase3_dream.mp4").stat().st_size > 0  # the end-of-phase video


def test_no_policy_update_on_one_signed_advantages_and_baselines_optional(setup, monkeypatch):
    """min_sign_fraction=0.5 asks for an exact 50/50 split of signs, which these batches never have: only the
    value head learns. With eval_baselines=false the evaluation plays the phase-3 policy alone. phase3.sample_steps=1
    samples every imagined latent in one pass, and the saved world-model config keeps its own (2)."""
    from dreamer.dynamics import sampler

    used, orig = set(), sampler.shortcut_sample
    monkeypatch.setattr(sampler, "shortcut_sample", lambda *a: used.add(a[-1]) or orig(*a))
    tmp, p2_path, p2 = setup
    args = overrides(tmp, "gate", 3, ("pmpo.min_sign_fraction=0.5", "pmpo.center_advantages=false",
                                      "pmpo.value_warmup=0", "phase3.eval_episodes=1",
                                      "phase3.eval_baselines=false", "phase3.sample_steps=1"))
    result = train_phase3.main([*args, "--phase2-checkpoint", str(p2_path)])
    assert used == {1}
    assert _final(tmp, "gate")["config"]["dynamics"]["sample_steps"] == 2
    agent = _final(tmp, "gate")["models"]["agent"]
    assert all(torch.equal(agent[k], v) for k, v in p2["models"]["agent"].items() if k.startswith("policy."))
    assert any(not torch.equal(agent[k], v) for k, v in p2["models"]["agent"].items() if k.startswith("value."))
    assert list(result["summaries"]) == ["pmpo"]


def test_resume_matches_uninterrupted(setup, monkeypatch):
    tmp, p2_path, _ = setup
    argv = ["--phase2-checkpoint", str(p2_path)]
    train_phase3.main([*overrides(tmp, "ref", 4), *argv])
    real_step = phase3_module.grouped_step

    def crash_at_3(opt, sched, loss, pc, guard, step, provenance=None):
        if step == 3:
            raise KeyboardInterrupt("simulated crash after the step-2 checkpoint")
        return real_step(opt, sched, loss, pc, guard, step, provenance)

    monkeypatch.setattr(phase3_module, "grouped_step", crash_at_3)
    with pytest.raises(KeyboardInterrupt):
        train_phase3.main([*overrides(tmp, "cut", 4), *argv])
    assert (tmp / "ckpt" / "cut" / "phase3_step2.pt").is_file()
    assert not (tmp / "ckpt" / "cut" / "phase3_final.pt").exists()
    monkeypatch.setattr(phase3_module, "grouped_step", real_step)
    train_phase3.main([*overrides(tmp, "cut", 4), *argv])
    ref, cut = _final(tmp, "ref")["models"]["agent"], _final(tmp, "cut")["models"]["agent"]
    for k in ref:
        assert torch.allclose(ref[k], cut[k], atol=1e-6), k
    assert _final(tmp, "cut")["optimizer"]["state"].keys() == _final(tmp, "ref")["optimizer"]["state"].keys()


def test_refuses_mismatched_or_wrong_checkpoints(setup):
    tmp, _, p2 = setup
    bad = dict(p2, latent_stats={"mean": [m + 1.0 for m in p2["latent_stats"]["mean"]],
                                 "std": p2["latent_stats"]["std"]})
    atomic_save(bad, tmp / "bad_stats.pt")
    with pytest.raises(CheckpointMismatchError, match="latent statistics"):
        train_phase3.main([*overrides(tmp, "bad", 1), "--phase2-checkpoint", str(tmp / "bad_stats.pt")])
    atomic_save(dict(p2, models={"dynamics": p2["models"]["dynamics"]}), tmp / "no_agent.pt")
    with pytest.raises(ValueError, match="lacks models \\['agent'\\]"):
        train_phase3.main([*overrides(tmp, "bad", 1), "--phase2-checkpoint", str(tmp / "no_agent.pt")])


@pytest.mark.slow
def test_two_processes_with_and_without_fsdp_agree(setup):
    """Under torchrun (2 gloo processes) the heads' gradients are averaged by hand; with phase3.fsdp the frozen
    world model is sharded too. Both pass the diagnostics gate (run on every rank), end with the same heads,
    changed from phase 2, and hand the frozen dynamics on unchanged (gathered into a plain checkpoint)."""
    tmp, p2_path, p2 = setup
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    gate = ("phase3.diagnose=true", "pmpo.value_warmup=1", "pmpo.min_sign_fraction=0")  # signs: not this test's
    for run, extra in (("ddp", gate), ("fsdp", (*gate, "phase3.fsdp=true"))):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29521",
               "train_phase3.py", *overrides(tmp, run, 3, extra), "--phase2-checkpoint", str(p2_path)]
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert out.returncode == 0, out.stderr[-3000:]
    assert "FSDP: DynamicsModel sharded over 2 ranks" in out.stderr
    a, b = _final(tmp, "ddp")["models"], _final(tmp, "fsdp")["models"]
    for k, v in a["agent"].items():
        torch.testing.assert_close(b["agent"][k], v, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(a["agent"][k], p2["models"]["agent"][k]) for k in a["agent"] if k.startswith("policy."))
    for k, v in p2["models"]["dynamics"].items():
        assert type(b["dynamics"][k]) is torch.Tensor and torch.equal(b["dynamics"][k], v), k
