"""The one-frame fast path of the tokenizer's convolutions (dreamer/tokenizer/framewise.py) against the layers' own
Conv3d path, in one run, alternating. Prints JSON.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_framewise.py --config configs/crafter_small.yaml [--set k=v]

On the config's tokenizer (its fitted weights when tokenizer.pretrained exists, else the preset's random ones) and
the first episode of data.episodes_dir (random frames when there is none): encode frames/s as the cache encodes
them (every frame alone at window_latents 0), decode frames/s, and one phase-0 training step (encode, pool, decode,
MSE, backward, AdamW) on phase0.batch_size clips of phase0.clip_frames frames; the largest latent difference
between the two paths. Thread settings are printed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diffusers.models.autoencoders.autoencoder_kl_cosmos import CosmosCausalConv3d

from dreamer.config import load
from dreamer.tokenizer import CosmosTokenizerWrapper
from dreamer.tokenizer.fit import PooledAutoencoder
from dreamer.tokenizer.framewise import FramewiseCausalConv3d


def set_path(vae, cls) -> None:
    for m in vae.modules():
        if isinstance(m, CosmosCausalConv3d):
            m.__class__ = cls


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", action="append", default=[])
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--frames", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    cfg = load(args.config or ["configs/crafter_small.yaml"], args.set)
    tok_cfg = cfg.tokenizer
    if tok_cfg.pretrained and not Path(tok_cfg.pretrained).is_dir():
        tok_cfg.pretrained = None
    tok = CosmosTokenizerWrapper(cfg=tok_cfg)
    files = sorted(glob.glob(os.path.join(cfg.data.episodes_dir, "*.npz")))
    frames = (torch.from_numpy(np.load(files[0])["frames"][: args.frames]) if files
              else torch.randint(0, 256, (args.frames, cfg.env.size, cfg.env.size, 3), dtype=torch.uint8))[None]
    vae = tok.vae
    trainer = PooledAutoencoder(vae, tok_cfg.resolution, tok_cfg.pool, tok_cfg.crop, framewise=tok_cfg.window_latents == 0)
    clips = frames[0, : cfg.phase0.batch_size * cfg.phase0.clip_frames].reshape(cfg.phase0.batch_size, cfg.phase0.clip_frames,
                                                                                 *frames.shape[2:])
    opt = torch.optim.AdamW(vae.parameters(), lr=0.0)  # lr 0: the weights stay the same for both paths

    def train_step():
        with torch.enable_grad():
            vae.requires_grad_(True)
            recon, target, _ = trainer(clips)
            torch.nn.functional.mse_loss(recon.float(), target).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            vae.requires_grad_(False)

    out = {"threads": torch.get_num_threads(), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
           "tokenizer": tok.source or tok_cfg.preset, "frames": int(frames.shape[1]), "window_latents": tok_cfg.window_latents}
    latents = {}
    for name, cls in (("conv3d", CosmosCausalConv3d), ("framewise", FramewiseCausalConv3d)) * 2:
        set_path(vae, cls)
        latents[name] = tok.encode(frames)
        enc = best_of(lambda: tok.encode(frames), args.repeats)
        dec = best_of(lambda: tok.decode(latents["conv3d"][:, :64]), args.repeats)
        step = best_of(train_step, args.repeats)
        out[name] = {"encode_fps": round(frames.shape[1] / enc, 1), "decode_fps": round(64 / dec, 1),
                     "phase0_step_s": round(step, 3)}
    for key in ("encode_fps", "decode_fps"):
        out[f"{key}_speedup"] = round(out["framewise"][key] / out["conv3d"][key], 2)
    out["phase0_step_speedup"] = round(out["conv3d"]["phase0_step_s"] / out["framewise"]["phase0_step_s"], 2)
    out["max_abs_latent_diff"] = float((latents["framewise"] - latents["conv3d"]).abs().max())
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
