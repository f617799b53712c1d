"""train_phase0_tokenizer.py end to end on three tiny episodes: fit, save, resume, hand off to the cache."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import train_phase0_tokenizer as phase0
from dreamer.config import load
from dreamer.data.episode import ActionSpace, Episode, save_episode
from dreamer.pipeline.data import prepare_data
from dreamer.tokenizer import CosmosTokenizerWrapper
from dreamer.training.runtime import Runtime


def _frames(T: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = np.zeros((T, 64, 64, 3), dtype=np.uint8) + rng.integers(30, 120, 3).astype(np.uint8)
    for t in range(T):
        x0 = (3 * t + 5 * seed) % 48
        f[t, 24:40, x0 : x0 + 16] = [240, 220, 30]
    return f


@pytest.fixture(scope="module")
def episodes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eps")
    for i in range(3):
        T = 16 + 4 * i
        ep = Episode(_frames(T + 1, i), np.zeros((T, 1), np.int64), np.zeros(T, np.float32), True, False,
                     ActionSpace(("action",), (17,)), {}, {"env_id": "test"})
        save_episode(root / f"ep_{i:03d}.npz", ep)
    return root


TEST_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "test.yaml")  # the shared test overlay


def _args(tmp_path: Path, episodes: Path, steps: int, *extra: str) -> list[str]:
    sets = [
        "run=p0", f"checkpoint_root={tmp_path / 'ckpt'}", f"data.episodes_dir={episodes}",
        f"data.cache_dir={tmp_path / 'cache'}", "data.val_fraction=0.34",
        f"tokenizer.pretrained={tmp_path / 'ckpt' / 'p0' / 'tokenizer'}",  # phase 0's own output, as crafter_small
        f"phase0.steps={steps}", "phase0.batch_size=1", "phase0.lr=0.001", "phase0.warmup=1", "phase0.log_every=1",
        "phase0.eval_every=2", "phase0.ckpt_every=2", "phase0.eval_clips=2", "phase0.clip_frames=9", *extra,
    ]
    return ["--config", TEST_CONFIG, *[a for s in sets for a in ("--set", s)]]


def test_fit_resume_and_handoff(tmp_path, episodes):
    out = tmp_path / "ckpt" / "p0" / "tokenizer"
    with pytest.raises(FileNotFoundError, match="train_phase0_tokenizer.py"):  # phase 1 before phase 0
        CosmosTokenizerWrapper(cfg=load(None, [f"tokenizer.pretrained={out}", "tokenizer.resolution=64"]).tokenizer)

    m = phase0.main(_args(tmp_path, episodes, 4))
    info = json.loads((out / "phase0.json").read_text())
    assert (out / "config.json").is_file() and info["step"] == 4 and len(info["episodes"]["val"]) == 1
    assert info["weights_sha256"] == m["weights_sha256"] and info["source"].startswith("preset 'tiny'")
    assert m["psnr"] > m["before_fitting"]["psnr"], m  # even 4 steps beat the random-weight tokenizer
    run = tmp_path / "ckpt" / "p0"
    assert (run / "phase0_step4.pt").is_file() and any((run / "tb" / "phase0").iterdir())

    # rerunning with more steps resumes from step 4 and replaces the tokenizer; the same command again is a no-op
    m6 = phase0.main(_args(tmp_path, episodes, 6))
    assert json.loads((out / "phase0.json").read_text())["step"] == 6 and m6["weights_sha256"] != m["weights_sha256"]
    stamp = (out / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    phase0.main(_args(tmp_path, episodes, 6))
    assert (out / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp

    # the phases load it frozen and its identity is the cache's
    cfg = load([TEST_CONFIG], _args(tmp_path, episodes, 6)[3::2])
    tok, cache = prepare_data(Runtime(cfg=cfg, device=torch.device("cpu")))
    assert cache.tokenizer_identity["weights_sha256"] == m6["weights_sha256"] == tok.identity()["weights_sha256"]
    assert not any(p.requires_grad for p in tok.parameters())
    # (loading the folder in a fresh process with HF_HUB_OFFLINE=1: tests/tokenizer/test_cosmos.py)

    # a fitted tokenizer without a checkpoint to resume is never silently refitted
    for p in run.glob("phase0_step*.pt"):
        p.unlink()
    with pytest.raises(FileExistsError, match="init_from"):
        phase0.main(_args(tmp_path, episodes, 6))


def test_stops_on_a_plateau_at_one_latent_per_frame(tmp_path, episodes):
    """S = 1 (tokenizer.temporal_compression=1, clips of 2 frames, each encoded alone as the Crafter presets do:
    window_latents 0); a gain of 100 dB is never reached, so the second evaluation ends the fit: the tokenizer is
    saved from that step and a rerun does nothing."""
    out = tmp_path / "ckpt" / "p0" / "tokenizer"
    args = _args(tmp_path, episodes, 10, "tokenizer.temporal_compression=1", "tokenizer.window_latents=0",
                 "phase0.clip_frames=2", "phase0.patience=1", "phase0.min_delta=100")
    phase0.main(args)
    info = json.loads((out / "phase0.json").read_text())
    assert info["step"] == 4 and [s for s, _ in info["curve"]] == [2, 4] and info["temporal_compression"] == 1
    stamp = (out / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    phase0.main(args)
    assert (out / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp
    tok = CosmosTokenizerWrapper(cfg=load([TEST_CONFIG], args[3::2]).tokenizer)
    assert tok.S == 1 and tok.identity()["weights_sha256"] == info["weights_sha256"]


def test_action_head_shapes_the_latents_and_stays_in_phase_0(tmp_path, episodes):
    """phase0.action_weight > 0: an auxiliary head predicts each latent step's actions from the pooled latent;
    it trains with the tokenizer, is checkpointed for resume, and is not part of the saved tokenizer."""
    out = tmp_path / "ckpt" / "p0" / "tokenizer"
    args = _args(tmp_path, episodes, 4, "phase0.action_weight=1.0")
    m = phase0.main(args)
    assert 0.0 <= m["action_accuracy"] <= 1.0
    ckpt = torch.load(tmp_path / "ckpt" / "p0" / "phase0_step4.pt", weights_only=True)
    assert set(ckpt["models"]) == {"vae", "action_head"}
    tok = CosmosTokenizerWrapper(cfg=load([TEST_CONFIG], args[3::2]).tokenizer)
    assert tok.identity()["weights_sha256"] == m["weights_sha256"]
    assert json.loads((out / "phase0.json").read_text())["eval"]["action_accuracy"] == m["action_accuracy"]


def test_state_head_trains_with_the_tokenizer_and_stays_in_phase_0(tmp_path, episodes):
    """phase0.state_weight > 0: a head predicts each latent's Crafter state (view cells, inventory, facing) from the
    pooled latent; it is checkpointed for resume, reports held-out accuracies, and is not part of the tokenizer.
    Episodes without the state extras are refused, naming the file and the key."""
    with pytest.raises(KeyError, match=r"ep_000\.npz.*local_view.*phase0\.state_weight=0"):
        phase0.main(_args(tmp_path / "bare", episodes, 2, "phase0.state_weight=0.1"))
    root = tmp_path / "state_eps"
    rng = np.random.default_rng(0)
    for i in range(3):
        T = 16 + 4 * i
        extras = {"local_view": rng.integers(0, 19, (T + 1, 9, 7)).astype(np.int16),
                  "inventory": rng.integers(0, 12, (T + 1, 16)).astype(np.int32),
                  "facing": np.array([[0, 1]] * (T + 1), np.int8), "daylight": np.ones(T + 1, np.float32),
                  "sleeping": np.zeros(T + 1, bool)}
        ep = Episode(_frames(T + 1, i), np.zeros((T, 1), np.int64), np.zeros(T, np.float32), True, False,
                     ActionSpace(("action",), (17,)), extras, {"env_id": "test"})
        save_episode(root / f"ep_{i:03d}.npz", ep)
    out = tmp_path / "ckpt" / "p0" / "tokenizer"
    m = phase0.main(_args(tmp_path, root, 4, "phase0.state_weight=0.1"))
    for k in ("state_view_accuracy", "state_inventory_accuracy", "state_facing_accuracy"):
        assert 0.0 <= m[k] <= 1.0
    ckpt = torch.load(tmp_path / "ckpt" / "p0" / "phase0_step4.pt", weights_only=True)
    assert set(ckpt["models"]) == {"vae", "state_head"}
    assert CosmosTokenizerWrapper(cfg=load([TEST_CONFIG], _args(tmp_path, root, 4)[3::2]).tokenizer).identity()[
        "weights_sha256"] == m["weights_sha256"]
    info = json.loads((out / "phase0.json").read_text())
    assert "state_view_accuracy" in info["eval"]
    # the state probe at the end: the fitted latents beside the token-grid colours and the state encoder
    assert set(m["probe"]) == set(info["probe"]) == {"latents", "pixels", "state"}
    for fig in m["probe"].values():
        assert set(fig) == {"inventory", "in_front_balanced", "creatures_balanced"}
        assert all(0.0 <= v <= 1.0 for v in fig.values())
    assert info["probe"]["latents"]["train_samples"] > 0
