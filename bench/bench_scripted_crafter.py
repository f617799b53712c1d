"""Benchmark the random and the scripted (ε-greedy) Crafter policies on the same seeded episodes.

Prints one JSON object: per policy the Crafter score, mean return ± std (and 95% interval), mean
length ± std, per-achievement success rates (%), plus the settings and wall time.

    PYTHONPATH=. python bench/bench_scripted_crafter.py --episodes 30 --max-steps 1000 --epsilon 0.2
"""

from __future__ import annotations

import argparse
import json
import logging
import time

from dreamer.envs.config import EnvConfig
from dreamer.envs.evaluation import summarise
from dreamer.envs.runner import StepPolicies, random_policy, run_episodes
from dreamer.envs.scripted_crafter import ScriptedCrafterPolicy


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=30)
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--epsilon", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0, help="episode i uses seed + i")
    p.add_argument("--policies", default="random,scripted")
    p.add_argument("--progress", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    env_cfg = EnvConfig(env_id="crafter", max_steps=a.max_steps)
    seeds = list(range(a.seed, a.seed + a.episodes))
    out = {"env_id": "crafter", "episodes": a.episodes, "max_steps": a.max_steps, "seeds": [seeds[0], seeds[-1]]}
    for name in a.policies.split(","):
        if name == "random":
            policy = random_policy([17])
        elif name == "scripted":
            policy = StepPolicies(lambda space: ScriptedCrafterPolicy(epsilon=a.epsilon), "scripted")
        else:
            raise SystemExit(f"unknown policy {name!r} (random, scripted)")
        t0 = time.time()
        results = run_episodes(env_cfg, seeds, policy, progress=a.progress)
        summary = summarise(results)
        summary["wall_seconds"] = round(time.time() - t0, 1)
        summary["died"] = sum(r["terminated"] for r in results)
        if name == "scripted":
            summary["epsilon"] = a.epsilon
        out[name] = summary
    print(json.dumps(out, indent=1, sort_keys=True))
    return out


if __name__ == "__main__":
    main()
