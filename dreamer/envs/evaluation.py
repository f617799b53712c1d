"""Evaluation in the real env: per-episode results, their summary and the Crafter score (SPEC §6).

A per-episode result is a dict with at least ``return`` (float) and ``length`` (int), and for Crafter
``achievements``: the names unlocked during the episode (a list, or a dict name → count where a
count > 0 means unlocked).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable

import numpy as np

from dreamer.envs.config import EnvConfig
from dreamer.envs.crafter_env import crafter_names
from dreamer.envs.gym_env import make_env

log = logging.getLogger(__name__)


def crafter_achievements() -> tuple[str, ...]:
    return crafter_names()["achievements"]


def crafter_score(success_rates_percent: dict[str, float]) -> float:
    """S = exp(mean_i ln(1 + s_i)) − 1 over all 22 Crafter achievements, s_i in percent (0…100)."""
    names = crafter_achievements()
    missing = sorted(set(names) - set(success_rates_percent))
    extra = sorted(set(success_rates_percent) - set(names))
    if missing or extra:
        raise ValueError(f"crafter_score needs exactly the 22 Crafter achievements: missing {missing}, unknown {extra}")
    rates = np.array([float(success_rates_percent[n]) for n in names])
    if not np.all((rates >= 0) & (rates <= 100)):
        bad = {n: success_rates_percent[n] for n in names if not 0 <= success_rates_percent[n] <= 100}
        raise ValueError(f"success rates must be percentages in [0, 100], got {bad}")
    return float(math.exp(np.mean(np.log1p(rates))) - 1.0)


def _unlocked(ach) -> set[str]:
    if isinstance(ach, dict):
        return {str(k) for k, v in ach.items() if v > 0}
    return {str(k) for k in ach}


def summarise(results: list[dict]) -> dict:
    """Mean ± std (sample std, ddof=1) of return and length, a 95% normal interval of the mean return,
    per-achievement success rates in percent and, when achievements are Crafter's, the Crafter score; and
    how many episodes ended by each ``death_cause`` (Crafter)."""
    if not results:
        raise ValueError("summarise: no episode results")
    for i, r in enumerate(results):
        for key in ("return", "length"):
            if key not in r:
                raise ValueError(f"summarise: result {i} has no '{key}' (keys: {sorted(r)})")
    n = len(results)
    returns = np.array([float(r["return"]) for r in results])
    lengths = np.array([float(r["length"]) for r in results])
    ddof = 1 if n > 1 else 0
    out = {
        "episodes": n,
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std(ddof=ddof)),
        "return_ci95": float(1.96 * returns.std(ddof=ddof) / math.sqrt(n)),
        "length_mean": float(lengths.mean()),
        "length_std": float(lengths.std(ddof=ddof)),
    }
    with_ach = [r for r in results if "achievements" in r]
    if with_ach:
        if len(with_ach) != n:
            raise ValueError(f"summarise: only {len(with_ach)} of {n} results have 'achievements'")
        unlocked = [_unlocked(r["achievements"]) for r in results]
        seen = set().union(*unlocked)
        crafter = set(crafter_achievements())
        names = sorted(crafter) if seen <= crafter else sorted(seen)
        rates = {a: 100.0 * sum(a in u for u in unlocked) / n for a in names}
        out["success_rates"] = rates
        out["score"] = crafter_score(rates) if seen <= crafter else None
    causes = [r["death_cause"] for r in results if "death_cause" in r]
    if causes:
        out["deaths"] = {c: causes.count(c) for c in sorted(set(causes))}
    return out


def episode_result(total_return: float, length: int, info: dict | None = None, **extra) -> dict:
    """A result dict; Crafter's achievements are read from the final ``info``."""
    res = {"return": float(total_return), "length": int(length), **extra}
    if info is not None and "achievements" in info:
        res["achievements"] = sorted(_unlocked(info["achievements"]))
    if info is not None and "death_cause" in info:
        res["death_cause"] = str(info["death_cause"])
    return res


def run_policy_episodes(
    env_cfg: EnvConfig,
    seeds: Iterable[int],
    act_fn: Callable[[np.ndarray, dict], object],
    progress: bool = False,
) -> list[dict]:
    """Play one episode per seed with a step-level policy ``act_fn(obs, info) -> env action``.

    If ``act_fn`` has a ``reset(seed)`` method it is called at every episode start with that seed.
    Returns one result per episode: seed, return, length, terminated, truncated (+ achievements).
    """
    seeds = [int(s) for s in seeds]
    env = make_env(env_cfg)
    results = []
    try:
        it = seeds
        if progress:
            from tqdm import tqdm

            it = tqdm(seeds, desc=f"episodes {env_cfg.env_id}")
        for seed in it:
            obs, info = env.reset(seed=seed)
            if hasattr(act_fn, "reset"):
                act_fn.reset(seed)
            total, steps, term, trunc = 0.0, 0, False, False
            while not (term or trunc):
                obs, reward, term, trunc, info = env.step(act_fn(obs, info))
                total += float(reward)
                steps += 1
            results.append(episode_result(total, steps, info, seed=seed, terminated=term, truncated=trunc))
            log.debug("seed %d: return %.2f length %d", seed, total, steps)
    finally:
        env.close()
    return results
