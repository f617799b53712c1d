"""One run folder, one writer: ``<run dir>/run.lock``.

The lock is an exclusive ``flock`` on the file, which the kernel drops when its holder dies however it
dies, so the lock of a killed process is simply taken over; the file's content (owner PID, host,
phase, command, start time) is what a refused second command reports. Under torchrun only rank 0 takes
it, for the whole run. The holder releases it on :meth:`RunLock.release` (``Runtime.close``) and, as a
backstop, when its process exits; a process that already holds a folder's lock (a phase run again in
the same Python process after an exception) takes it again.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from dreamer.errors import RUN_FOLDER, UserError

log = logging.getLogger(__name__)
LOCK_NAME = "run.lock"
_HELD: dict[Path, RunLock] = {}  # the folders this process holds, by resolved lock path


class RunFolderBusyError(UserError, RuntimeError):
    """Another process is writing the run folder."""

    exit_code = RUN_FOLDER


class RunLock:
    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    @classmethod
    def acquire(cls, run_dir: str | os.PathLike, phase: str) -> RunLock:
        """Take ``run_dir``'s lock or raise :class:`RunFolderBusyError` naming its holder."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = (run_dir / LOCK_NAME).resolve()
        if path in _HELD:
            log.info("%s: this process already holds %s; keeping it", phase, path)
            _HELD[path]._write(phase)
            return _HELD[path]
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                owner = _read(fd)
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if _dying(owner):  # killed, not yet gone: the kernel drops its lock in a moment
                    time.sleep(0.1)
                    continue
                raise RunFolderBusyError(
                    f"run folder {run_dir} is in use by {_describe(owner)}; one run folder takes one command at a "
                    f"time: wait for it to finish, stop it, or use another run name (--set run=...)") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder released (and removed) the file between our open and flock: again
        previous = _read(fd)
        if previous.get("pid") is not None:
            log.warning("taking over the lock %s left by %s, which is no longer running", path, _describe(previous))
        lock = cls(path, fd)
        try:
            lock._write(phase)
        except OSError:
            os.close(fd)
            raise
        _HELD[path] = lock
        return lock

    def _write(self, phase: str) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "phase": phase, "command": " ".join(sys.argv),
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(info).encode(), 0)

    def release(self) -> None:
        if _HELD.get(self.path) is not self:
            return
        del _HELD[self.path]
        try:
            self.path.unlink(missing_ok=True)  # while still holding it: a waiting opener re-checks the inode
        finally:
            os.close(self.fd)


def _dying(owner: dict) -> bool:
    """True when the lock's holder runs on this host and is being killed (SIGKILL pending) or is a zombie:
    a command started right after killing a run and its workers."""
    pid = owner.get("pid")
    if not isinstance(pid, int) or owner.get("host") != socket.gethostname():
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        flags = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[6])
    except (OSError, ValueError, IndexError):
        return False  # gone (its lock with it), or no /proc: the flock answer stands
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if fields.get("State", "").strip()[:1] in ("Z", "X") or flags & 0x4:  # zombie, or PF_EXITING
        return True
    kill_bit = 1 << (9 - 1)  # SIGKILL in the pending-signal masks
    return any(int(fields.get(k, "0").strip() or "0", 16) & kill_bit for k in ("SigPnd", "ShdPnd"))


def _read(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(owner: dict) -> str:
    if not owner:
        return "another process (its lock file holds no owner yet)"
    return (f"pid {owner.get('pid')} on host {owner.get('host')} ({owner.get('phase')}, started {owner.get('started')}: "
            f"{owner.get('command')})")


@atexit.register
def _release_all() -> None:
    for lock in list(_HELD.values()):
        lock.release()
