"""Real-env comparison of policies on the same seeds (SPEC section 6): random, phase-2 BC, phase-3.

Episodes are played by :mod:`dreamer.agent.acting` and summarised by
:func:`dreamer.envs.evaluation.summarise` (mean return ± std, 95% interval, episode length,
per-achievement success rates in percent, Crafter score). :func:`comparison_table` renders the
summaries as text; the caller decides where it goes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from dreamer.agent.acting import run_agent_episodes, run_random_episodes
from dreamer.agent.model import Agent
from dreamer.envs.evaluation import summarise

log = logging.getLogger(__name__)


def compare_policies(env_cfg, seeds: Sequence[int], tokenizer, cache, agents: dict[str, Agent],
                     max_steps: int, with_random: bool = True, context: int | None = None) -> dict:
    """{"summaries": {policy: summary}, "episodes": {policy: [per-episode results]}}; every policy plays
    episode i with seed ``seeds[i]`` (the random policy first, then ``agents`` in order, sampled)."""
    episodes: dict[str, list[dict]] = {}
    if with_random:
        episodes["random"] = run_random_episodes(env_cfg, seeds, cache.action_space.cards, max_steps)
    for name, agent in agents.items():
        modes = {m: m.training for m in agent.modules()}  # restored one by one: frozen parts stay in eval
        agent.eval()
        try:
            episodes[name] = run_agent_episodes(env_cfg, seeds, tokenizer, agent, cache.mean, cache.std,
                                                max_steps=max_steps, context=context)
        finally:
            for m, mode in modes.items():
                m.training = mode
    return {"summaries": {k: summarise(v) for k, v in episodes.items()}, "episodes": episodes}


def flat_scalars(summary: dict) -> dict[str, float]:
    """Numeric leaves of a summary, nested keys joined by '/' (for TensorBoard); None is skipped."""
    out: dict[str, float] = {}
    for k, v in summary.items():
        if isinstance(v, dict):
            out.update({f"{k}/{kk}": vv for kk, vv in flat_scalars(v).items()})
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def _num(x, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def comparison_table(summaries: dict[str, dict]) -> str:
    """One row per policy (N, return mean ± std and 95% interval, length, Crafter score), then one row
    per achievement with each policy's success rate in percent."""
    names = list(summaries)
    w = max(10, *(len(n) for n in names))
    head = f"{'policy':{w}}  {'N':>4}  {'return mean ± std':>20}  {'95% CI':>8}  {'length':>15}  {'score':>7}"
    rows = [head, "-" * len(head)]
    for n, s in summaries.items():
        ret = f"{s['return_mean']:.2f} ± {s['return_std']:.2f}"
        length = f"{s['length_mean']:.1f} ± {s['length_std']:.1f}"
        rows.append(f"{n:{w}}  {s['episodes']:>4}  {ret:>20}  {'±' + _num(s['return_ci95']):>8}  {length:>15}  "
                    f"{_num(s.get('score')):>7}")
    achievements = sorted({a for s in summaries.values() for a in (s.get("success_rates") or {})})
    if achievements:
        wa = max(len(a) for a in achievements) + 2
        rows += ["", f"{'success rate (%)':{wa}}" + "".join(f"{n:>{w + 2}}" for n in names)]
        for a in achievements:
            rates = [(s.get("success_rates") or {}).get(a) for s in summaries.values()]
            rows.append(f"{a:{wa}}" + "".join(f"{_num(r, '{:.1f}'):>{w + 2}}" for r in rates))
    return "\n".join(rows)
