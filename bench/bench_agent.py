"""The ladder: a learning preset from nothing to the table of random, frame-blind, BC and PMPO agents.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_agent.py --config configs/crafter_small.yaml [--rl-seeds 0 1 2] [--rl-jobs N]
    python bench/bench_agent.py --config configs/crafter_small.yaml --report-only

Stages, each a command of the project run as a subprocess (so what is timed is what a user runs), each
skipped when its output is already there and otherwise resumed by rerunning it:

    collect   episodes (dreamer.envs.collect, collect.workers processes)
    phase0    train_phase0_tokenizer.py                     -> <run>/tokenizer
    cache     python -m dreamer.pipeline.data               -> data.cache_dir
    phase1    train_phase1_cosmos.py                        -> <run>/phase1_cosmos_final.pt
    phase2    train_phase2.py (+ BC, random, frame-blind)   -> <run>/phase2_eval.json
    phase3/s  train_phase3.py --set seed=s, one run folder per seed (<run>_rl<s>) -> phase3_eval.json

The PMPO seeds run --rl-jobs at a time (default: all of them at once on a CPU, one by one on a GPU), each with
threads = cores // jobs (at least 1) and its output in <run>/phase3_seed<s>.log. Phase 3's matmuls are small: on
2 cores two 1-thread seeds at once each step as fast as one 2-thread seed alone (5.3 s against 5.0 s a step on
crafter_state), so the seeds together take about half the time they take one by one.

Every policy plays the same evaluation seeds (eval.seed + i, phase2.eval_episodes of them) with sampled
actions. The table gives mean return ± 95% interval, length, Crafter score and per-achievement rates, the
PMPO seeds one by one and pooled (also as a bar chart, <run>/ladder.png); the wall time of every stage is kept in
<run>/ladder.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from dreamer.atomic import atomic_write_bytes
from dreamer.config import load
from dreamer.envs.evaluation import comparison_table, save_comparison_chart, summarise
from dreamer.envs.records import read_eval_record


def stage_commands(cfg, args, passthrough: list[str]) -> list[tuple[str, list[str], Path]]:
    """(stage, command, output that marks it done) in order; the phase-3 seeds last."""
    py, run = [sys.executable], cfg.run_dir
    tok = Path(cfg.phase0.out_dir) if cfg.phase0.out_dir else run / "tokenizer"
    stages = [
        ("collect", py + ["-m", "dreamer.envs.collect", "--out", cfg.data.episodes_dir, "--episodes",
                          str(cfg.collect.num_episodes), "--policy", cfg.collect.policy, "--epsilon", str(cfg.collect.epsilon),
                          "--seed", str(cfg.collect.seed), "--max-steps", str(cfg.env.max_steps), "--env-id", cfg.env.env_id,
                          "--size", str(cfg.env.size), "--workers", str(cfg.collect.workers), "--no-progress"],
         Path(cfg.data.episodes_dir) / f"ep_{cfg.collect.num_episodes - 1:06d}.npz"),
        *([("phase0", py + ["train_phase0_tokenizer.py"] + passthrough, tok / "phase0.json")]
          if cfg.tokenizer.kind == "cosmos" else []),  # crafter_state: nothing to fit
        ("cache", py + ["-m", "dreamer.pipeline.data"] + passthrough, Path(cfg.data.cache_dir) / "manifest.json"),
        ("phase1", py + ["train_phase1_cosmos.py"] + passthrough, run / "phase1_cosmos_final.pt"),
        ("phase2", py + ["train_phase2.py"] + passthrough, run / "phase2_eval.json"),
    ]
    for s in args.rl_seeds:
        stages.append((f"phase3/seed{s}", py + ["train_phase3.py"] + passthrough + [
            "--phase2-checkpoint", str(run / "phase2_final.pt"), "--set", f"seed={s}", "--set", f"run={cfg.run}_rl{s}",
            "--set", "phase3.eval_baselines=false"], rl_dir(cfg, s) / "phase3_eval.json"))
    return stages


def rl_jobs(cfg, args) -> int:
    """How many PMPO seeds run at once: --rl-jobs, else all of them on a CPU and one on a GPU."""
    if args.rl_jobs:
        return max(1, min(args.rl_jobs, len(args.rl_seeds)))
    on_gpu = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch_cuda())
    return 1 if on_gpu else max(1, len(args.rl_seeds))


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_stages(stages, cfg, jobs: int, times: dict, ladder: Path) -> None:
    """Run the stages in order; the phase-3 seeds ``jobs`` at a time, each with cores // jobs threads."""
    todo = []
    for stage, cmd, done in stages:
        if done.exists():
            print(f"[ladder] {stage}: done ({done})", flush=True)
        else:
            todo.append((stage, cmd))

    def record(stage: str, seconds: float) -> None:
        times[stage] = times.get(stage, 0.0) + seconds  # a resumed stage adds up
        atomic_write_bytes(ladder, json.dumps({"seconds": times}, indent=1).encode())

    serial = [t for t in todo if jobs == 1 or not t[0].startswith("phase3/")]  # one job: the seeds in order too
    seeds = [t for t in todo if t not in serial]
    for stage, cmd in serial:
        print(f"[ladder] {stage}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True)
        record(stage, time.perf_counter() - t0)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    for i in range(0, len(seeds), jobs):
        group, procs, t0 = seeds[i:i + jobs], [], time.perf_counter()
        logs = [cfg.run_dir / f"{stage.replace('/', '_')}.log" for stage, _ in group]
        for (stage, cmd), log_path in zip(group, logs):
            print(f"[ladder] {stage} ({len(group)} at once, {threads} thread(s), log {log_path}): {' '.join(cmd)}",
                  flush=True)
            with open(log_path, "ab") as fh:  # a resumed seed appends
                procs.append(subprocess.Popen(cmd + ["--set", f"threads={threads}"], cwd=ROOT, stdout=fh,
                                              stderr=subprocess.STDOUT))
        codes = [p.wait() for p in procs]
        failed = [f"{st} (see {lg})" for (st, _), lg, c in zip(group, logs, codes) if c != 0]
        if failed:
            raise SystemExit(f"[ladder] failed: {', '.join(failed)}")
        record(" + ".join(st for st, _ in group) + " (at once)", time.perf_counter() - t0)


def rl_dir(cfg, seed: int) -> Path:
    return Path(cfg.checkpoint_root) / f"{cfg.run}_rl{seed}"


def report(cfg, seeds: list[int]) -> str:
    """The table from the evaluation files of a finished (or partly finished) ladder (files of older runs, in the
    shapes before the one evaluation schema, are read too: :func:`dreamer.envs.records.read_eval_record`)."""
    run = cfg.run_dir
    p2 = read_eval_record(run / "phase2_eval.json")["summaries"]
    summaries = {name: p2[name] for name in ("random", "frame_blind", "bc")}
    pooled = []
    for s in seeds:
        path = rl_dir(cfg, s) / "phase3_eval.json"
        if path.is_file():
            ev = read_eval_record(path)
            summaries[f"pmpo_seed{s}"] = ev["summaries"]["pmpo"]
            pooled += ev["episodes"]["pmpo"]
    if pooled:
        summaries["pmpo_pooled"] = summarise(pooled)
    save_comparison_chart(summaries, run / "ladder.png", f"ladder {cfg.run}")
    lines = [comparison_table(summaries), f"(the picture: {run / 'ladder.png'})"]
    deaths = {k: v.get("deaths", {}) for k, v in summaries.items()}
    lines.append("\ndeaths (episodes ended by): " + json.dumps(deaths))
    ladder = run / "ladder.json"
    if ladder.is_file():
        times = json.loads(ladder.read_text())["seconds"]
        lines.append("\nwall time per stage (s): " + json.dumps({k: round(v, 1) for k, v in times.items()}))
        before_rl = sum(v for k, v in times.items() if not k.startswith("phase3"))
        lines.append(f"collection to BC evaluation: {before_rl / 60:.1f} min; "
                     f"the whole ladder: {sum(times.values()) / 60:.1f} min")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=[])
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--rl-seeds", type=int, nargs="*", default=[0, 1, 2], help="phase-3 training seeds")
    p.add_argument("--rl-jobs", type=int, default=0,
                   help="PMPO seeds at once (default 0: all of them on a CPU, one on a GPU)")
    p.add_argument("--report-only", action="store_true", help="reprint the table of a finished run")
    args = p.parse_args(argv)
    cfg = load(args.config, args.set)
    passthrough = [x for c in args.config for x in ("--config", c)] + [x for s in args.set for x in ("--set", s)]
    if not args.report_only:
        ladder = cfg.run_dir / "ladder.json"
        times = json.loads(ladder.read_text())["seconds"] if ladder.is_file() else {}
        run_stages(stage_commands(cfg, args, passthrough), cfg, rl_jobs(cfg, args), times, ladder)
    print(report(cfg, args.rl_seeds))


if __name__ == "__main__":
    main()
