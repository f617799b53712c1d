"""Latency per imagined decision of the play page (no browser, no HTTP): prints JSON.

A decision = one KV-cached dynamics step (sample_steps passes over one latent), decoding the new latent
to a frame, the agent's suggestion / reward / continue (agent checkpoints) and the PNG the page shows.
Decisions cycle through the key map's bindings and run past the dynamics' max_time, so the occasional
restart from the last half of the history is counted too. Target: <= 0.3 s on 2 CPU cores.

Usage: OMP_WAIT_POLICY=PASSIVE PYTHONPATH=. python bench/bench_play.py --checkpoint checkpoints/crafter_tiny/phase3_final.pt
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import numpy as np
import torch

from dreamer.viewer.load import load_world
from dreamer.viewer.session import PlaySession


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="checkpoints/crafter_tiny/phase3_final.pt")
    p.add_argument("--config", action="append", default=[])
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--decisions", type=int, default=None, help="default: 1.5 x the dynamics' max_time")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    world = load_world(args.checkpoint, args.config, args.set, args.device)
    session = PlaySession(world)
    keys = [b.key for b in session.keymap.bindings] or [""]
    n = args.decisions or int(1.5 * world.dynamics.cfg.max_time)
    for i in range(args.warmup):
        session.step(keys=[keys[i % len(keys)]])
    session.reset()
    parts: dict[str, list[float]] = {}
    wall = []
    for i in range(n):
        t0 = time.perf_counter()
        state = session.step(keys=[keys[i % len(keys)]])
        wall.append(time.perf_counter() - t0)
        for k, v in state["latency_ms"].items():
            parts.setdefault(k, []).append(v)
    w = np.asarray(wall)
    print(json.dumps({
        "checkpoint": args.checkpoint, "device": str(world.device), "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "S": world.S, "num_tokens": world.tokenizer.num_tokens,
        "channels": world.tokenizer.channels, "frame_size": world.cfg.env.size,
        "tokenizer": {"preset": world.cfg.tokenizer.preset, "resolution": world.cfg.tokenizer.resolution},
        "dynamics": {"d_model": world.dynamics.cfg.d_model, "layers": world.dynamics.cfg.num_layers,
                     "max_time": world.dynamics.cfg.max_time, "sample_steps": world.dynamics.cfg.sample_steps},
        "agent": world.agent is not None, "decisions": n,
        "seconds_per_decision": {"mean": round(float(w.mean()), 4), "median": round(float(np.median(w)), 4),
                                 "p90": round(float(np.quantile(w, 0.9)), 4), "max": round(float(w.max()), 4)},
        "mean_ms": {k: round(float(np.mean(v)), 2) for k, v in parts.items()},
        "target_s": 0.3, "meets_target": bool(np.median(w) <= 0.3),
    }, indent=1))


if __name__ == "__main__":
    main()
