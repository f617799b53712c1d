"""The phase scripts against a hostile user (issue 19), in process on tiny synthetic runs: a damaged
latest checkpoint, a swapped input checkpoint, a refused command, leftovers of killed writes, a second
command on a busy run folder."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train_phase1_cosmos
import train_phase2
from dreamer import atomic
from dreamer.data.cache import CacheMismatchError
from dreamer.data.episode import save_episode
from dreamer.data.synthetic import make_episode
from dreamer.training.checkpoint import (
    CheckpointMismatchError,
    InputMismatchError,
    atomic_save,
    load_checkpoint,
    state_sha256,
)
from dreamer.training.lock import RunFolderBusyError

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = str(ROOT / "configs" / "test.yaml")


def args(tmp: Path, run: str, *sets: str) -> list[str]:
    base = [f"run={run}", f"checkpoint_root={tmp / 'ckpt'}", f"data.episodes_dir={tmp / 'eps'}",
            f"data.cache_dir={tmp / 'cache'}", "data.val_fraction=0.34", "phase1.steps=4", "phase1.eval_every=4",
            "phase1.keep_checkpoints=10", "phase2.steps=2", "phase2.eval_every=2", "phase2.eval_episodes=0"]
    return ["--config", TEST_CONFIG, *[a for s in (*base, *sets) for a in ("--set", s)]]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run_folder")
    for i in range(3):
        save_episode(tmp / "eps" / f"ep{i}.npz", make_episode(T=20 + 4 * i, seed=i))
    train_phase1_cosmos.main(args(tmp, "p1"))
    return tmp


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and "tb" not in p.parts}


def test_damaged_latest_checkpoint_and_leftovers(data, caplog):
    """The newest periodic checkpoint cut short: reported as damaged, moved aside, the run resumes from
    the previous one and ends bitwise where the uninterrupted run ended. Leftovers of killed writes in
    the run folder, the cache and the episode folder are removed and named in the log."""
    run = data / "ckpt" / "p1"
    final = load_checkpoint(run / "phase1_cosmos_final.pt")
    latest = run / "phase1_step4.pt"
    latest.write_bytes(latest.read_bytes()[:5000])
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                              check=True).stdout)
    tag = f"{atomic.HOST_TAG}-{dead}"
    leftovers = [run / ".phase1_step10.pt.k2j3h4l5.tmp", run / ".phase1_cosmos_final.pt.q1w2e3r4.tmp",
                 data / "cache" / "episodes" / f".ep0.{tag}-abcdefgh.tmp",
                 data / "eps" / f".ep9.npz.{tag}-a1b2c3d4.tmp"]
    for p in leftovers:
        p.write_bytes(b"half written")
    (data / "cache" / "episodes" / f".ep1.{tag}-zzzzzzzz.tmp").mkdir()  # a half-built cache episode folder
    with caplog.at_level(logging.INFO):
        train_phase1_cosmos.main(args(data, "p1"))
    assert f"checkpoint {latest} is damaged: a zip archive cut short" in caplog.text
    assert "unsafe" not in caplog.text and "refusing to unpickle" not in caplog.text
    assert (run / "phase1_step4.pt.damaged").stat().st_size == 5000  # kept for a look
    assert f"resumed from {run / 'phase1_step2.pt'} at step 2" in caplog.text
    again = load_checkpoint(run / "phase1_cosmos_final.pt")
    for k, v in final["models"]["dynamics"].items():
        assert torch.equal(again["models"]["dynamics"][k], v), k
    for p in leftovers:
        assert not p.exists() and p.name in caplog.text
    assert not list((data / "cache" / "episodes").glob(".ep1.*"))
    assert not list(run.glob(".*.tmp")) and not (run / "run.lock").exists()


def test_a_refused_command_leaves_the_run_folder_as_it_was(data):
    """--set tokenizer.pool=... against an existing run: refused (by the cache, or by the checkpoint when
    the cache is new), and config_phase1.yaml still describes the run that is there."""
    run = data / "ckpt" / "p1"
    before = snapshot(run)
    with pytest.raises(CacheMismatchError):
        train_phase1_cosmos.main(args(data, "p1", "tokenizer.pool=1"))
    with pytest.raises(CheckpointMismatchError, match="tokenizer differs"):
        train_phase1_cosmos.main(args(data, "p1", "tokenizer.pool=1", f"data.cache_dir={data / 'cache_pool1'}"))
    assert snapshot(run) == before
    assert not (run / "run.lock").exists()


def test_a_swapped_phase1_checkpoint_is_refused_then_fresh_on_request(data):
    run, p1 = data / "ckpt" / "p2", data / "ckpt" / "p1" / "phase1_cosmos_final.pt"
    train_phase2.main([*args(data, "p2"), "--checkpoint", str(p1)])
    first = load_checkpoint(run / "phase2_final.pt")
    want = {"path": str(p1.resolve()), "sha256": state_sha256({"dynamics": load_checkpoint(p1)["models"]["dynamics"]}),
            "step": 4}
    assert first["inputs"] == {"phase1": want} and load_checkpoint(run / "phase2_step2.pt")["inputs"] == {"phase1": want}
    assert json.loads((run / "inputs_phase2.json").read_text())["inputs"] == {"phase1": want}

    other = load_checkpoint(p1)  # another phase-1 run: same data, other dynamics weights
    other["models"]["dynamics"] = {k: v + 0.01 for k, v in other["models"]["dynamics"].items()}
    other_path = atomic_save(other, data / "other_phase1.pt")
    before = snapshot(run)
    with pytest.raises(InputMismatchError, match=rf"started from phase1 checkpoint {p1.resolve()} \(weights "
                                                      rf"{want['sha256'][:12]}\), but this command gives "
                                                      rf"{other_path.resolve()} .*--fresh"):
        train_phase2.main([*args(data, "p2"), "--checkpoint", str(other_path)])
    assert snapshot(run) == before  # config_phase2.yaml and inputs_phase2.json untouched

    train_phase2.main([*args(data, "p2"), "--checkpoint", str(other_path), "--fresh"])
    fresh = load_checkpoint(run / "phase2_final.pt")
    assert fresh["inputs"]["phase1"]["path"] == str(other_path.resolve())
    for k, v in other["models"]["dynamics"].items():  # trained on top of the dynamics it was given
        assert torch.equal(fresh["models"]["dynamics"][k], v), k
    (aside,) = (run / "superseded").iterdir()  # the first run's files, kept
    assert load_checkpoint(aside / "phase2_final.pt")["inputs"] == {"phase1": want}


def test_a_busy_run_folder_stops_a_second_command(data):
    run = data / "ckpt" / "p1"
    hold = ("import sys; from dreamer.training.lock import RunLock; RunLock.acquire(sys.argv[1], 'phase1'); "
            "print('held', flush=True); sys.stdin.readline()")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(run)], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(run)
        with pytest.raises(RunFolderBusyError, match=rf"run folder {run} is in use by pid {holder.pid} on host "):
            train_phase1_cosmos.main(args(data, "p1"))
        assert snapshot(run) == before
    finally:
        holder.communicate("\n")
    assert holder.returncode == 0 and not (run / "run.lock").exists()
    assert os.listdir(run)  # and the folder is usable again
    train_phase1_cosmos.main(args(data, "p1"))
