"""One run folder, one writer (dreamer/training/lock.py): a second holder is refused with the owner
named, the lock of a killed process is taken over, and the lock goes when its process ends however it
ends."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dreamer.training.lock import LOCK_NAME, RunFolderBusyError, RunLock

ROOT = Path(__file__).resolve().parents[2]
HOLD = ("import sys; from dreamer.training.lock import RunLock; RunLock.acquire(sys.argv[1], 'phase1'); "
        "print('held', flush=True); line = sys.stdin.readline(); ")


def holder(run: Path, then: str = "") -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD + then, str(run)], cwd=ROOT, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held", p.stderr.read()
    return p


def test_a_second_writer_is_refused_naming_the_owner(tmp_path):
    run = tmp_path / "run"
    p = holder(run)
    try:
        with pytest.raises(RunFolderBusyError, match=rf"run folder {run} is in use by pid {p.pid} on host "
                                                     rf"{socket.gethostname()} \(phase1, started .*: -c {run}\)"):
            RunLock.acquire(run, "phase2")
    finally:
        p.communicate("\n")  # the holder ends normally
    assert p.returncode == 0 and not (run / LOCK_NAME).exists()  # released at exit
    RunLock.acquire(run, "phase2").release()


@pytest.mark.parametrize("end", ["exception", "sigkill"])
def test_the_lock_of_an_ended_process_is_released_or_taken_over(tmp_path, caplog, end):
    run = tmp_path / "run"
    p = holder(run, "raise ValueError('the phase failed')" if end == "exception" else "")
    if end == "sigkill":
        p.send_signal(signal.SIGKILL)
    _, err = p.communicate("\n")
    if end == "exception":
        assert p.returncode == 1 and "the phase failed" in err
        assert not (run / LOCK_NAME).exists()
    else:  # nothing ran at exit: the file stays, but the kernel dropped the lock with the process
        assert json.loads((run / LOCK_NAME).read_text())["pid"] == p.pid
    with caplog.at_level("WARNING"):
        lock = RunLock.acquire(run, "phase2")
    if end == "sigkill":
        assert f"left by pid {p.pid}" in caplog.text and "no longer running" in caplog.text
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (run / LOCK_NAME).exists()


def test_the_same_process_takes_its_own_lock_again(tmp_path):
    """A phase run again in the same Python process after an exception (its Runtime never closed)."""
    first = RunLock.acquire(tmp_path, "phase1")
    again = RunLock.acquire(tmp_path, "phase2")
    assert again is first and json.loads((tmp_path / LOCK_NAME).read_text())["phase"] == "phase2"
    again.release()
    first.release()  # a second release is harmless
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_holder_being_killed_is_waited_for_not_reported_busy():
    """A command started right after a run was killed may find the lock still held for a moment (torchrun
    workers outlive their launcher): a holder with SIGKILL pending, exiting or a zombie counts as dying."""
    import time

    from dreamer.training.lock import _dying

    host = socket.gethostname()
    assert not _dying({"pid": os.getpid(), "host": host})
    child = subprocess.Popen(["sleep", "30"])
    child.send_signal(signal.SIGSTOP)  # stopped: the SIGKILL stays pending until it is scheduled, or it is a zombie
    child.kill()
    time.sleep(0.2)
    assert _dying({"pid": child.pid, "host": host})
    assert not _dying({"pid": child.pid, "host": "another-host"})
    child.wait()
    assert not _dying({"pid": child.pid, "host": host})  # gone
