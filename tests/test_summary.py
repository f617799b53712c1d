"""The run summary: a reconstruction picture and the held-out PSNR next to the colour references."""

from __future__ import annotations

import numpy as np
import pytest

from dreamer.config import load
from dreamer.data.cache import LatentCache, build_cache
from dreamer.data.episode import save_episode
from dreamer.summary import heldout_reconstruction, summarise_run


def plain_episode(episode_factory, seed: int):
    """Every frame one colour: averaging to any grid of colours reconstructs it exactly."""
    ep = episode_factory(T=12, seed=seed)
    rng = np.random.default_rng(seed)
    ep.frames[:] = rng.integers(0, 256, (ep.frames.shape[0], 1, 1, 3), dtype=np.uint8)
    return ep


def test_summary_reports_heldout_psnr_and_references(tmp_path, episode_factory, tiny_tokenizer):
    paths = [save_episode(tmp_path / "eps" / f"ep_{i}.npz", plain_episode(episode_factory, i)) for i in range(4)]
    build_cache(paths, tiny_tokenizer, tmp_path / "cache", val_fraction=0.5)
    cache = LatentCache(tmp_path / "cache")
    out = heldout_reconstruction(tiny_tokenizer, cache, clips=3)
    assert not tiny_tokenizer.vae.training  # the frozen tokenizer is left in eval mode
    assert out["episodes"] == "held-out" and out["clips"] == 3
    assert out["token_grid_colour_reference_db"] > 60  # exact up to rounding
    assert out["colour_4x4_reference_db"] == pytest.approx(out["token_grid_colour_reference_db"])  # 16 tokens: 4×4
    assert 0 < out["psnr_db"] < out["colour_4x4_reference_db"]  # random weights reconstruct nothing

    cfg = load(None, [f"data.cache_dir={tmp_path / 'cache'}", f"checkpoint_root={tmp_path / 'ck'}",
                      "tokenizer.resolution=64", "tokenizer.pool=2", "tokenizer.window_latents=2"])
    summary = summarise_run(cfg)
    assert summary["heldout_reconstruction"]["colour_4x4_reference_db"] > 60
    assert summary["heldout_reconstruction"]["psnr_db"] == pytest.approx(out["psnr_db"], abs=3)
    assert (tmp_path / "ck" / cfg.run / "reconstruction.png").is_file()
