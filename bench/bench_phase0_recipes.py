"""Which phase-0 recipe fits fastest per CPU second? Held-out PSNR after the same number of frames. JSON.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_phase0_recipes.py --config configs/crafter_small.yaml \
        [--episodes 40] [--frames 6400] [--threads 1]

Fits the config's tokenizer layout (S, resolution, pool) from the same random start on the first
``--episodes`` episodes of ``data.episodes_dir`` (4 held out), once per recipe (batch of 2-frame clips, lr,
SSIM weight), each seeing ``--frames`` frames, and prints the held-out PSNR through the pooled bottleneck
every quarter and the wall time. The recipes run one after another, at ``--threads`` threads each.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dreamer.config import load
from dreamer.data.episode import list_episodes
from dreamer.tokenizer.fit import (
    FrameClipSampler,
    PooledAutoencoder,
    build_trainable_vae,
    evaluate_reconstruction,
    load_frames,
    probe_layout,
    reconstruction_loss,
)

RECIPES = [  # (batch of clips, lr, weight of 1 - SSIM)
    (16, 2e-3, 0.0), (16, 6e-3, 0.0), (16, 2e-3, 1.0), (4, 2e-3, 0.0), (4, 1e-3, 0.0), (2, 1e-3, 0.0),
]


def fit(cfg, frames: dict, train: list[str], heldout: list[dict], batch: int, lr: float, ssim_w: float,
        total_frames: int) -> dict:
    torch.manual_seed(0)
    vae, _ = build_trainable_vae(cfg.tokenizer.preset, temporal_compression=cfg.tokenizer.temporal_compression)
    model = PooledAutoencoder(vae, cfg.tokenizer.resolution, cfg.tokenizer.pool)
    clip = 1 + model.S
    sampler = FrameClipSampler({n: frames[n] for n in train}, clip, model.S, batch, seed=0)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.99))
    steps = total_frames // (batch * clip)
    curve, t0 = {}, time.perf_counter()
    for step in range(steps):
        recon, target, _ = model(sampler.batch(step)["frames"])
        loss, _ = reconstruction_loss(recon, target, ssim_w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if (step + 1) % max(1, steps // 4) == 0 or step + 1 == steps:
            curve[step + 1] = round(evaluate_reconstruction(model, heldout)[0]["psnr"], 2)
    return {"batch": batch, "lr": lr, "ssim_weight": ssim_w, "steps": steps, "psnr_by_step": curve,
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=[])
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--frames", type=int, default=6400)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = load(a.config, a.set)
    paths = list_episodes(Path(cfg.data.episodes_dir))[: a.episodes]
    if len(paths) < 5:
        raise SystemExit(f"{cfg.data.episodes_dir}: need at least 5 episodes, found {len(paths)}; collect them first")
    frames = load_frames(paths)
    names = sorted(frames)
    vae, _ = build_trainable_vae(cfg.tokenizer.preset, temporal_compression=cfg.tokenizer.temporal_compression)
    S = probe_layout(vae, cfg.tokenizer.resolution)[0]
    val = FrameClipSampler({n: frames[n] for n in names[:4]}, 1 + S, S, 16, seed=1)  # 16 held-out clips
    heldout = [val.collate(val.draw(10**6))]
    out = {"threads": a.threads, "episodes": len(names), "frames_per_recipe": a.frames, "recipes": []}
    for batch, lr, ssim_w in RECIPES:
        row = fit(cfg, frames, names[4:], heldout, batch, lr, ssim_w, a.frames)
        out["recipes"].append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
