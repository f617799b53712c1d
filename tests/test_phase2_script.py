"""train_phase2.py end to end on a tiny cache of synthetic episodes: phase-1 checkpoint in, agent
trained, final checkpoint and real-env evaluation out; resume; refusal of a mismatched checkpoint."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train_phase1_cosmos
import train_phase2
from dreamer.agent import RLConfig
from dreamer.agent.heldout import action_counts, heldout, heldout_clips
from dreamer.config import load
from dreamer.data.episode import save_episode
from dreamer.data.synthetic import make_episode
from dreamer.envs.records import FIELDS, check_eval_record
from dreamer.pipeline.build import build_dynamics, frozen
from dreamer.pipeline.checkpoints import BEST, load_handoff
from dreamer.pipeline.phase2 import Phase2Objective
from dreamer.training.checkpoint import CheckpointMismatchError, atomic_save, latest_checkpoint, load_checkpoint
from dreamer.training.optim import NonFiniteGuard, make_optimizer, make_scheduler, optimizer_step

ROOT = Path(__file__).resolve().parents[1]

TEST_CONFIG = str(ROOT / "configs" / "test.yaml")  # the shared test overlay; the keys below are this test's own
COMMON = ["data.val_fraction=0.34", "phase1.steps=2", "phase1.eval_every=2"]
PHASE2 = ["agent.focal_gamma=1.0", "phase2.steps=4", "phase2.eval_every=2", "phase2.eval_episodes=1",
          "eval.max_steps=10", "eval.seed=7"]


def _args(tmp, extra=()):
    sets = [*COMMON, f"checkpoint_root={tmp / 'ckpt'}", f"data.episodes_dir={tmp / 'eps'}",
            f"data.cache_dir={tmp / 'cache'}", *extra]
    return ["--config", TEST_CONFIG, *[a for s in sets for a in ("--set", s)]]


@pytest.fixture(scope="module")
def phase1_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("phase2")
    for i in range(6):  # 6 episodes of 17..37 steps: 4..6 latent steps each (S = 8)
        save_episode(tmp / "eps" / f"ep{i}.npz", make_episode(T=17 + 4 * i, seed=i, terminated=i % 2 == 0))
    train_phase1_cosmos.main(_args(tmp))
    return tmp


def test_train_resume_and_evaluate(phase1_run):
    tmp = phase1_run
    run = tmp / "ckpt" / "t"
    cmd = [*_args(tmp, PHASE2), "--checkpoint", str(run / "phase1_cosmos_final.pt")]
    result = train_phase2.main(cmd)
    final = load_checkpoint(run / "phase2_final.pt")
    assert sorted(final["models"]) == ["agent", "dynamics"] and final["step"] == 4 and final["phase"] == 2
    p1 = load_checkpoint(run / "phase1_cosmos_final.pt")
    for k, v in p1["models"]["dynamics"].items():  # the frozen dynamics is carried forward unchanged
        assert torch.equal(final["models"]["dynamics"][k], v), k
    assert final["latent_stats"] == p1["latent_stats"] and final["action_space"]["cards"] == [17]
    h = result["heldout"]
    assert 0.0 <= h["bc_accuracy"] <= 1.0 and 0.0 <= h["majority_accuracy"] <= 1.0 and h["entries"] > 0
    # evaluation in the real env: BC and random policies on the same seed, written to the run dir
    ev = json.loads((run / "phase2_eval.json").read_text())
    assert check_eval_record(ev, run / "phase2_eval.json") is ev and None not in (ev[f] for f in FIELDS)  # one schema
    assert ev["schema"] == 1 and ev["phase"] == 2 and ev["seeds"] == [7]
    assert list(ev["summaries"]) == list(ev["episodes"]) == ["random", "frame_blind", "bc"]
    for who in ("bc", "random", "frame_blind"):
        (ep,) = ev["episodes"][who]
        assert ep["seed"] == 7 and 1 <= ep["length"] <= 10
    assert final["eval"]["env"]["bc"] == ev["summaries"]["bc"] and result["env"] == ev
    assert any(p.name.startswith("events") for p in (run / "tb" / "phase2").iterdir())
    assert (run / "phase1_dream.mp4").stat().st_size > 0 and (run / "phase2_dream.mp4").stat().st_size > 0

    # resume: drop the last checkpoint and the final one, rerun the same command -> same weights
    (run / "phase2_step4.pt").unlink()
    (run / "phase2_final.pt").unlink()
    assert latest_checkpoint(run, "phase2").name == "phase2_step2.pt"
    train_phase2.main(cmd)
    again = load_checkpoint(run / "phase2_final.pt")
    for k, v in final["models"]["agent"].items():
        torch.testing.assert_close(again["models"]["agent"][k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_refuses_mismatched_checkpoint(phase1_run, tmp_path):
    tmp = phase1_run
    ckpt = load_checkpoint(tmp / "ckpt" / "t" / "phase1_cosmos_final.pt")
    cache_mean0 = ckpt["latent_stats"]["mean"][0]  # the phase-1 checkpoint agrees with the cache
    ckpt["latent_stats"]["mean"][0] += 0.5
    bad = atomic_save(ckpt, tmp_path / "other_stats.pt")
    cmd = [*_args(tmp, [*PHASE2, f"checkpoint_root={tmp_path}"]), "--checkpoint", str(bad)]
    with pytest.raises(CheckpointMismatchError, match="latent statistics differ") as e:
        train_phase2.main(cmd)
    msg = str(e.value)
    assert str(bad) in msg and repr(ckpt["latent_stats"]["mean"][0]) in msg and repr(cache_mean0) in msg
    atomic_save({"models": {"agent": {}}, "config": {}}, tmp_path / "no_dyn.pt")
    with pytest.raises(ValueError, match="lacks models \\['dynamics'\\]"):
        train_phase2.main([*cmd[:-1], str(tmp_path / "no_dyn.pt")])


def test_phase2_step_trains_agent_only(phase1_run, tiny_tokenizer):
    """One optimizer step through the script's objective: trunk and heads (the value head too: the behaviour
    policy's value) get gradients; the frozen dynamics and the tokenizer get none."""
    from dreamer.agent import Agent
    from dreamer.config import load
    from dreamer.data.cache import LatentCache
    from dreamer.data.loader import ClipSampler

    tmp = phase1_run
    cfg = load([TEST_CONFIG], [*COMMON, *PHASE2])
    p1 = load_handoff(tmp / "ckpt" / "t" / "phase1_cosmos_final.pt", cfg, 1)
    cache = LatentCache(tmp / "cache")
    dyn = frozen(build_dynamics(cfg, tiny_tokenizer, cache, torch.device("cpu"), state=p1["models"]["dynamics"]))
    agent = Agent(cfg.agent, 16, 16, [17], cache.chunk_len)
    opt = make_optimizer(agent.parameters(), cfg.phase2)
    sched = make_scheduler(opt, cfg.phase2)
    batch = ClipSampler(cache, cache.train_names, 4, 2).batch(0)
    net = Phase2Objective(agent, RLConfig())
    loss, _ = net(batch)
    before = [p.detach().clone() for p in agent.trunk.parameters()]
    ok, _ = optimizer_step(opt, sched, loss, cfg.phase2, NonFiniteGuard(3), 0)
    assert ok and any(not torch.equal(a, b) for a, b in zip(before, agent.trunk.parameters()))
    for name in ("trunk", "policy", "reward", "cont", "value"):
        grads = [p.grad for p in getattr(agent, name).parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), name
    assert all(p.grad is None and not p.requires_grad for p in dyn.parameters()) and not dyn.training
    assert all(p.grad is None and not p.requires_grad for p in tiny_tokenizer.parameters())


def test_heldout_figures_cover_every_step_once(phase1_run):
    """Held-out clips count each val latent step once; the majority baseline matches numpy."""
    import numpy as np

    from dreamer.agent import Agent
    from dreamer.config import load
    from dreamer.data.cache import LatentCache

    cache = LatentCache(phase1_run / "cache")
    counted: dict = {}
    for n, s, length, first in heldout_clips(cache, cache.names, 4):
        for k in range(s + first, s + length):
            counted[(n, k)] = counted.get((n, k), 0) + 1
    assert counted == {(n, k): 1 for n in cache.names for k in range(len(cache.episode(n)))}
    train_a = np.concatenate([np.asarray(cache.episode(n).actions)[np.asarray(cache.episode(n).action_mask)]
                              for n in cache.train_names])  # (V, 1)
    (counts,) = action_counts(cache, cache.train_names)
    assert counts.tolist() == np.bincount(train_a[:, 0], minlength=17).tolist()
    majority = np.array([counts.argmax()])
    val_a = np.concatenate([np.asarray(cache.episode(n).actions)[np.asarray(cache.episode(n).action_mask)]
                            for n in cache.val_names])
    cfg = load([TEST_CONFIG], COMMON + PHASE2)
    agent = Agent(cfg.agent, 16, 16, [17], cache.chunk_len)
    m, acts = heldout(agent, cache, cache.val_names, 4, majority, 2, "cpu", torch.Generator(), RLConfig())
    assert m["entries"] == val_a.size and m["majority_accuracy"] == pytest.approx((val_a == majority).mean())
    val_r = np.concatenate([np.asarray(cache.episode(n).rewards) for n in cache.val_names])
    val_c = np.concatenate([np.asarray(cache.episode(n).continues) for n in cache.val_names])
    # the untrained heads: reward 0 everywhere (the constant predictor), continue logits near 0
    assert m["reward_mae_nonzero_constant"] == pytest.approx(np.abs(val_r[val_r != 0]).mean(), rel=1e-5)
    assert m["reward_mae_nonzero"] == pytest.approx(m["reward_mae_nonzero_constant"], rel=1e-5)
    assert m["reward_mae_zero"] == pytest.approx(0.0, abs=1e-6)
    assert m["continue_base_rate_accuracy"] == pytest.approx(max((val_c < 0.5).mean(), (val_c >= 0.5).mean()))
    assert -1.0 <= m["value_return_corr"] <= 1.0 and m["value_abs_error"] >= 0
    assert torch.equal(acts["data"].sort(0).values, torch.from_numpy(np.sort(val_a, 0)))
    assert acts["policy"].shape == acts["data"].shape and agent.training


@pytest.mark.slow
def test_two_processes_fsdp_matches_ddp(phase1_run):
    """phase2.fsdp=true under torchrun (2 gloo processes) trains the same agent as DDP (up to the order of the
    gradient reductions), passes the diagnostics gate and evaluates held out on every rank, and writes a plain
    checkpoint; phase2.keep_best gathers the best weights on every rank (rank 0 decides) in both layouts."""
    tmp = phase1_run
    p1 = tmp / "ckpt" / "t" / "phase1_cosmos_final.pt"
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    finals = {}
    for run, extra in (("ddp", ()), ("fsdp", ("phase2.fsdp=true",))):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29522",
               "train_phase2.py", *_args(tmp, [*PHASE2, f"run={run}", "phase2.eval_episodes=0", "phase2.diagnose=true",
                                              "phase2.keep_best=true", *extra]),
               "--checkpoint", str(p1)]
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert out.returncode == 0, out.stderr[-3000:]
        finals[run] = load_checkpoint(tmp / "ckpt" / run / "phase2_final.pt")
    assert "FSDP: Phase2Objective sharded over 2 ranks" in out.stderr
    a, b = finals["ddp"]["models"]["agent"], finals["fsdp"]["models"]["agent"]
    for k, v in a.items():
        assert type(b[k]) is torch.Tensor
        torch.testing.assert_close(b[k], v, rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
    assert finals["fsdp"]["eval"]["heldout"]["bc_accuracy"] == pytest.approx(finals["ddp"]["eval"]["heldout"]["bc_accuracy"])
    bests = {run: load_checkpoint(tmp / "ckpt" / run / BEST[2]) for run in finals}
    assert bests["fsdp"]["step"] == bests["ddp"]["step"] == finals["fsdp"]["eval"]["best"]["step"]
    assert all(type(v) is torch.Tensor for v in bests["fsdp"]["models"]["agent"].values())  # gathered


def test_greedy_evaluation_without_baselines(phase1_run):
    """eval.greedy plays the BC policy's most likely actions; phase2.eval_baselines=false skips random and
    frame-blind (the BC variants of docs/agent.md reuse the baselines of one run)."""
    tmp = phase1_run
    run = tmp / "ckpt" / "greedy"
    extra = (*PHASE2, "run=greedy", "eval.greedy=true", "phase2.eval_baselines=false", "phase2.steps=2")
    train_phase2.main([*_args(tmp, extra), "--checkpoint", str(tmp / "ckpt" / "t" / "phase1_cosmos_final.pt")])
    saved = json.loads((run / "phase2_eval.json").read_text())
    assert check_eval_record(saved, run / "phase2_eval.json") is saved and None not in (saved[f] for f in FIELDS)
    assert saved["greedy"] is True and list(saved["summaries"]) == list(saved["episodes"]) == ["bc"]


def test_keep_best_writes_the_lowest_heldout_nll_and_it_hands_off(phase1_run, caplog):
    """phase2.keep_best: phase2_best.pt holds the weights of the lowest held-out BC NLL of the evaluations
    (at least as low as the final weights'), is a phase-2 checkpoint phase 3 accepts, and a rerun keeps it."""
    tmp = phase1_run
    run = tmp / "ckpt" / "best"
    extra = (*PHASE2, "run=best", "phase2.keep_best=true", "phase2.eval_every=1", "phase2.eval_episodes=0")
    cmd = [*_args(tmp, extra), "--checkpoint", str(tmp / "ckpt" / "t" / "phase1_cosmos_final.pt")]
    with caplog.at_level("INFO"):
        result = train_phase2.main(cmd)
    logged = [float(m) for m in re.findall(r"step \d+: held-out BC accuracy [\d.]+ \(majority action [\d.]+\), NLL "
                                           r"([\d.]+)", caplog.text)]
    assert len(logged) == 4
    best = load_checkpoint(run / BEST[2])
    final = load_checkpoint(run / "phase2_final.pt")
    assert best["phase"] == 2 and best["eval"]["heldout"]["bc_nll"] == pytest.approx(min(logged), abs=1e-3)
    assert result["best"] == final["eval"]["best"] == {"step": best["step"], "bc_nll": best["eval"]["heldout"]["bc_nll"]}
    assert best["eval"]["heldout"]["bc_nll"] <= final["eval"]["heldout"]["bc_nll"]
    cfg = load([TEST_CONFIG])
    assert sorted(load_handoff(run / BEST[2], cfg, 2)["models"]) == ["agent", "dynamics"]
    before = (run / BEST[2]).read_bytes()
    assert train_phase2.main(cmd)["best"] == result["best"]  # rerun of the finished run: the best is kept
    assert (run / BEST[2]).read_bytes() == before


def test_a_real_env_learning_curve_and_the_results_picture(phase1_run):
    """phase2.env_eval_every: the BC policy plays env_eval_episodes episodes every N steps, a TensorBoard curve
    env/bc/return_mean ending at the final evaluation; the comparison is also a bar chart (PNG and TensorBoard
    image) and the checkpoint keeps the data's action counts (the frame-blind baseline's). Every tag follows the
    one scheme: loss/phase2/, train/phase2/, eval/phase2/, env/<policy>/."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tmp = phase1_run
    run = tmp / "ckpt" / "curve"
    extra = (*PHASE2, "run=curve", "phase2.env_eval_every=2", "phase2.env_eval_episodes=1")
    train_phase2.main([*_args(tmp, extra), "--checkpoint", str(tmp / "ckpt" / "t" / "phase1_cosmos_final.pt")])
    acc = EventAccumulator(str(run / "tb" / "phase2"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    points = [(e.step, e.value) for e in acc.Scalars("env/bc/return_mean")]
    final = json.loads((run / "phase2_eval.json").read_text())["summaries"]["bc"]
    assert [s for s, _ in points] == [2, 4] and points[-1][1] == pytest.approx(final["return_mean"])
    assert "eval/phase2/results" in acc.Tags()["images"] and (run / "phase2_results.png").stat().st_size > 0
    assert {"loss/phase2/loss", "train/phase2/grad_norm", "eval/phase2/bc_accuracy", "env/random/return_mean",
            "env/frame_blind/return_mean"} <= set(acc.Tags()["scalars"])
    scheme = re.compile(r"(loss|train|eval)/phase2/.+|env/(random|frame_blind|bc)/.+")
    tags = [t for kind in ("scalars", "images", "histograms") for t in acc.Tags()[kind]]
    assert tags and [t for t in tags if not scheme.fullmatch(t)] == []
    phase1 = EventAccumulator(str(tmp / "ckpt" / "t" / "tb" / "phase1"), size_guidance={"images": 0, "scalars": 0})
    phase1.Reload()  # phase 1's own folder, the same scheme
    tags = [t for kind in ("scalars", "images") for t in phase1.Tags()[kind]]
    assert "loss/phase1/total" in tags and "eval/phase1/open_loop_context|predicted|true" in tags
    assert [t for t in tags if not re.fullmatch(r"(loss|train|eval)/phase1/.+", t)] == []
    counts = load_checkpoint(run / "phase2_final.pt")["action_counts"]
    assert len(counts) == 1 and len(counts[0]) == 17 and sum(counts[0]) > 0
