"""Real-env evaluation speed: episodes played one at a time against together in lockstep. Prints JSON.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_eval.py --config configs/crafter_small.yaml \
        --checkpoint checkpoints/crafter_small/phase2_final.pt [--episodes 30]

Plays the same seeds (eval.seed + i) with the agent of a phase-2/3 checkpoint twice through the episode runner
(``run_episodes`` with ``AgentBatchPolicy``): ``parallel=1`` with serial env resets (one episode after another, one encode and
one policy call per decision and episode: how evaluation ran before) and ``parallel=episodes`` with the
resets in ``eval.reset_workers`` processes (all together, one batched encode and one batched policy call
per decision). Reports wall time of each, the speed-up, and whether the per-episode results agree
(Crafter is not exactly reproducible from a seed, so a few may differ).
Thread settings are printed; compare ratios measured in one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dreamer.agent import AgentConfig
from dreamer.agent.acting import AgentBatchPolicy
from dreamer.config import load
from dreamer.data.cache import LatentCache
from dreamer.envs.evaluation import summarise
from dreamer.envs.runner import run_episodes
from dreamer.pipeline.build import build_agent
from dreamer.presets import from_dict
from dreamer.tokenizer import build_tokenizer
from dreamer.training.checkpoint import load_checkpoint


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=[])
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--checkpoint", required=True, help="a phase-2 or phase-3 checkpoint (holds the agent)")
    p.add_argument("--episodes", type=int, default=30)
    a = p.parse_args(argv)
    cfg = load(a.config, a.set)
    ckpt = load_checkpoint(a.checkpoint)
    if "agent" not in ckpt.get("models", {}):
        raise SystemExit(f"{a.checkpoint} holds no agent (models: {sorted(ckpt.get('models', {}))})")
    cfg.agent = from_dict(AgentConfig, ckpt["config"]["agent"], "agent")  # the agent as it was trained
    cache = LatentCache(cfg.data.cache_dir)
    tok = build_tokenizer(cfg.tokenizer)
    agent = build_agent(cfg, tok, cache, "cpu", ckpt["models"]["agent"])
    seeds = [cfg.eval.seed + i for i in range(a.episodes)]
    context = min(cfg.data.clip_len, agent.cfg.max_time)
    out = {"threads": torch.get_num_threads(), "episodes": a.episodes, "S": cache.chunk_len, "context": context}
    results = {}
    for name, parallel, workers in (("one_at_a_time", 1, 1), ("together", a.episodes, cfg.eval.reset_workers)):
        t0 = time.perf_counter()
        policy = AgentBatchPolicy(tok, agent, cache.mean, cache.std, context=context)
        results[name] = run_episodes(cfg.env, seeds, policy, cfg.eval.max_steps, parallel=parallel,
                                     reset_workers=workers)
        out[f"{name}_seconds"] = round(time.perf_counter() - t0, 2)
        s = summarise(results[name])
        out[f"{name}_return"] = round(s["return_mean"], 3)
        out[f"{name}_env_steps"] = int(sum(r["length"] for r in results[name]))
    out["speedup"] = round(out["one_at_a_time_seconds"] / out["together_seconds"], 2)
    out["episodes_identical"] = sum(x == y for x, y in zip(results["one_at_a_time"], results["together"]))
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
