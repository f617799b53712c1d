"""The real-env evaluation of phases 2 and 3 (docs/design.md §6): the trained policies next to the baselines, every
policy playing episode i with seed ``eval.seed + i`` through the one episode runner
(:func:`dreamer.envs.runner.run_episodes`), written as the one evaluation record (:mod:`dreamer.envs.records`,
``phase<k>_eval.json``), logged to TensorBoard under ``env/<policy>/…`` and drawn as ``phase<k>_results.png``.
Policies have the same names in every phase: ``random``, ``frame_blind``, ``bc``, ``pmpo``."""

from __future__ import annotations

import logging
import time

import torch

from dreamer.agent import Agent
from dreamer.agent.acting import AgentBatchPolicy
from dreamer.atomic import atomic_write_bytes
from dreamer.envs.evaluation import beats, comparison_table, flat_scalars, save_comparison_chart, summarise
from dreamer.envs.records import eval_json, eval_record
from dreamer.envs.runner import BatchPolicy, frame_blind_policy, random_policy, run_episodes
from dreamer.pipeline.build import build_agent
from dreamer.pipeline.checkpoints import EVAL_JSON, RESULTS_PNG
from dreamer.tags import tag

log = logging.getLogger(__name__)


def eval_seeds(cfg, episodes: int) -> list[int]:
    return [cfg.eval.seed + i for i in range(episodes)]


def eval_context(cfg, agent_cfg=None) -> int:
    """The latent steps of history the acting agent sees: the window length its trunk was trained on."""
    return min(cfg.data.clip_len, (agent_cfg or cfg.agent).max_time)


def agent_policy(cfg, tokenizer, cache, agent: Agent, name: str, context: int | None = None) -> AgentBatchPolicy:
    """``agent`` as the runner's policy ``name``: sampled unless eval.greedy, ``context`` latents of history (default
    :func:`eval_context` of its config), standardised with the cache's statistics."""
    return AgentBatchPolicy(tokenizer, agent, cache.mean, cache.std, cfg.eval.greedy,
                            context or eval_context(cfg, agent.cfg), name)


def play(cfg, seeds: list[int], policies: dict[str, BatchPolicy], progress: bool = False) -> dict[str, list[dict]]:
    """{policy: one result per seed}: every policy in turn on the same seeds, eval.max_steps steps at most."""
    return {name: run_episodes(cfg.env, seeds, policy, cfg.eval.max_steps, reset_workers=cfg.eval.reset_workers,
                               progress=progress) for name, policy in policies.items()}


def log_env(rt, step: int, summaries: dict[str, dict]) -> None:
    """Every policy's figures under ``env/<policy>/…`` at ``step``."""
    for name, s in summaries.items():
        rt.scalars(step, flat_scalars(s), tag("env", name))


def write_record(rt, record: dict) -> None:
    atomic_write_bytes(rt.run_dir / EVAL_JSON[record["phase"]], eval_json(record))


def evaluate_bc(rt, tokenizer, agent: Agent, cache, counts) -> dict:
    """Phase 2, on seeds eval.seed + i: unless phase2.eval_baselines is off the uniform random policy and the data's
    action frequencies sampled blindly (what BC gets without using the frames), then the BC policy (sampled; greedy
    with eval.greedy); writes phase2_eval.json and returns its record."""
    cfg = rt.cfg
    seeds = eval_seeds(cfg, cfg.phase2.eval_episodes)
    context = eval_context(cfg, agent.cfg)
    policies: dict[str, BatchPolicy] = {}
    if cfg.phase2.eval_baselines:
        policies = {"random": random_policy(cache.action_space.cards), "frame_blind": frame_blind_policy(counts)}
    policies["bc"] = agent_policy(cfg, tokenizer, cache, agent, "bc", context)
    t0 = time.perf_counter()
    episodes = play(cfg, seeds, policies, progress=rt.is_main)
    record = eval_record(2, seeds, cfg.eval.max_steps, context, cfg.eval.greedy, time.perf_counter() - t0, episodes)
    write_record(rt, record)
    summaries = record["summaries"]
    log_env(rt, cfg.phase2.steps, summaries)  # env/bc/… ends the curve of phase2.env_eval_every
    save_comparison_chart(summaries, rt.run_dir / RESULTS_PNG[2], f"{cfg.run} phase 2", rt.writer, cfg.phase2.steps, 2)
    if "frame_blind" in summaries:  # the plain verdict: does BC use the frames?
        ok, line = beats("BC", summaries["bc"], "the frame-blind policy", summaries["frame_blind"])
        (log.info if ok else log.warning)("phase 2, real env (%d episodes): %s", len(seeds), line)
    for name, s in summaries.items():
        log.info("real env, %s policy over %d episodes: %s", name, len(seeds),
                 {k: v for k, v in s.items() if isinstance(v, (int, float))})
    return record


def curve_point(rt, tokenizer, agent: Agent, cache, episodes: int, step: int, policy: str) -> dict:
    """One point of a real-env learning curve: ``agent`` on ``episodes`` seeds eval.seed + i (sampled unless
    eval.greedy), logged under ``env/<policy>/…`` at ``step`` (``bc`` in phase 2, ``pmpo`` in phase 3); returns
    its summary. Training goes on afterwards with every module in the mode it had."""
    cfg = rt.cfg
    s = summarise(run_episodes(cfg.env, eval_seeds(cfg, episodes), agent_policy(cfg, tokenizer, cache, agent, policy),
                               cfg.eval.max_steps, reset_workers=cfg.eval.reset_workers))
    rt.scalars(step, flat_scalars(s), tag("env", policy))
    log.info("step %d: real env, %s, %d episodes: return %.2f ± %.2f, length %.0f%s", step, policy, episodes,
             s["return_mean"], s["return_ci95"], s["length_mean"],
             f", score {s['score']:.2f}%" if s.get("score") is not None else "")
    return s


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
        f = out[name]
        log.info("model exploitation, %s: over %d decisions from %d real start states, imagined return %.3f against "
                 "real %.3f (gap %+.3f, correlation %.2f); the taken chunks replayed in the model %.3f (correlation "
                 "%.2f); the reward head on the real latents %.3f (correlation %.2f)", name, pc.horizon, f["starts"],
                 f["imagined_return"], f["real_return"], f["gap"], f["correlation"], f["replayed_return"],
                 f["replayed_correlation"], f["head_on_real_return"], f["head_on_real_correlation"])
    return out


def final_comparison(rt, tokenizer, cache, agent: Agent, phase2_agent_state: dict, dynamics=None) -> tuple[dict, str]:
    """Random, BC (phase 2) and PMPO (phase 3) policies on the same seeds (PMPO alone with
    ``phase3.eval_baselines=false``, as the ladder bench runs it per training seed), and, given the frozen
    ``dynamics`` and ``phase3.exploit_episodes`` > 0, the model-exploitation check of both agents: phase3_eval.json,
    TensorBoard and the log; returns (the record, the comparison table)."""
    cfg, pc = rt.cfg, rt.cfg.phase3
    seeds, context = eval_seeds(cfg, pc.eval_episodes), eval_context(cfg)
    bc = build_agent(cfg, tokenizer, cache, rt.device, state=phase2_agent_state)
    policies: dict[str, BatchPolicy] = {}
    if pc.eval_baselines:
        policies = {"random": random_policy(cache.action_space.cards),
                    "bc": agent_policy(cfg, tokenizer, cache, bc, "bc", context)}
    policies["pmpo"] = agent_policy(cfg, tokenizer, cache, agent, "pmpo", context)
    t0 = time.perf_counter()
    episodes = play(cfg, seeds, policies, progress=rt.is_main)
    seconds, extras = time.perf_counter() - t0, {}
    if dynamics is not None and pc.exploit_episodes > 0:
        extras["exploitation"] = exploitation_check(rt, tokenizer, cache, dynamics, {"bc": bc, "pmpo": agent})
    record = eval_record(3, seeds, cfg.eval.max_steps, context, cfg.eval.greedy, seconds, episodes, **extras)
    write_record(rt, record)
    summaries = record["summaries"]
    log_env(rt, pc.steps, summaries)  # env/pmpo/… ends the curve of phase3.eval_every
    save_comparison_chart(summaries, rt.run_dir / RESULTS_PNG[3], f"{cfg.run} phase 3", rt.writer, pc.steps, 3)
    table = comparison_table(summaries)
    log.info("real-env comparison, %d episodes per policy (%s):\n%s", len(seeds), rt.run_dir / EVAL_JSON[3], table)
    if "bc" in summaries:  # the plain verdict: did imagination RL improve on BC?
        ok, line = beats("PMPO", summaries["pmpo"], "BC", summaries["bc"])
        (log.info if ok else log.warning)("phase 3, real env (%d episodes, one training seed): %s", len(seeds), line)
    return record, table
