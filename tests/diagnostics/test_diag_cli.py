"""``python -m diagnostics`` on a config, a small hand-written latent cache and checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diag_fixtures import CARDS, S

from diagnostics.cli import main
from dreamer.config import load
from dreamer.data.cache import LatentCache, write_manifest_file
from dreamer.dynamics import DynamicsModel, ShortcutForcingLoss
from dreamer.pipeline.data import make_tokenizer
from dreamer.training.checkpoint import atomic_save, data_info, payload
from dreamer.training.runtime import seed_everything

CONFIG = """
run: diag_cli
device: cpu
seed: 0
tokenizer: {preset: tiny, resolution: 64, pool: 2, window_latents: 2}
data: {clip_len: 6, val_fraction: 0.0, collect: false}
dynamics: {d_model: 16, num_layers: 2, num_heads: 2, num_kv_heads: 1, num_registers: 1, max_time: 16, k_max: 8,
           sample_steps: 2}
agent: {d_model: 16, num_layers: 1, num_heads: 2, max_time: 16, mlp_hidden: 32, head_hidden: 16, num_bins: 31}
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A config, a latent cache written by hand (no encoding) and a phase-1 checkpoint."""
    root = tmp_path_factory.mktemp("cli")
    cfg_path = root / "cfg.yaml"
    cfg_path.write_text(CONFIG + f"checkpoint_root: {root / 'ckpt'}\n")
    sets = [f"data.cache_dir={root / 'cache'}", f"data.episodes_dir={root / 'episodes'}"]
    cfg = load([str(cfg_path)], sets)
    seed_everything(cfg.seed)  # as the CLI (and runtime.start) do before building the tokenizer
    tok = make_tokenizer(cfg, "cpu")
    ident = tok.identity()
    rng = np.random.default_rng(0)
    names = [f"ep{i}" for i in range(3)]
    for name in names:
        d = root / "cache" / "episodes" / name
        d.mkdir(parents=True)
        L = 9
        mask = np.ones((L, S), dtype=bool)
        mask[-1] = False
        np.save(d / "latents.npy", (rng.normal(size=(L, tok.num_tokens, tok.channels)) * 2 + 1).astype(np.float16))
        np.save(d / "actions.npy", rng.integers(0, CARDS[0], size=(L, S, 1)).astype(np.int64))
        np.save(d / "action_mask.npy", mask)
        np.save(d / "rewards.npy", np.r_[0.0, rng.integers(0, 2, L - 1)].astype(np.float32))
        np.save(d / "continues.npy", np.ones(L, dtype=np.float32))
        (d / "source.json").write_text(json.dumps({
            "path": f"{name}.npz", "sha256": name, "tokenizer": ident["weights_sha256"], "num_steps": 8 * (L - 1),
            "action_space": {"names": ["a0"], "cards": CARDS}, "meta": {}}))
    write_manifest_file(root / "cache", names, ident, 0.0, 0)
    cache = LatentCache(root / "cache", expect_tokenizer=ident)
    torch.manual_seed(0)
    dyn = DynamicsModel(cfg.dynamics, tok.num_tokens, tok.channels, CARDS, S)
    models = {"dynamics": dyn, "loss": ShortcutForcingLoss(cfg.dynamics)}
    ckpt = root / "ckpt" / "diag_cli" / "phase1_cosmos_final.pt"
    atomic_save(payload(cfg, 10, models, None, None, data_info(cache)), ckpt)
    return cfg_path, [a for s in sets for a in ("--set", s)], ckpt


def test_cli_phase1_on_a_checkpoint(setup, capsys):
    cfg_path, sets, ckpt = setup
    argv = ["--phase", "1", "--config", str(cfg_path), "--checkpoint", str(ckpt), "--batch-size", "2"]
    code = main(argv + sets)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "diagnose_phase(1) on cpu" in out and "ok      checkpoint/loaded" in out and "tokenizer/output_shape" in out and "grad_audit/trainable_grads" in out


def test_cli_phase2_and_3_use_the_run_directory(setup, capsys):
    cfg_path, sets, _ = setup
    flags = sets
    assert main(["--phase", "2", "--config", str(cfg_path), "--compact"] + flags) == 0, capsys.readouterr().out
    code = main(["--phase", "3", "--config", str(cfg_path), "--compact"] + flags)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "requires_grad/prior" in out and "WARN    grad_audit/loss_source" in out  # no imagination yet: proxy


def test_cli_refuses_a_checkpoint_for_other_data(setup, tmp_path, capsys):
    cfg_path, sets, ckpt = setup
    state = torch.load(ckpt, weights_only=True)
    state["latent_stats"]["mean"] = [m + 1.0 for m in state["latent_stats"]["mean"]]
    other = tmp_path / "other.pt"
    atomic_save(state, other)
    code = main(["--phase", "1", "--config", str(cfg_path), "--checkpoint", str(other), "--compact"]
                + sets)
    out = capsys.readouterr().out
    assert code == 1 and "FAIL    checkpoint/compatible" in out
    assert "latent statistics differ" in " ".join(out.split())  # the hint, unwrapped


def test_cli_reports_a_setup_it_cannot_build(tmp_path, capsys):
    code = main(["--phase", "1", "--set", f"data.cache_dir={tmp_path}/none", "--set", "data.collect=false",
                 "--set", f"data.episodes_dir={tmp_path}/none", "--set", "device=cpu"])
    assert code == 2 and "holds no episode files" in capsys.readouterr().err
