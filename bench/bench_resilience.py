"""Resilience figures (issue: scale out and hold up). Prints JSON.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_resilience.py [--trials 10] [--skip-kill] [--skip-rss] [--fsdp]

- kill_resume: N trials of phase 1 on synthetic episodes (tiny models, 1 thread), each SIGKILLed at a
  random moment after its first checkpoint, then resumed by rerunning the same command; counts trials
  whose final weights equal an uninterrupted run's bitwise. ``--fsdp``: every run is a 2-process torchrun
  with phase1.fsdp=true, and the launcher and its workers are killed together.
- peak_rss: peak resident memory of a process that draws 300 training batches from a latent cache,
  for a small cache and one 10x larger (memory-mapped reading keeps it flat).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def kill_resume(trials: int, fsdp: bool = False) -> dict:
    import torch
    from test_resilience import tiny_overrides

    from dreamer.data.episode import save_episode
    from dreamer.data.synthetic import make_episode
    from dreamer.training.checkpoint import load_checkpoint

    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    steps, results = 40, []
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29543"] if fsdp \
        else [sys.executable]
    extra = ["--set", "phase1.fsdp=true"] if fsdp else []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for i in range(4):
            save_episode(d / "eps" / f"ep_{i}.npz", make_episode(T=40, seed=i))

        def run_dir(name: str) -> Path:
            r = d / name
            r.mkdir()
            os.symlink(d / "eps", r / "eps")
            return r

        ref = run_dir("ref")
        subprocess.run([*launch, "train_phase1_cosmos.py", *tiny_overrides(ref, steps), *extra], cwd=ROOT, env=env,
                       check=True, capture_output=True)
        want = load_checkpoint(ref / "ckpt" / "t" / "phase1_cosmos_final.pt")["models"]
        rng = random.Random(0)
        for t in range(trials):
            r = run_dir(f"trial{t}")
            args = [*launch, "train_phase1_cosmos.py", *tiny_overrides(r, steps), *extra]
            proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
            while not list((r / "ckpt" / "t").glob("phase1_step*.pt")) and proc.poll() is None:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 2.0))  # a random moment: mid-step, mid-write, or between steps
            killed_at = sorted(p.name for p in (r / "ckpt" / "t").glob("phase1_step*.pt"))
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and, under torchrun, every worker
            proc.wait()
            subprocess.run(args, cwd=ROOT, env=env, check=True, capture_output=True)
            got = load_checkpoint(r / "ckpt" / "t" / "phase1_cosmos_final.pt")["models"]
            same = all(torch.equal(want[m][k], got[m][k]) for m in want for k in want[m])
            results.append({"trial": t, "checkpoints_at_kill": killed_at, "identical": same})
    return {"trials": trials, "fsdp_two_processes": fsdp, "identical": sum(r["identical"] for r in results),
            "detail": results}


def rss_child(cache_dir: str) -> None:
    from dreamer.data.cache import LatentCache
    from dreamer.data.loader import ClipSampler

    cache = LatentCache(cache_dir)
    sampler = ClipSampler(cache, cache.train_names, clip_len=32, batch_size=16, seed=0)
    for step in range(300):
        sampler.batch(step)
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    anon = int(status.get("RssAnon", "0 kB").split()[0])
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, anon)  # KiB on Linux


def synthetic_cache(root: Path, episodes: int, length: int) -> int:
    """A cache on disk with random latents (the tokenizer is not what is measured here)."""
    from dreamer.data.cache import write_manifest_file

    rng = np.random.default_rng(0)
    names = [f"ep_{i:05d}" for i in range(episodes)]
    for n in names:
        e = root / "episodes" / n
        e.mkdir(parents=True)
        np.save(e / "latents.npy", rng.normal(size=(length, 16, 16)).astype(np.float16))
        np.save(e / "actions.npy", np.zeros((length, 8, 1), np.int64))
        np.save(e / "action_mask.npy", np.ones((length, 8), bool))
        np.save(e / "rewards.npy", np.zeros(length, np.float32))
        np.save(e / "continues.npy", np.ones(length, np.float32))
        (e / "source.json").write_text(json.dumps({"path": n, "sha256": n, "tokenizer": "x", "num_steps": length * 8,
                                                   "action_space": {"names": ["a"], "cards": [17]}, "meta": {}}))
    write_manifest_file(root, names, {"weights_sha256": "x", "temporal_compression": 8}, 0.05, 0)
    return sum(f.stat().st_size for f in root.rglob("*.npy"))


def peak_rss() -> dict:
    out = {}
    for label, episodes in (("small", 40), ("10x", 400)):
        with tempfile.TemporaryDirectory() as d:
            size = synthetic_cache(Path(d), episodes, 1000)
            peak, anon = subprocess.run([sys.executable, __file__, "--rss-child", d], capture_output=True, text=True,
                                        check=True).stdout.split()[-2:]
            out[label] = {"episodes": episodes, "cache_mb": round(size / 2**20, 1),
                          "peak_rss_mb": round(int(peak) / 1024, 1), "anon_rss_mb_at_end": round(int(anon) / 1024, 1)}
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--skip-kill", action="store_true")
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--fsdp", action="store_true", help="kill/resume 2-process torchrun runs with phase1.fsdp=true")
    p.add_argument("--rss-child")
    args = p.parse_args()
    if args.rss_child:
        return rss_child(args.rss_child)
    out = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}
    if not args.skip_rss:
        out["peak_rss"] = peak_rss()
    if not args.skip_kill:
        out["kill_resume"] = kill_resume(args.trials, args.fsdp)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
