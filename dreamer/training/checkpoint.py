"""Checkpoint files: atomic saves (through :mod:`dreamer.atomic`), safe loading and RNG state (docs/design.md §9).

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so that it loads with
``torch.load(weights_only=True)``: a checkpoint can never run code.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from dreamer.atomic import atomic_open

log = logging.getLogger(__name__)
COMPILED_PREFIX = "_orig_mod."


def atomic_save(obj: dict, path: str | os.PathLike) -> Path:
    """torch.save ``obj`` atomically: a crash never leaves a half-written file where a good one was."""
    with atomic_open(path) as fh:
        torch.save(obj, fh)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load with ``weights_only=True``; a file that needs pickled code is refused with a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(
            f"checkpoint {path} cannot be loaded safely with weights_only=True ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); refusing to unpickle arbitrary code"
        ) from e


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


def latest_checkpoint(run_dir: str | os.PathLike, prefix: str) -> Path | None:
    """The periodic checkpoint ``<prefix>_step<N>.pt`` with the largest N, if any."""
    best, best_step = None, -1
    for p in Path(run_dir).glob(f"{prefix}_step*.pt"):
        m = re.fullmatch(rf"{re.escape(prefix)}_step(\d+)\.pt", p.name)
        if m and int(m.group(1)) > best_step:
            best, best_step = p, int(m.group(1))
    return best


def prune_checkpoints(run_dir: str | os.PathLike, prefix: str, keep: int) -> None:
    """Delete all but the ``keep`` newest periodic checkpoints."""
    found = []
    for p in Path(run_dir).glob(f"{prefix}_step*.pt"):
        m = re.fullmatch(rf"{re.escape(prefix)}_step(\d+)\.pt", p.name)
        if m:
            found.append((int(m.group(1)), p))
    for _, p in sorted(found)[:-keep] if keep > 0 else []:
        p.unlink(missing_ok=True)
