"""The real-env evaluation that ends phases 2 and 3 (docs/design.md §6): the trained policies next to
the baselines of :mod:`dreamer.envs.evaluation`, every policy playing episode i with seed
``eval.seed + i``, summarised, logged to TensorBoard and written as JSON in the run directory."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence

import numpy as np
import torch

from dreamer.agent import Agent
from dreamer.agent.acting import run_agent_episodes
from dreamer.atomic import atomic_write_bytes
from dreamer.envs.evaluation import (
    beats,
    comparison_table,
    flat_scalars,
    run_frequency_episodes,
    run_random_episodes,
    save_comparison_chart,
    summarise,
)
from dreamer.pipeline.build import build_agent
from dreamer.pipeline.checkpoints import EVAL_JSON, RESULTS_PNG

log = logging.getLogger(__name__)


def eval_seeds(cfg, episodes: int) -> list[int]:
    return [cfg.eval.seed + i for i in range(episodes)]


def eval_context(cfg, agent_cfg=None) -> int:
    """The latent steps of history the acting agent sees: the window length its trunk was trained on."""
    return min(cfg.data.clip_len, (agent_cfg or cfg.agent).max_time)


def compare_policies(env_cfg, seeds: Sequence[int], tokenizer, cache, agents: dict[str, Agent],
                     max_steps: int, with_random: bool = True, context: int | None = None, greedy: bool = False,
                     reset_workers: int = 1) -> dict:
    """{"summaries": {policy: summary}, "episodes": {policy: [per-episode results]}}; every policy plays
    episode i with seed ``seeds[i]`` (the random policy first, then ``agents`` in order, sampled unless
    ``greedy``)."""
    episodes: dict[str, list[dict]] = {}
    if with_random:
        episodes["random"] = run_random_episodes(env_cfg, seeds, cache.action_space.cards, max_steps,
                                                 reset_workers=reset_workers)
    for name, agent in agents.items():
        modes = {m: m.training for m in agent.modules()}  # restored one by one: frozen parts stay in eval
        agent.eval()
        try:
            episodes[name] = run_agent_episodes(env_cfg, seeds, tokenizer, agent, cache.mean, cache.std,
                                                greedy=greedy, max_steps=max_steps, context=context,
                                                reset_workers=reset_workers)
        finally:
            for m, mode in modes.items():
                m.training = mode
    return {"summaries": {k: summarise(v) for k, v in episodes.items()}, "episodes": episodes}


def _write_json(rt, phase: int, out: dict) -> None:
    atomic_write_bytes(rt.run_dir / EVAL_JSON[phase], json.dumps(out, indent=1, default=float).encode())


def evaluate_bc(rt, tokenizer, agent: Agent, cache, counts: list[np.ndarray]) -> dict:
    """Phase 2, on seeds eval.seed + i: the BC policy (sampled; greedy with eval.greedy), and unless
    phase2.eval_baselines is off the uniform random policy and the data's action frequencies sampled blindly
    (what BC gets without using the frames); writes phase2_eval.json."""
    cfg = rt.cfg
    seeds = eval_seeds(cfg, cfg.phase2.eval_episodes)
    context = eval_context(cfg, agent.cfg)
    t0 = time.perf_counter()
    w = cfg.eval.reset_workers
    runs = {"bc": run_agent_episodes(cfg.env, seeds, tokenizer, agent, cache.mean, cache.std, greedy=cfg.eval.greedy,
                                     max_steps=cfg.eval.max_steps, context=context, progress=rt.is_main,
                                     reset_workers=w)}
    if cfg.phase2.eval_baselines:
        runs["random"] = run_random_episodes(cfg.env, seeds, cards=cache.action_space.cards,
                                             max_steps=cfg.eval.max_steps, progress=rt.is_main, reset_workers=w)
        runs["data_frequency"] = run_frequency_episodes(cfg.env, seeds, counts, max_steps=cfg.eval.max_steps,
                                                        progress=rt.is_main, reset_workers=w)
    out = {"seeds": seeds, "max_steps": cfg.eval.max_steps, "context": context, "greedy": cfg.eval.greedy,
           "seconds": time.perf_counter() - t0,
           **{who: summarise(r) for who, r in runs.items()}, "episodes": runs}
    _write_json(rt, 2, out)
    rt.scalars(cfg.phase2.steps, flat_scalars(out["bc"]), "eval/phase2/bc/")  # the curve's last point
    save_comparison_chart({who: out[who] for who in runs}, rt.run_dir / RESULTS_PNG[2], f"{cfg.run} phase 2",
                          rt.writer, cfg.phase2.steps)
    if "data_frequency" in runs:  # the plain verdict: does BC use the frames?
        ok, line = beats("BC", out["bc"], "the frame-blind policy", out["data_frequency"])
        (log.info if ok else log.warning)("phase 2, real env (%d episodes): %s", len(seeds), line)
    for who in runs:
        s = out[who]
        rt.scalars(cfg.phase2.steps, {k: v for k, v in s.items() if isinstance(v, (int, float))}, f"env/{who}/")
        log.info("real env, %s policy over %d episodes: %s", who, len(seeds),
                 {k: v for k, v in s.items() if isinstance(v, (int, float))})
    return out


def curve_point(rt, tokenizer, agent: Agent, cache, episodes: int, step: int, tag: str) -> dict:
    """One point of a real-env learning curve: ``agent`` on ``episodes`` seeds eval.seed + i (sampled unless
    eval.greedy), logged under ``tag`` (``eval/phase2/bc/``) at ``step``; returns its summary."""
    cfg = rt.cfg
    modes = {m: m.training for m in agent.modules()}  # restored one by one: training goes on as it was
    try:
        s = summarise(run_agent_episodes(cfg.env, eval_seeds(cfg, episodes), tokenizer, agent, cache.mean, cache.std,
                                         greedy=cfg.eval.greedy, max_steps=cfg.eval.max_steps,
                                         context=eval_context(cfg, agent.cfg), reset_workers=cfg.eval.reset_workers))
    finally:
        for m, mode in modes.items():
            m.training = mode
    rt.scalars(step, flat_scalars(s), tag)
    log.info("step %d: real env, %d episodes: return %.2f ± %.2f, length %.0f%s", step, episodes, s["return_mean"],
             s["return_ci95"], s["length_mean"], f", score {s['score']:.2f}%" if s.get("score") is not None else "")
    return s


def evaluate_policies(rt, tokenizer, cache, agents: dict[str, Agent], with_random: bool) -> dict:
    """Phase 3: ``agents`` (and the random policy) on seeds eval.seed + i, as :func:`compare_policies`."""
    cfg = rt.cfg
    seeds = eval_seeds(cfg, cfg.phase3.eval_episodes)
    context = eval_context(cfg)
    out = compare_policies(cfg.env, seeds, tokenizer, cache, agents, cfg.eval.max_steps, with_random, context,
                           cfg.eval.greedy, cfg.eval.reset_workers)
    return {"seeds": seeds, "max_steps": cfg.eval.max_steps, "context": context, "greedy": cfg.eval.greedy, **out}


def exploitation_check(rt, tokenizer, cache, dynamics, agents: dict[str, Agent]) -> dict:
    """Imagined against real returns over the phase-3 horizon from real start states, for each agent
    (:mod:`dreamer.imagination.exploitation`), on ``phase3.exploit_episodes`` episodes of seeds
    eval.seed + 100000 + i (apart from the evaluation's own)."""
    from dreamer.imagination.exploitation import imagined_vs_real, record_episodes

    cfg, pc = rt.cfg, rt.cfg.phase3
    seeds = [cfg.eval.seed + 100_000 + i for i in range(pc.exploit_episodes)]
    out = {}
    for name, agent in agents.items():
        episodes = record_episodes(cfg.env, seeds, tokenizer, agent, cache.mean, cache.std, eval_context(cfg),
                                   cfg.eval.max_steps, cfg.eval.reset_workers)
        gen = torch.Generator(device=rt.device).manual_seed(cfg.seed)
        try:
            out[name] = imagined_vs_real(episodes, dynamics, agent, pc.horizon, pc.context, generator=gen)
        except ValueError as e:  # episodes too short for one start state: nothing to compare
            out[name] = {"starts": 0, "skipped": str(e)}
            log.warning("model exploitation, %s: skipped (%s)", name, e)
            continue
        log.info("model exploitation, %s: over %d decisions from %d real start states, imagined return %.3f against "
                 "real %.3f (gap %+.3f, correlation %.2f)", name, pc.horizon, out[name]["starts"],
                 out[name]["imagined_return"], out[name]["real_return"], out[name]["gap"], out[name]["correlation"])
    return out


def final_comparison(rt, tokenizer, cache, agent: Agent, phase2_agent_state: dict, dynamics=None) -> tuple[dict, str]:
    """Random, phase-2 (BC) and phase-3 policies on the same seeds (the phase-3 policy alone with
    ``phase3.eval_baselines=false``, as the ladder bench runs it per training seed), and, given the frozen
    ``dynamics`` and ``phase3.exploit_episodes`` > 0, the model-exploitation check of both agents: JSON
    (phase3_eval.json), TensorBoard and the log; returns (the results, the comparison table)."""
    pc = rt.cfg.phase3
    bc = build_agent(rt.cfg, tokenizer, cache, rt.device, state=phase2_agent_state)
    agents = {"phase2_bc": bc, "phase3": agent} if pc.eval_baselines else {"phase3": agent}
    out = evaluate_policies(rt, tokenizer, cache, agents, with_random=pc.eval_baselines)
    for name, s in out["summaries"].items():
        rt.scalars(pc.steps, flat_scalars(s), f"eval/final/{name}/")
    rt.scalars(pc.steps, flat_scalars(out["summaries"]["phase3"]), "eval/phase3/")  # the curve's last point
    if dynamics is not None and pc.exploit_episodes > 0:
        out["exploitation"] = exploitation_check(rt, tokenizer, cache, dynamics, {"phase2_bc": bc, "phase3": agent})
    _write_json(rt, 3, out)
    save_comparison_chart(out["summaries"], rt.run_dir / RESULTS_PNG[3], f"{rt.cfg.run} phase 3", rt.writer, pc.steps)
    table = comparison_table(out["summaries"])
    log.info("real-env comparison, %d episodes per policy (%s):\n%s", len(out["seeds"]), rt.run_dir / EVAL_JSON[3],
             table)
    if "phase2_bc" in out["summaries"]:  # the plain verdict: did imagination RL improve on BC?
        ok, line = beats("PMPO", out["summaries"]["phase3"], "BC", out["summaries"]["phase2_bc"])
        (log.info if ok else log.warning)("phase 3, real env (%d episodes, one training seed): %s", len(out["seeds"]),
                                          line)
    return out, table
