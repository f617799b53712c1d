"""Tokenizer encode throughput and the latent cache's serving speed-up. Prints JSON.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_tokenizer_cache.py [--skip-full]

- encode_fps: frames per second through CosmosTokenizerWrapper.encode (64x64 frames upsampled to
  256, windowed), for the tiny and cv8x8x8 presets, fp32 and bf16 autocast.
- cache_speedup: time to serve one training batch (B clips of T latent steps) by encoding the clips
  on the fly, divided by the time to serve the same clips from the latent cache.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dreamer.data.cache import LatentCache, build_cache
from dreamer.data.episode import ActionSpace, Episode, save_episode
from dreamer.data.loader import ClipSampler
from dreamer.tokenizer import CosmosTokenizerWrapper, TokenizerConfig


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def encode_fps(preset: str, bf16: bool, frames: torch.Tensor, repeats: int) -> float:
    torch.manual_seed(0)
    tok = CosmosTokenizerWrapper(cfg=TokenizerConfig(preset=preset, bf16=bf16))
    return frames.shape[0] * frames.shape[1] / timed(lambda: tok.encode(frames), repeats)


def cache_speedup(B: int, T: int) -> dict:
    tok = CosmosTokenizerWrapper(cfg=TokenizerConfig(preset="tiny"))
    S = tok.S
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        paths, frames_of = [], {}
        for i in range(4):
            n = S * (T + 4)
            ep = Episode(rng.integers(0, 256, (n + 1, 64, 64, 3), dtype=np.uint8), rng.integers(0, 17, (n, 1)),
                         rng.normal(size=n).astype(np.float32), False, True, ActionSpace(("a",), (17,)))
            paths.append(save_episode(Path(d) / f"ep_{i}.npz", ep))
            frames_of[f"ep_{i}"] = torch.from_numpy(ep.frames)
        build_cache(paths, tok, Path(d) / "cache", val_fraction=0.0)
        cache = LatentCache(Path(d) / "cache")
        sampler = ClipSampler(cache, cache.train_names, T, B, seed=0)
        picks = sampler.draw(0)

        def from_cache():
            sampler.collate(picks)

        def on_the_fly():  # the frames of the same clips, encoded now (latent s covers frames up to S*s)
            for name, s in picks:
                f = frames_of[name][S * s : S * (s + T - 1) + 1]
                tok.encode(f[None])

        t_cache, t_fly = timed(from_cache, 5), timed(on_the_fly, 1)
    return {"batch": [B, T], "cache_s": t_cache, "on_the_fly_s": t_fly, "speedup": t_fly / t_cache}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--skip-full", action="store_true", help="skip the 106M-parameter cv8x8x8 preset")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    frames = torch.randint(0, 256, (1, 17, 64, 64, 3), dtype=torch.uint8)
    out = {"threads": torch.get_num_threads(), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
           "input": "1 clip x 17 frames of 64x64, upsampled to 256", "encode_fps": {}}
    for preset in ["tiny"] + ([] if args.skip_full else ["cv8x8x8"]):
        for bf16 in (False, True):
            out["encode_fps"][f"{preset}_{'bf16' if bf16 else 'fp32'}"] = round(
                encode_fps(preset, bf16, frames, 3 if preset == "tiny" else 1), 2)
    out["cache_speedup"] = cache_speedup(B=8, T=16)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
