"""Phase-0 cost of a tokenizer at the frames' own 64×64 against the 256×256 that pretrained Cosmos weights
need, for the same architecture, measured in one run. Prints JSON.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_tokenizer_resolution.py [--preset small] [--S 8 1] [--steps 6]

For each temporal compression S and resolution: seconds per phase-0 training step (encode → pool →
unpool → decode → MSE → backward → AdamW, batch 2 clips of 1 + 2S frames of 64×64 uint8 frames, resized
to the resolution as the wrapper does) and frames per second through the frozen wrapper's windowed encode.
The pool is chosen so that both resolutions give the same 16 tokens per latent step.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dreamer.tokenizer import CosmosTokenizerWrapper, TokenizerConfig
from dreamer.tokenizer.fit import PooledAutoencoder, build_trainable_vae, reconstruction_loss


def train_step_seconds(preset: str, S: int, resolution: int, pool: int, frames: torch.Tensor, steps: int) -> float:
    torch.manual_seed(0)
    vae, _ = build_trainable_vae(preset, temporal_compression=S)
    model = PooledAutoencoder(vae, resolution, pool)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3)
    times = []
    for _ in range(steps + 1):  # the first step warms up
        t0 = time.perf_counter()
        recon, target, _ = model(frames)
        loss, _ = reconstruction_loss(recon, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return sum(times[1:]) / steps


def encode_fps(preset: str, S: int, resolution: int, pool: int, episode: torch.Tensor) -> float:
    torch.manual_seed(0)
    tok = CosmosTokenizerWrapper(cfg=TokenizerConfig(preset=preset, resolution=resolution, pool=pool,
                                                     temporal_compression=S, window_latents=max(1, 8 // S)))
    tok.encode(episode[:, : 1 + 8])  # warm-up
    t0 = time.perf_counter()
    tok.encode(episode)
    return episode.shape[1] / (time.perf_counter() - t0)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--S", type=int, nargs="+", default=[8, 1])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--episode-frames", type=int, default=129)
    a = p.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    out = {"threads": torch.get_num_threads(), "preset": a.preset, "rows": []}
    for S in a.S:
        frames = torch.randint(0, 256, (2, 1 + 2 * S, 64, 64, 3), dtype=torch.uint8, generator=g)
        episode = torch.randint(0, 256, (1, a.episode_frames, 64, 64, 3), dtype=torch.uint8, generator=g)
        for resolution, pool in ((64, 2), (256, 8)):
            row = {"S": S, "resolution": resolution, "pool": pool, "tokens": 16}
            row["train_step_s"] = round(train_step_seconds(a.preset, S, resolution, pool, frames, a.steps), 3)
            row["encode_frames_per_s"] = round(encode_fps(a.preset, S, resolution, pool, episode), 1)
            out["rows"].append(row)
            print(json.dumps(row), flush=True)
    for S in a.S:
        r64, r256 = [r for r in out["rows"] if r["S"] == S]
        out[f"S{S}_train_speedup_64_vs_256"] = round(r256["train_step_s"] / r64["train_step_s"], 1)
        out[f"S{S}_encode_speedup_64_vs_256"] = round(r64["encode_frames_per_s"] / r256["encode_frames_per_s"], 1)
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
