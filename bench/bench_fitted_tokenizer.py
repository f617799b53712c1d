"""Fitted against random-weight tokenizer on the larger Crafter preset (issue: phase 0 targets).

Runs, in order and resuming whatever is already done (every phase script resumes or skips when rerun):

    fitted: train_phase0_tokenizer.py, train_phase1_cosmos.py, train_phase2.py   (run crafter_small)
    random: train_phase1_cosmos.py, train_phase2.py  with tokenizer.pretrained=null (run crafter_small_random)

both on the same collected episodes, split, models, steps and evaluation seeds, then prints a JSON table:
phase-0 held-out PSNR, phase-1 held-out one-step error against copy-last and the action-shuffle ratio, held-out
BC accuracy against the majority action, and the BC policy's Crafter score in the real environment (with
the random and data-frequency policies on the same seeds).

    OMP_WAIT_POLICY=PASSIVE python bench/bench_fitted_tokenizer.py [--config configs/crafter_small.yaml]
        [--eval-episodes 30] [--set phase1.steps=600 ...] [--report-only]

Takes about an hour per arm on 2 CPU cores (docs/tokenizer.md has the budget). Threads: torch's default
(all cores) in each subprocess; set OMP_NUM_THREADS to change it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from dreamer.envs.records import read_eval_record


def run(cmd: list[str], log_path: Path) -> float:
    t0 = time.time()
    with open(log_path, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        code = subprocess.call(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {code}; see {log_path}")
    return time.time() - t0


def arm_figures(run_dir: Path) -> dict:
    p1 = torch.load(run_dir / "phase1_cosmos_final.pt", map_location="cpu", weights_only=True)["eval"]
    p2 = read_eval_record(run_dir / "phase2_eval.json")["summaries"]  # older files converted
    held = torch.load(run_dir / "phase2_final.pt", map_location="cpu", weights_only=True)["eval"]["heldout"]
    out = {"phase1": {k: float(v) for k, v in p1.items()},
           "phase2_heldout": {k: float(held[k]) for k in ("bc_accuracy", "majority_accuracy", "bc_nll")}}
    for policy in ("bc", "random", "frame_blind"):
        s = p2[policy]
        out[f"env_{policy}"] = {"score": s.get("score"), "return_mean": s["return_mean"], "return_std": s["return_std"],
                                "episodes": s["episodes"]}
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/crafter_small.yaml")
    p.add_argument("--eval-episodes", type=int, default=30)
    p.add_argument("--set", action="append", default=[], help="extra override for every phase of both arms")
    p.add_argument("--log", default="checkpoints/bench_fitted_tokenizer.log")
    p.add_argument("--report-only", action="store_true", help="run nothing; read the figures of finished runs")
    a = p.parse_args(argv)
    log_path = ROOT / a.log
    log_path.parent.mkdir(parents=True, exist_ok=True)
    py = [sys.executable]
    common = ["--config", a.config, "--set", f"phase2.eval_episodes={a.eval_episodes}"]
    for s in a.set:
        common += ["--set", s]
    random_arm = ["--set", "tokenizer.pretrained=null", "--set", "run=crafter_small_random",
                  "--set", "data.cache_dir=data/crafter_small/cache_random"]
    seconds = {}
    if not a.report_only:
        seconds["fitted/phase0"] = run(py + ["train_phase0_tokenizer.py"] + common, log_path)
        seconds["fitted/phase1"] = run(py + ["train_phase1_cosmos.py"] + common, log_path)
        seconds["fitted/phase2"] = run(py + ["train_phase2.py"] + common, log_path)
        seconds["random/phase1"] = run(py + ["train_phase1_cosmos.py"] + common + random_arm, log_path)
        seconds["random/phase2"] = run(py + ["train_phase2.py"] + common + random_arm, log_path)

    ckpt = ROOT / "checkpoints"
    tok = json.loads((ckpt / "crafter_small" / "tokenizer" / "phase0.json").read_text())
    out = {"config": a.config, "overrides": a.set, "eval_episodes": a.eval_episodes,
           "wall_seconds": {k: round(v, 1) for k, v in seconds.items()},
           "phase0": {"steps": tok["step"], "psnr_fitted": tok["eval"]["psnr"],
                      "psnr_random": tok["before_fitting"]["psnr"],
                      "psnr_pooled_pixels": tok["eval"]["psnr_pooled_pixels"]},
           "fitted": arm_figures(ckpt / "crafter_small"), "random": arm_figures(ckpt / "crafter_small_random")}
    print(json.dumps(out, indent=1, sort_keys=True, default=str))
    return out


if __name__ == "__main__":
    main()
