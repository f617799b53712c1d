"""Resilience figures (issues: scale out and hold up; a hostile tester's cases). Prints JSON.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_resilience.py [--trials 10] [--skip-kill] [--skip-rss] [--fsdp]
        [--hostile-trials 4] [--skip-hostile]

- kill_resume: N trials of phase 1 on synthetic episodes (tiny models, 1 thread), each SIGKILLed at a
  random moment after its first checkpoint, then resumed by rerunning the same command; counts trials
  whose final weights equal an uninterrupted run's bitwise. ``--fsdp``: every run is a 2-process torchrun
  with phase1.fsdp=true, and the launcher and its workers are killed together.
- peak_rss: peak resident memory of a process that draws 300 training batches from a latent cache,
  for a small cache and one 10x larger (memory-mapped reading keeps it flat).
- hostile (tried / survived / lost per kind):
  - kill_while_writing: phase 1 SIGKILLed the moment a checkpoint's temporary file appears (mid-write),
    then rerun: survived = the rerun ends bitwise equal to an uninterrupted run and no leftover remains;
  - truncated_latest: the newest periodic checkpoint cut to a random length (0 bytes included), then
    rerun: survived = reported as damaged, moved aside, resumed from the previous one, bitwise equal end;
  - swapped_input: phase 2 rerun in its run folder with another input: another run's phase-1 final, an
    earlier phase-1 checkpoint, a phase-2 final (wrong phase), a copy of the original (same weights:
    must resume), and --fresh with another one (must start over on it). Survived = the expected refusal
    or run; lost = a silent resume on the old dynamics or a rewritten config.
  - damaged_cache: a cache entry truncated, NaN in a training and in the held-out entry (survived = rebuilt,
    bitwise the undamaged run's end), an entry and its episode file both damaged (refused naming both), NaN
    hidden from the cache's check (the guard stops naming the episodes);
  - user_errors: eight command-line mistakes (config keys, paths of the wrong kind, the disk floor, a busy
    run folder); survived = one ``error:`` line naming the culprit, no traceback, the exit code of its kind.
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
    from test_resilience import kill_tree, tiny_overrides

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
            kill_tree(proc)  # the launcher and, under torchrun, every worker (each in a session of its own)
            subprocess.run(args, cwd=ROOT, env=env, check=True, capture_output=True)
            got = load_checkpoint(r / "ckpt" / "t" / "phase1_cosmos_final.pt")["models"]
            same = all(torch.equal(want[m][k], got[m][k]) for m in want for k in want[m])
            results.append({"trial": t, "checkpoints_at_kill": killed_at, "identical": same})
    return {"trials": trials, "fsdp_two_processes": fsdp, "identical": sum(r["identical"] for r in results),
            "detail": results}


ENV = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")


def _phase1(r: Path, steps: int = 12) -> list[str]:
    from test_resilience import tiny_overrides

    return [sys.executable, "train_phase1_cosmos.py", *tiny_overrides(r, steps)]


def _trial_dir(d: Path, name: str) -> Path:
    r = d / name
    r.mkdir()
    os.symlink(d / "eps", r / "eps")
    return r


def _same_final(a: Path, b: Path) -> bool:
    import torch

    from dreamer.training.checkpoint import load_checkpoint

    x, y = load_checkpoint(a)["models"]["dynamics"], load_checkpoint(b)["models"]["dynamics"]
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def kill_while_writing(d: Path, ref: Path, trials: int) -> dict:
    caught, survived, detail = 0, 0, []
    for t in range(trials):
        r = _trial_dir(d, f"kw{t}")
        run = r / "ckpt" / "t"
        proc = subprocess.Popen(_phase1(r), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seen, skip = None, t  # trial t kills during the (t+1)-th checkpoint write it sees
        while proc.poll() is None and seen is None:
            tmps = [e.name for e in os.scandir(run)] if run.is_dir() else []
            tmps = [n for n in tmps if n.startswith(".phase1_") and n.endswith(".tmp")]
            if tmps and skip == 0:
                proc.send_signal(signal.SIGKILL)
                seen = tmps[0]
            elif tmps:
                skip -= 1
                while any(e.name in tmps for e in os.scandir(run)):
                    time.sleep(0.0002)
            time.sleep(0.0002)
        proc.wait()
        left = [p.name for p in run.glob(".*.tmp")]
        caught += bool(seen and left)
        out = subprocess.run(_phase1(r), cwd=ROOT, env=ENV, capture_output=True, text=True, check=False)
        ok = (out.returncode == 0 and _same_final(ref, run / "phase1_cosmos_final.pt")
              and not list(run.glob(".*.tmp")) and all(n in out.stderr for n in left))
        survived += ok
        detail.append({"killed_during": seen, "leftovers_at_kill": left, "stale_lock_taken_over": "no longer running" in
                       out.stderr, "survived": ok})
    return {"tried": trials, "killed_mid_write": caught, "survived": survived, "lost": trials - survived,
            "detail": detail}


def truncated_latest(d: Path, ref: Path, trials: int) -> dict:
    rng, survived, detail = random.Random(1), 0, []
    for t in range(trials):
        r = _trial_dir(d, f"tr{t}")
        run = r / "ckpt" / "t"
        subprocess.run(_phase1(r), cwd=ROOT, env=ENV, check=True, capture_output=True)
        latest = max(run.glob("phase1_step*.pt"), key=lambda p: int(p.stem.split("step")[1]))
        data = latest.read_bytes()
        cut = 0 if t == 0 else rng.randrange(1, len(data))
        latest.write_bytes(data[:cut])
        (run / "phase1_cosmos_final.pt").unlink()  # as if killed before the final save
        out = subprocess.run(_phase1(r), cwd=ROOT, env=ENV, capture_output=True, text=True, check=False)
        ok = (out.returncode == 0 and f"{latest} is damaged" in out.stderr and "unsafe" not in out.stderr
              and latest.with_name(latest.name + ".damaged").is_file()
              and _same_final(ref, run / "phase1_cosmos_final.pt"))
        survived += ok
        detail.append({"file": latest.name, "cut_to_bytes": cut, "of": len(data), "survived": ok})
    return {"tried": trials, "survived": survived, "lost": trials - survived, "detail": detail}


def swapped_input(d: Path) -> dict:
    import torch
    from test_resilience import tiny_overrides

    from dreamer.training.checkpoint import load_checkpoint

    r = _trial_dir(d, "sw")
    other = _trial_dir(d, "sw_other")
    p2 = ["--set", "phase2.steps=4", "--set", "phase2.ckpt_every=2", "--set", "phase2.eval_every=4",
          "--set", "phase2.eval_episodes=0"]
    subprocess.run(_phase1(r, 4), cwd=ROOT, env=ENV, check=True, capture_output=True)
    subprocess.run([*_phase1(other, 4), "--set", "seed=1", "--set", f"data.cache_dir={r / 'cache'}"], cwd=ROOT,
                   env=ENV, check=True, capture_output=True)
    run, base = r / "ckpt" / "t", [sys.executable, "train_phase2.py", *tiny_overrides(r, 4), *p2]
    final1 = run / "phase1_cosmos_final.pt"
    subprocess.run([*base, "--checkpoint", str(final1)], cwd=ROOT, env=ENV, check=True, capture_output=True)
    copy = d / "copy_of_phase1_final.pt"
    copy.write_bytes(final1.read_bytes())
    wrong = d / "phase2_final_copy.pt"
    wrong.write_bytes((run / "phase2_final.pt").read_bytes())
    cases = [("other run's phase-1 final", other / "ckpt" / "t" / "phase1_cosmos_final.pt", "refused",
              "was started from phase1 checkpoint"),
             ("earlier phase-1 checkpoint", run / "phase1_step2.pt", "refused", "was started from phase1 checkpoint"),
             ("phase-2 final as phase-1 input", wrong, "refused", "is a phase-2 checkpoint"),
             ("copy of the original (same weights)", copy, "resumed", "resumed from"),
             ("--fresh with another run's final", other / "ckpt" / "t" / "phase1_cosmos_final.pt", "fresh", "")]
    detail, survived = [], 0
    for name, given, expect, says in cases:
        config = (run / "config_phase2.yaml").read_bytes()
        out = subprocess.run([*base, "--checkpoint", str(given), *(["--fresh"] if expect == "fresh" else [])], cwd=ROOT,
                             env=ENV, capture_output=True, text=True, check=False)
        if expect == "refused":
            ok = out.returncode != 0 and says in out.stderr and (run / "config_phase2.yaml").read_bytes() == config
        elif expect == "resumed":
            ok = out.returncode == 0 and says in out.stderr
        else:
            want, got = load_checkpoint(given)["models"]["dynamics"], load_checkpoint(run / "phase2_final.pt")
            ok = (out.returncode == 0 and "resumed from" not in out.stderr and (run / "superseded").is_dir()
                  and all(torch.equal(want[k], got["models"]["dynamics"][k]) for k in want)
                  and got["inputs"]["phase1"]["path"] == str(given.resolve()))
        survived += ok
        detail.append({"case": name, "expected": expect, "survived": ok,
                       "message": (out.stderr.strip().splitlines() or [""])[-1][:300]})
    return {"tried": len(cases), "survived": survived, "lost": len(cases) - survived, "detail": detail}


def _cache_trial(d: Path, name: str) -> tuple[Path, list[str]]:
    """A trial folder whose latent cache is built (phase 1 not run yet), and its (train…, held-out) entries."""
    from test_resilience import tiny_overrides

    r = _trial_dir(d, name)
    subprocess.run([sys.executable, "-m", "dreamer.pipeline.data", *tiny_overrides(r, 12)], cwd=ROOT, env=ENV,
                   check=True, capture_output=True)
    split = json.loads((r / "cache" / "manifest.json").read_text())["split"]
    return r, split["train"] + split["val"]


def _nan_into(f: Path) -> None:
    z = np.load(f)
    z[1] = np.nan
    np.save(f, z)


def damaged_cache(d: Path, ref: Path) -> dict:
    """The cache cases: an entry's latents truncated, NaN in a training entry, NaN in the held-out entry (each
    survived = named, moved aside, rebuilt, and the run ends bitwise equal to the undamaged reference); a damaged
    entry whose episode file is damaged too (survived = refused in one line naming both files, exit 4); NaN that
    the cache's check cannot see (records rewritten; survived = the guard stops in one line naming the episodes,
    exit 6)."""
    from test_resilience import hide_from_the_check

    detail = []
    for case in ("truncated_train_entry", "nan_train_entry", "nan_heldout_entry", "entry_and_episode_damaged",
                 "nan_hidden_from_the_check"):
        r, names = _cache_trial(d, f"dc_{case}")
        name = names[-1] if case == "nan_heldout_entry" else names[0]
        f = r / "cache" / "episodes" / name / "latents.npy"
        if case.startswith("truncated") or case == "entry_and_episode_damaged":
            f.write_bytes(f.read_bytes()[:90])
        if case == "entry_and_episode_damaged":
            episode = r / "eps" / f"{name}.npz"  # the trial's own copy, not the shared episodes
            os.unlink(r / "eps")
            (r / "eps").mkdir()
            for src in sorted((d / "eps").glob("*.npz")):
                (r / "eps" / src.name).write_bytes(src.read_bytes())
            episode.write_bytes(episode.read_bytes()[:500])
        if case.startswith("nan"):
            if case == "nan_hidden_from_the_check":
                for n in names:
                    _nan_into(r / "cache" / "episodes" / n / "latents.npy")
                hide_from_the_check(r / "cache")
            else:
                _nan_into(f)
        out = subprocess.run(_phase1(r), cwd=ROOT, env=ENV, capture_output=True, text=True, check=False)
        last = (out.stderr.strip().splitlines() or [""])[-1]
        if case == "entry_and_episode_damaged":
            ok = out.returncode == 4 and "Traceback" not in out.stderr and str(f) in last and f"{name}.npz" in last
        elif case == "nan_hidden_from_the_check":
            ok = out.returncode == 6 and "Traceback" not in out.stderr and "non-finite" in last and "ep_" in last
        else:
            run = r / "ckpt" / "t"
            ok = (out.returncode == 0 and str(f) in out.stderr and (r / "cache" / "damaged").is_dir()
                  and _same_final(ref, run / "phase1_cosmos_final.pt"))
        detail.append({"case": case, "survived": ok, "exit_code": out.returncode, "message": last[:300]})
    survived = sum(x["survived"] for x in detail)
    return {"tried": len(detail), "survived": survived, "lost": len(detail) - survived, "detail": detail}


def user_errors(d: Path) -> dict:
    """Mistakes at the command line: survived = no traceback, one ``error:`` line naming the culprit, the exit code
    of its kind (dreamer.errors)."""
    from test_resilience import tiny_overrides

    r = _trial_dir(d, "ue")
    subprocess.run(_phase1(r, 2), cwd=ROOT, env=ENV, check=True, capture_output=True)
    p1 = [sys.executable, "train_phase1_cosmos.py", *tiny_overrides(r, 2)]
    busy = r / "ckpt" / "t"
    cases = [("unknown --set key", [*p1, "--set", "phase1.stepz=3"], 2, "'stepz'"),
             ("wrong type", [*p1, "--set", "phase1.steps=abc"], 2, "phase1.steps"),
             ("missing tokenizer folder", [*p1, "--set", f"tokenizer.pretrained={d / 'no_tokenizer'}"], 3,
              "no_tokenizer"),
             ("folder as --checkpoint", [sys.executable, "train_phase2.py", *tiny_overrides(r, 2), "--checkpoint",
                                         str(busy)], 3, "is a folder"),
             ("file as data.cache_dir", [*p1, "--set", f"data.cache_dir={busy / 'phase1_cosmos_final.pt'}"], 3,
              "is a file, not a folder"),
             ("file as checkpoint_root", [*p1, "--set", f"checkpoint_root={busy / 'phase1_cosmos_final.pt'}"], 3,
              "is a file, not a folder"),
             ("disk floor above the free space", [*p1, "--set", "min_free_mb=1000000000"], 5, "min_free_mb"),
             ("busy run folder", [*p1, "--set", "phase1.steps=4"], 5, "is in use by")]
    detail = []
    for name, cmd, code, says in cases:
        holder = None
        if name == "busy run folder":  # a second command while the first trains
            holder = subprocess.Popen([*p1, "--set", "phase1.steps=400", "--set", "phase1.ckpt_every=1000"], cwd=ROOT,
                                      env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            lock = busy / "run.lock"
            while holder.poll() is None and f'"pid": {holder.pid},' not in (lock.read_text() if lock.is_file() else ""):
                time.sleep(0.05)
        out = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, check=False)
        if holder is not None:
            holder.kill()
            holder.wait()
        last = (out.stderr.strip().splitlines() or [""])[-1]
        ok = out.returncode == code and "Traceback" not in out.stderr and last.startswith("error:") and says in last
        detail.append({"case": name, "survived": ok, "exit_code": out.returncode, "message": last[:300]})
    survived = sum(x["survived"] for x in detail)
    return {"tried": len(detail), "survived": survived, "lost": len(detail) - survived, "detail": detail}


def hostile(trials: int) -> dict:
    from dreamer.data.episode import save_episode
    from dreamer.data.synthetic import make_episode

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for i in range(4):
            save_episode(d / "eps" / f"ep_{i}.npz", make_episode(T=40, seed=i))
        ref = _trial_dir(d, "ref")
        subprocess.run(_phase1(ref), cwd=ROOT, env=ENV, check=True, capture_output=True)
        ref_final = ref / "ckpt" / "t" / "phase1_cosmos_final.pt"
        return {"kill_while_writing": kill_while_writing(d, ref_final, trials),
                "truncated_latest": truncated_latest(d, ref_final, trials),
                "swapped_input": swapped_input(d),
                "damaged_cache": damaged_cache(d, ref_final),
                "user_errors": user_errors(d)}


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
    p.add_argument("--hostile-trials", type=int, default=4, help="trials of kill-while-writing and truncated-latest")
    p.add_argument("--skip-hostile", action="store_true")
    p.add_argument("--rss-child")
    args = p.parse_args()
    if args.rss_child:
        return rss_child(args.rss_child)
    out = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}
    if not args.skip_rss:
        out["peak_rss"] = peak_rss()
    if not args.skip_kill:
        out["kill_resume"] = kill_resume(args.trials, args.fsdp)
    if not args.skip_hostile:
        out["hostile"] = hostile(args.hostile_trials)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
