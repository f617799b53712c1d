"""A converted MineRL dataset goes through the latent cache and phase-1 training steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dreamer.data.cache import LatentCache
from dreamer.minecraft.convert import ConvertConfig, convert
from dreamer.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def test_converted_minerl_through_cache_and_phase1(tmp_path, make_minerl_traj, monkeypatch):
    for i in range(3):
        make_minerl_traj(tmp_path / "raw" / "MineRLTreechop-v0" / f"stream_{i}", T=40)
    summary = convert(ConvertConfig(format="minerl", src=str(tmp_path / "raw"), out=str(tmp_path / "eps"),
                                    progress=False))
    assert summary.converted == 3
    import train_phase1_cosmos

    monkeypatch.chdir(ROOT)
    sets = [
        f"checkpoint_root={tmp_path / 'ckpt'}", f"data.episodes_dir={tmp_path / 'eps'}",
        f"data.cache_dir={tmp_path / 'cache'}", "data.clip_len=4", "data.val_fraction=0.34",
        "tokenizer.preset=tiny", "tokenizer.resolution=64", "tokenizer.pool=2", "tokenizer.window_latents=2",
        "tokenizer.bf16=false", "dynamics.d_model=32", "dynamics.num_layers=2", "dynamics.num_heads=2",
        "dynamics.num_kv_heads=1", "dynamics.max_time=8", "dynamics.k_max=8", "phase1.steps=2",
        "phase1.batch_size=2", "phase1.warmup=1", "phase1.diagnose=false", "phase1.eval_batches=1",
        "phase1.eval_context=2",
    ]
    train_phase1_cosmos.main(["--config", "configs/minerl_cosmos.yaml"] + [a for s in sets for a in ("--set", s)])
    cache = LatentCache(tmp_path / "cache")
    assert cache.action_space.dims == 15 and cache.chunk_len == 8
    ep = cache.episode(cache.names[0])
    assert ep.actions.shape == (len(ep), 8, 15) and np.isfinite(ep.latents).all()
    ckpt = load_checkpoint(tmp_path / "ckpt" / "dreamerv4_minerl_cosmos" / "phase1_cosmos_final.pt")
    assert ckpt["step"] == 2 and ckpt["action_space"]["cards"][8:10] == [11, 11]
