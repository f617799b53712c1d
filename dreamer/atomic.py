"""Atomic writes, the one home for them: a file or a folder is built beside its target under a temporary
name, flushed, then renamed over the target.

A crash at any moment leaves either the old file (folder) or the new one, never a half-written one.
Checkpoints use :func:`atomic_open` through :func:`dreamer.training.checkpoint.atomic_save`.

Temporary names carry their writer: ``.<target>.<host>-<pid>-<random>.tmp`` (a folder being replaced
is parked as ``.<target>.old-<host>-<pid>``), so :func:`remove_stale_temps` can tell the leftovers of a
killed writer from the work of one still running. A failed write raises :class:`WriteError`, which
names the file and the free space where it was going.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from dreamer.errors import RUN_FOLDER, UserError

log = logging.getLogger(__name__)

HOST_TAG = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
# .<target>.<host>-<pid>-<random>.tmp (this module), .<target>.<random>.tmp (before writers were named),
# .<target>.old-<host>-<pid> and .<target>.old-<pid> (a folder parked while atomic_dir replaces it).
_TMP = re.compile(r"\.(?P<target>.+)\.(?:(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-)?[a-z0-9_]{8}\.tmp")
_OLD = re.compile(r"\.(?P<target>.+)\.old-(?:(?P<host>[0-9a-f]{6})-)?(?P<pid>\d+)")
LEGACY_STALE_S = 3600  # an unnamed writer's temporary counts as abandoned after an hour without change


class WriteError(UserError, OSError):
    """A write failed (disk full, quota, read-only, I/O error): names the file and the free space."""

    exit_code = RUN_FOLDER


def _tag() -> str:
    return f"{HOST_TAG}-{os.getpid()}-"


def free_space(path: str | os.PathLike) -> str:
    """Free space of the file system holding ``path`` (its nearest existing parent), for messages."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return f"{shutil.disk_usage(p).free / 2**20:.1f} MiB free under {p}"
    except OSError as e:
        return f"free space under {p} unknown ({e.strerror})"


def write_error(path: str | os.PathLike, e: BaseException) -> WriteError:
    """``e`` (raised while writing ``path``) as a :class:`WriteError` naming the path and the free space."""
    code = getattr(e, "errno", None)
    what = "disk full" if code in (errno.ENOSPC, errno.EDQUOT) else "write failed"
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0] if str(e) else type(e).__name__
    return WriteError(code, f"{what} writing {path}: {reason} ({free_space(Path(path).parent)})")


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """``with atomic_open(p) as fh: fh.write(...)``; ``p`` appears only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_tag()}", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from e
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise write_error(path, e) from e
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path) as fh:
        fh.write(data)
    return Path(path)


@contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_dir(d) as tmp: <write files into tmp>``; then ``tmp`` takes the place of ``d``.

    An existing ``d`` is moved aside first and removed only once the new folder is in place; on an
    error the temporary folder is removed and ``d`` is left (or put back) as it was.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{_tag()}", suffix=".tmp", dir=target.parent))
    except OSError as e:
        raise write_error(target, e) from e
    old = target.parent / f".{target.name}.old-{HOST_TAG}-{os.getpid()}"
    try:
        yield tmp
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not target.exists():
            os.replace(old, target)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise write_error(target, e) from e
        raise
    shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _abandoned(entry: Path, host: str | None, pid: str | None, owned: bool) -> bool:
    if owned:  # the caller holds the folder's lock: no one else writes here
        return True
    if pid is None:  # written before temporaries were named: judge by age
        try:
            return time.time() - entry.lstat().st_mtime > LEGACY_STALE_S
        except FileNotFoundError:
            return False
    if host is not None and host != HOST_TAG:
        return False  # another machine's writer: cannot tell whether it still runs
    return not _alive(int(pid))


def remove_stale_temps(folder: str | os.PathLike, owned: bool = False) -> list[str]:
    """Remove the leftovers of killed atomic writes directly inside ``folder`` (never below it, never a name
    this module does not make). ``owned``: the caller holds the folder's lock, so every leftover is stale;
    otherwise only those of dead processes on this machine (and unnamed ones older than an hour) are.

    A folder parked by :func:`atomic_dir` is put back when its replacement never arrived. Returns the
    names removed (and restored, marked so) and logs them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    done = []
    for entry in sorted(folder.iterdir()):
        m = _TMP.fullmatch(entry.name) or _OLD.fullmatch(entry.name)
        if not m or not _abandoned(entry, m.group("host"), m.group("pid"), owned):
            continue
        target = folder / m.group("target")
        if m.re is _OLD and not target.exists():
            os.replace(entry, target)  # killed between the two renames: the old folder is the good one
            done.append(f"{entry.name} (restored as {target.name})")
            continue
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() and not entry.is_symlink() else entry.unlink(
            missing_ok=True)
        done.append(entry.name)
    if done:
        log.info("removed leftovers of interrupted writes in %s: %s", folder, ", ".join(done))
    return done
