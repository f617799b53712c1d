"""Does a held-out figure track the real-env score along phase 2? Prints JSON (and a table to stderr).

    OMP_WAIT_POLICY=PASSIVE python bench/bench_bc_checkpoints.py --config configs/crafter_small.yaml \
        --run-dir checkpoints/crafter_small_bc_steps6000 [--episodes 30]

For every phase-2 checkpoint of the run folder (``phase2_step*.pt``, ``phase2_best.pt``, ``phase2_final.pt``): the held-out
figures of phase 2 (BC accuracy and NLL on the cache's val episodes, next to the majority action) and the
BC policy in the real env on seeds eval.seed + i (sampled, lockstep), then the correlation of each held-out
figure with the Crafter score and the return across the checkpoints. A criterion that tracks the score is
one phase 2 could keep its best checkpoint by; one that does not says: judge BC in the real env.
Thread settings are printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dreamer.agent import AgentConfig
from dreamer.agent.acting import AgentBatchPolicy
from dreamer.agent.heldout import action_counts, heldout
from dreamer.config import load
from dreamer.data.cache import LatentCache
from dreamer.envs.evaluation import summarise
from dreamer.envs.runner import run_episodes
from dreamer.pipeline.build import build_agent
from dreamer.presets import from_dict
from dreamer.tokenizer import build_tokenizer
from dreamer.training.checkpoint import load_checkpoint


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in run_dir.glob("phase2_step*.pt") if (m := re.search(r"step(\d+)", p.name))]
    for name in ("phase2_best.pt", "phase2_final.pt"):  # the lowest held-out NLL (phase2.keep_best), the last
        if (run_dir / name).exists():
            found.append((int(load_checkpoint(run_dir / name)["step"]), run_dir / name))
    return sorted(dict(found).items())


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=[])
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--run-dir", required=True, type=Path)
    p.add_argument("--episodes", type=int, default=30)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cfg = load(a.config, a.set)
    cache = LatentCache(cfg.data.cache_dir)
    tok = build_tokenizer(cfg.tokenizer)
    counts = action_counts(cache, cache.train_names)
    majority = np.array([int(c.argmax()) for c in counts], dtype=np.int64)
    seeds = [cfg.eval.seed + i for i in range(a.episodes)]
    found = checkpoints(a.run_dir)
    if not found:
        raise SystemExit(f"{a.run_dir}: no phase2_step*.pt or phase2_final.pt")
    rows = []
    for step, path in found:
        ckpt = load_checkpoint(path)
        cfg.agent = from_dict(AgentConfig, ckpt["config"]["agent"], "agent")
        agent = build_agent(cfg, tok, cache, "cpu", ckpt["models"]["agent"]).eval()
        gen = torch.Generator().manual_seed(cfg.seed)
        held, _ = heldout(agent, cache, cache.val_names or cache.train_names, cfg.data.clip_len, majority,
                          cfg.phase2.batch_size, "cpu", gen, cfg.rl)
        t0 = time.perf_counter()
        policy = AgentBatchPolicy(tok, agent, cache.mean, cache.std, cfg.eval.greedy,
                                  min(cfg.data.clip_len, agent.cfg.max_time), "bc")
        s = summarise(run_episodes(cfg.env, seeds, policy, cfg.eval.max_steps, reset_workers=cfg.eval.reset_workers))
        rows.append({"step": step, "bc_accuracy": held["bc_accuracy"], "majority_accuracy": held["majority_accuracy"],
                     "bc_nll": held["bc_nll"], "return_mean": s["return_mean"], "return_ci95": s["return_ci95"],
                     "score": s["score"], "length_mean": s["length_mean"],
                     "eval_seconds": round(time.perf_counter() - t0, 1)})
        print(f"step {step:6d}: held-out acc {held['bc_accuracy']:.3f} (majority {held['majority_accuracy']:.3f}) "
              f"NLL {held['bc_nll']:.3f} | return {s['return_mean']:.2f} ± {s['return_ci95']:.2f}, "
              f"score {s['score']:.2f}%, length {s['length_mean']:.0f}", file=sys.stderr, flush=True)
    corr = {}
    if len(rows) >= 3:
        for key in ("bc_accuracy", "bc_nll"):
            x = np.array([r[key] for r in rows])
            for target in ("score", "return_mean"):
                y = np.array([r[target] for r in rows])
                corr[f"{key}~{target}"] = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else float("nan")
    out = {"threads": torch.get_num_threads(), "episodes": a.episodes, "run_dir": str(a.run_dir), "rows": rows,
           "correlation": corr}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
