"""Scale-out and robustness of the phase scripts (phase 1 as the representative): a two-process gloo
run, exact resume after SIGKILL, and the non-finite guard leaving the last good checkpoint intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from dreamer.data.episode import save_episode
from dreamer.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # every test here runs the phase script in subprocesses


TEST_CONFIG = str(ROOT / "configs" / "test.yaml")  # the shared test overlay; the keys below are this test's own


def tiny_overrides(tmp: Path, steps: int, ckpt_every: int = 2) -> list[str]:
    sets = [
        f"checkpoint_root={tmp / 'ckpt'}", f"data.episodes_dir={tmp / 'eps'}", f"data.cache_dir={tmp / 'cache'}",
        f"phase1.steps={steps}", "phase1.eval_every=1000", f"phase1.ckpt_every={ckpt_every}",
        "phase1.keep_checkpoints=100",
    ]
    return ["--config", TEST_CONFIG, *[a for s in sets for a in ("--set", s)]]


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a launched run and everything it started, and wait until all of it is gone. torchrun starts
    each worker in a session of its own, so killing the launcher's process group leaves the workers
    running (training on, holding the run lock): collect the tree first, then kill it."""
    try:
        tree = [psutil.Process(proc.pid)]
        tree += tree[0].children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()
    psutil.wait_procs(tree, timeout=30)


@pytest.fixture
def episodes(tmp_path, episode_factory):
    for i in range(4):
        save_episode(tmp_path / "eps" / f"ep_{i}.npz", episode_factory(T=40, seed=i))
    return tmp_path


def run(args: list[str], env_extra: dict | None = None, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False, **kw)


def weights(path: Path) -> dict:
    return load_checkpoint(path)["models"]["dynamics"]


def test_two_process_gloo_then_single_process_resume(episodes):
    tmp = episodes
    out = run(["-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
               "train_phase1_cosmos.py", *tiny_overrides(tmp, steps=4)], timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "rank 1 of 2" in out.stderr or "distributed: rank 0 of 2" in out.stderr
    final = tmp / "ckpt" / "t" / "phase1_cosmos_final.pt"
    assert load_checkpoint(final)["step"] == 4
    assert not (tmp / "ckpt" / "t" / "run.lock").exists()  # rank 0 held it for both ranks, and let go
    out = run(["train_phase1_cosmos.py", *tiny_overrides(tmp, steps=6)], timeout=300)  # single process resumes
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from" in out.stderr and load_checkpoint(final)["step"] == 6


def test_one_ddp_worker_killed_brings_the_launcher_down_and_the_rerun_resumes(episodes):
    """One of two torchrun workers SIGKILLed after the step-4 checkpoint: the launcher ends (non-zero) within
    seconds, the other worker with it, the run folder's lock is let go, and the same command resumes."""
    tmp = episodes
    cmd = ["-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29519", "train_phase1_cosmos.py",
           *tiny_overrides(tmp, steps=400, ckpt_every=4)]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    launcher = subprocess.Popen([sys.executable, *cmd], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list((tmp / "ckpt" / "t").glob("phase1_step4.pt")):
        time.sleep(0.05)
    workers = [c for c in psutil.Process(launcher.pid).children(recursive=True) if "train_phase1_cosmos.py" in
               " ".join(c.cmdline())]
    assert len(workers) == 2
    workers[-1].kill()
    t0 = time.time()
    assert launcher.wait(timeout=60) != 0
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive and time.time() - t0 < 60
    assert not (tmp / "ckpt" / "t" / "phase1_cosmos_final.pt").exists(), "killed too late to test anything"
    out = run(["train_phase1_cosmos.py", *tiny_overrides(tmp, steps=8, ckpt_every=4)], timeout=300)  # the lock is free
    assert out.returncode == 0 and "resumed from" in out.stderr, out.stderr[-3000:]
    assert load_checkpoint(tmp / "ckpt" / "t" / "phase1_cosmos_final.pt")["step"] == 8


def test_two_identical_commands_one_run_folder(episodes):
    """The second of two identical commands on one run folder stops at once, naming the first; the first
    runs to its end and lets go of the folder (a failing one lets go too: tests/training/test_lock.py)."""
    tmp = episodes
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    cmd = ["train_phase1_cosmos.py", *tiny_overrides(tmp, steps=1000, ckpt_every=500)]  # ~10 s of training
    first = subprocess.Popen([sys.executable, *cmd], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    lock = tmp / "ckpt" / "t" / "run.lock"
    deadline = time.time() + 120
    while time.time() < deadline and not lock.exists():
        time.sleep(0.05)
    second = run(cmd, timeout=300)
    assert first.wait(timeout=300) == 0
    assert second.returncode != 0 and f"is in use by pid {first.pid} on host" in second.stderr, second.stderr[-2000:]
    assert not lock.exists()


def test_sigkill_then_resume_matches_uninterrupted(episodes, tmp_path_factory):
    tmp = episodes
    ref = tmp_path_factory.mktemp("ref")
    os.symlink(tmp / "eps", ref / "eps")
    steps = 12
    out = run(["train_phase1_cosmos.py", *tiny_overrides(ref, steps)], timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    for kill_after in ("phase1_step4.pt", "phase1_step8.pt"):  # two SIGKILLs in a row, the second in the resumed run
        proc = subprocess.Popen([sys.executable, "train_phase1_cosmos.py", *tiny_overrides(tmp, steps)], cwd=ROOT,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while time.time() < deadline and not list((tmp / "ckpt" / "t").glob(kill_after)):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (tmp / "ckpt" / "t" / "phase1_cosmos_final.pt").exists(), "killed too late to test anything"
    out = run(["train_phase1_cosmos.py", *tiny_overrides(tmp, steps)], timeout=300)
    assert out.returncode == 0 and "resumed from" in out.stderr, out.stderr[-3000:]
    a = weights(ref / "ckpt" / "t" / "phase1_cosmos_final.pt")
    b = weights(tmp / "ckpt" / "t" / "phase1_cosmos_final.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run differs from the uninterrupted one"


def test_nan_batches_stop_run_and_keep_checkpoint(episodes):
    """Non-finite batches the cache's check cannot see (its records rewritten to match the poisoned files, as if
    the model made them non-finite): the guard stops the run in one line, exit code 6, naming the steps and the
    episodes, and leaves the last good checkpoint as it was."""
    tmp = episodes
    assert run(["train_phase1_cosmos.py", *tiny_overrides(tmp, steps=2)], timeout=300).returncode == 0
    good, final = tmp / "ckpt" / "t" / "phase1_step2.pt", tmp / "ckpt" / "t" / "phase1_cosmos_final.pt"
    before, final_before = good.read_bytes(), final.read_bytes()
    for d in (tmp / "cache" / "episodes").iterdir():  # poison every cached latent
        z = np.load(d / "latents.npy")
        z[:] = np.nan
        np.save(d / "latents.npy", z)
    hide_from_the_check(tmp / "cache")
    out = run(["train_phase1_cosmos.py", *tiny_overrides(tmp, steps=10), "--set", "phase1.max_nonfinite=3"],
              timeout=300)
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 6 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert last.startswith("error: 3 non-finite steps in a row") and "steps 2, 3, 4" in last and "ep_" in last
    assert good.read_bytes() == before and final.read_bytes() == final_before
    assert not list((tmp / "ckpt" / "t").glob("phase1_step[3-9]*.pt"))


def hide_from_the_check(cache_dir: Path) -> None:
    """Record the cache's files as they are now, so that opening it does not check them again."""
    import json

    from dreamer.data.cache import file_record

    manifest = json.loads((cache_dir / "manifest.json").read_text())
    manifest["files"] = {n: file_record(cache_dir / "episodes" / n) for n in manifest["sources"]}
    (cache_dir / "manifest.json").write_text(json.dumps(manifest))


def test_damaged_cache_entries_are_rebuilt_and_the_run_ends_as_an_undamaged_one(episodes, tmp_path_factory):
    """The hostile pass's cache cases at once: a training entry's latents.npy truncated, NaN written into another
    training entry's and into the held-out entry's. Phase 1 names each, moves it aside, re-encodes it from its
    episode file and ends with the weights and held-out figures of a run on the undamaged cache."""
    ref = tmp_path_factory.mktemp("undamaged")
    os.symlink(episodes / "eps", ref / "eps")
    assert run(["train_phase1_cosmos.py", *tiny_overrides(ref, steps=4)], timeout=300).returncode == 0
    tmp = episodes
    assert run(["-m", "dreamer.pipeline.data", *tiny_overrides(tmp, steps=4)], timeout=300).returncode == 0
    import json

    split = json.loads((tmp / "cache" / "manifest.json").read_text())["split"]
    (train_a, train_b), held = split["train"][:2], split["val"][0]
    f = tmp / "cache" / "episodes" / train_a / "latents.npy"
    f.write_bytes(f.read_bytes()[:90])
    for name in (train_b, held):
        f = tmp / "cache" / "episodes" / name / "latents.npy"
        z = np.load(f)
        z[1] = np.nan
        np.save(f, z)
    out = run(["train_phase1_cosmos.py", *tiny_overrides(tmp, steps=4)], timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    for name, cause in ((train_a, "unreadable"), (train_b, "non-finite latents"), (held, "non-finite latents")):
        assert f"{tmp / 'cache' / 'episodes' / name / 'latents.npy'}: {cause}" in out.stderr
    assert len(list((tmp / "cache" / "damaged").iterdir())) == 3
    a = load_checkpoint(ref / "ckpt" / "t" / "phase1_cosmos_final.pt")
    b = load_checkpoint(tmp / "ckpt" / "t" / "phase1_cosmos_final.pt")
    assert all(torch.equal(a["models"]["dynamics"][k], b["models"]["dynamics"][k]) for k in a["models"]["dynamics"])
    assert a["eval"] == b["eval"] and all(np.isfinite(v) for v in b["eval"].values())


def test_fsdp_two_process_sigkill_resume_matches_ddp_and_hands_off(episodes, tmp_path_factory):
    """phase1.fsdp=true under torchrun: a sharded run SIGKILLed (launcher and workers) after its step-4
    checkpoint and resumed by the same command ends with the weights of an uninterrupted DDP run (up to
    the order of the gradient reductions), and its checkpoint (plain, unsharded) resumes in one process."""
    tmp, steps = episodes, 12
    ddp = tmp_path_factory.mktemp("ddp")
    os.symlink(tmp / "eps", ddp / "eps")
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29519",
              "train_phase1_cosmos.py"]
    out = run(launch[1:] + tiny_overrides(ddp, steps), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    fsdp = [*launch, *tiny_overrides(tmp, steps), "--set", "phase1.fsdp=true"]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(fsdp, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    run_dir = tmp / "ckpt" / "t"
    deadline = time.time() + 240
    while time.time() < deadline and not (run_dir / "phase1_step4.pt").exists():
        time.sleep(0.05)
    kill_tree(proc)
    assert not (run_dir / "phase1_cosmos_final.pt").exists(), "killed too late to test anything"
    out = run(fsdp[1:], timeout=300)
    assert out.returncode == 0 and "resumed from" in out.stderr, out.stderr[-3000:]
    assert "FSDP: DynamicsModel sharded over 2 ranks" in out.stderr
    a, b = weights(ddp / "ckpt" / "t" / "phase1_cosmos_final.pt"), weights(run_dir / "phase1_cosmos_final.pt")
    assert a.keys() == b.keys() and all(type(v) is torch.Tensor for v in b.values())  # gathered, not DTensors
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
    out = run(["train_phase1_cosmos.py", *tiny_overrides(tmp, steps + 1)], timeout=300)  # one process continues
    assert out.returncode == 0 and "resumed from" in out.stderr, out.stderr[-3000:]
    assert load_checkpoint(run_dir / "phase1_cosmos_final.pt")["step"] == steps + 1


def test_rerun_of_a_finished_run_keeps_its_heldout_figures(episodes):
    """Rerunning a finished phase 1 resumes at its last step: the final checkpoint is rewritten with the
    held-out figures recomputed on the same weights, not with an empty evaluation."""
    tmp = episodes
    final = tmp / "ckpt" / "t" / "phase1_cosmos_final.pt"
    assert run(["train_phase1_cosmos.py", *tiny_overrides(tmp, steps=2)], timeout=300).returncode == 0
    first = load_checkpoint(final)["eval"]
    out = run(["train_phase1_cosmos.py", *tiny_overrides(tmp, steps=2)], timeout=300)
    assert out.returncode == 0 and "resumed from" in out.stderr, out.stderr[-3000:]
    again = load_checkpoint(final)["eval"]
    assert first and again.keys() == first.keys()
    assert again == pytest.approx(first)
