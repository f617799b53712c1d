"""Atomic writes, the one home for them: a file or a folder is built beside its target under a temporary
name, flushed, then renamed over the target.

A crash at any moment leaves either the old file (folder) or the new one, never a half-written one.
Checkpoints use :func:`atomic_open` through :func:`dreamer.training.checkpoint.atomic_save`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """``with atomic_open(p) as fh: fh.write(...)``; ``p`` appears only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    try:
        yield tmp
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not target.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
