"""Checkpoint files: atomic saves (through :mod:`dreamer.atomic`), safe loading and RNG state (docs/design.md §9).

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so that it loads with
``torch.load(weights_only=True)``: a checkpoint can never run code. A file that does not load is either
*damaged* (empty, truncated, a zip member failing its CRC, not a checkpoint at all):
:class:`DamagedCheckpointError`, which resuming steps over; or *unsafe* (an intact pickle that needs
code to load): :class:`UnsafeCheckpointError`, always refused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import pickletools
import random
import re
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from dreamer.atomic import atomic_open, write_error
from dreamer.errors import UserError, require_file

log = logging.getLogger(__name__)
COMPILED_PREFIX = "_orig_mod."


class CheckpointError(UserError, ValueError):
    """A checkpoint file that cannot be used; the message names it."""


class DamagedCheckpointError(CheckpointError):
    """The file is not an intact checkpoint (empty, truncated, corrupted, or something else altogether)."""


class UnsafeCheckpointError(CheckpointError):
    """An intact pickle that needs code to load: refused, since a checkpoint must never run code."""


def atomic_save(obj: dict, path: str | os.PathLike) -> Path:
    """torch.save ``obj`` atomically: a crash never leaves a half-written file where a good one was. A failed
    write (a full disk) raises :class:`dreamer.atomic.WriteError` naming the file and the free space."""
    try:
        with atomic_open(path) as fh:
            torch.save(obj, fh)
    except RuntimeError as e:  # torch's zip writer reports a failed file write as "[enforce fail ...]"
        cause = e.__cause__ or e.__context__
        if not isinstance(cause, OSError) and "inline_container" not in str(e) and "PytorchStreamWriter" not in str(e):
            raise
        raise write_error(path, cause if isinstance(cause, OSError) else e) from e
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load with ``weights_only=True`` after checking the zip members' CRCs. Raises
    :class:`DamagedCheckpointError` or :class:`UnsafeCheckpointError` (both name the file)."""
    path = require_file(path, "checkpoint", "give a .pt file (the phase scripts write <run dir>/phase*_final.pt)")
    damage = _damage(path)
    if damage:
        raise DamagedCheckpointError(f"checkpoint {path} is damaged: {damage}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        if isinstance(e, pickle.UnpicklingError):  # an intact file (checked above) whose pickle wants code
            raise UnsafeCheckpointError(
                f"checkpoint {path} cannot be loaded safely with weights_only=True ({type(e).__name__}: {first}); "
                f"refusing to unpickle arbitrary code") from e
        raise DamagedCheckpointError(f"checkpoint {path} is damaged: {type(e).__name__}: {first}") from e


def _damage(path: Path) -> str | None:
    """Why ``path`` is not an intact checkpoint file, or None. Checkpoints are zip archives (torch's format);
    an older-style file must at least be one well-formed pickle."""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes)"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            return f"unreadable zip archive ({e})"
        return f"zip member {bad} fails its CRC check (corrupted bytes)" if bad else None
    with open(path, "rb") as fh:
        head = fh.read(4)
        if head.startswith(b"PK"):
            return f"a zip archive cut short ({size} bytes, no central directory): the write was interrupted"
        fh.seek(0)
        try:
            for _ in pickletools.genops(fh):
                pass
        except Exception as e:  # noqa: BLE001  (whatever stops the opcode walk: not a pickle)
            return f"neither a zip archive nor a pickle ({size} bytes; {type(e).__name__}: {e})"
    return None


def state_sha256(states: dict) -> str:
    """A content hash of nested state dicts (names, dtypes, shapes and bytes of every tensor)."""
    h = hashlib.sha256()

    def visit(prefix: str, x) -> None:
        if isinstance(x, dict):
            for k in sorted(x, key=str):
                visit(f"{prefix}/{k}", x[k])
        elif isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"{prefix}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(f"{prefix}={x!r}".encode())

    visit("", states)
    return h.hexdigest()


def strip_compiled_prefix(state_dict: dict) -> dict:
    """Remove the ``_orig_mod.`` prefix torch.compile adds to parameter names (also after ``module.``)."""
    return {k.replace(COMPILED_PREFIX, ""): v for k, v in state_dict.items()}


def rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_to_plain(np.random.get_state()),
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state_to_plain(s):
    return [s[0], torch.from_numpy(np.asarray(s[1], dtype=np.int64)), int(s[2]), int(s[3]), float(s[4])]


def _python_state_to_plain(s):
    return [s[0], list(s[1]), s[2]]


def periodic_checkpoints(run_dir: str | os.PathLike, prefix: str) -> list[Path]:
    """The periodic checkpoints ``<prefix>_step<N>.pt``, newest (largest N) first."""
    found = []
    for p in Path(run_dir).glob(f"{prefix}_step*.pt"):
        m = re.fullmatch(rf"{re.escape(prefix)}_step(\d+)\.pt", p.name)
        if m:
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(run_dir: str | os.PathLike, prefix: str) -> Path | None:
    """The periodic checkpoint ``<prefix>_step<N>.pt`` with the largest N, if any."""
    found = periodic_checkpoints(run_dir, prefix)
    return found[0] if found else None


def prune_checkpoints(run_dir: str | os.PathLike, prefix: str, keep: int) -> None:
    """Delete all but the ``keep`` newest periodic checkpoints."""
    for p in periodic_checkpoints(run_dir, prefix)[keep:] if keep > 0 else []:
        p.unlink(missing_ok=True)


def move_aside(path: Path, label: str) -> Path:
    """Rename ``path`` to ``<path>.<label>`` (``.<label>-2``, … when taken): out of every glob, kept for a look."""
    dest, n = path.with_name(f"{path.name}.{label}"), 1
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.{label}-{n}")
    os.replace(path, dest)
    return dest


def set_aside(run_dir: str | os.PathLike, prefix: str) -> Path | None:
    """Move every file ``<prefix>_*`` of the run folder (periodic and final checkpoints, evaluations) and its
    TensorBoard folder ``tb/<prefix>`` into ``superseded/<prefix>-<UTC time>/``; nothing is deleted."""
    run_dir = Path(run_dir)
    found = [p for p in run_dir.glob(f"{prefix}_*") if p.is_file()]
    tb = run_dir / "tb" / prefix
    if tb.is_dir():
        found.append(tb)
    if not found:
        return None
    dest = run_dir / "superseded" / f"{prefix}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    while dest.exists():
        dest = dest.with_name(dest.name + "+")
    dest.mkdir(parents=True)
    for p in found:
        os.replace(p, dest / (f"tb_{prefix}" if p == tb else p.name))
    log.info("set aside %d earlier %s files in %s", len(found), prefix, dest)
    return dest
