"""Checkpoints, the one home (docs/design.md §9): atomic saves (through :mod:`dreamer.atomic`), safe loading and RNG
state; what a phase's checkpoint holds (:func:`payload`, the data facts of :func:`data_info`) and resuming from the
newest intact one (:func:`resume`, checked by :func:`check_compatible` and :func:`check_inputs`). Only the phase
runner (:mod:`dreamer.pipeline.runner`) writes periodic checkpoints and resumes; the pipeline's file names and the
handoff between phases are :mod:`dreamer.pipeline.checkpoints`.

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
import torch.distributed as dist
from torch import nn

from dreamer.atomic import atomic_open, write_error
from dreamer.errors import UserError, require_file
from dreamer.presets import to_dict
from dreamer.training import sharding
from dreamer.training.runtime import unwrap

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


# --- what a phase's checkpoint holds, and resuming from it (the runner's: dreamer.pipeline.runner) ---------------


class CheckpointMismatchError(UserError, ValueError):
    """A checkpoint from another tokenizer, latent statistics or action space than the data given."""


class InputMismatchError(CheckpointMismatchError):
    """The run folder was started from other input checkpoints than the ones this command gives."""


def payload(cfg, step: int, models: dict[str, nn.Module], opt=None, sched=None, data_info: dict | None = None,
            extra: dict | None = None) -> dict:
    """Everything a phase needs to resume or hand off (state dicts, config, stats, identity, RNG).

    Under torchrun every rank must call it (the RNG states of all ranks are gathered, and FSDP-sharded
    models are gathered to full state dicts); rank 0's result is the complete one it writes.
    """
    plain = {k: unwrap(m) for k, m in models.items()}
    out = {
        "step": step,
        "config": to_dict(cfg),
        "models": {k: strip_compiled_prefix(sharding.model_state(m)) for k, m in plain.items()},
        "rng": rng_state(),
        **(data_info or {}),
        **(extra or {}),
    }
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        ranks: list = [None] * dist.get_world_size()
        dist.all_gather_object(ranks, out["rng"])
        out["rng_ranks"] = ranks  # each rank resumes its own RNG streams
    if opt is not None:
        owner = sharding.owner_of(opt, plain)
        out["optimizer"] = sharding.optimizer_state(owner, opt) if owner is not None else opt.state_dict()
    if sched is not None:
        out["scheduler"] = sched.state_dict()
    return out


def data_info(cache) -> dict:
    """The facts about the data a checkpoint must agree with: tokenizer, statistics, action space."""
    return {
        "tokenizer": cache.tokenizer_identity,
        "latent_stats": cache.stats(),
        "action_space": cache.action_space.to_dict(),
        "chunk_len": cache.chunk_len,
    }


def check_compatible(ckpt: dict, cache, path: str | Path) -> None:
    """Refuse a checkpoint whose tokenizer, latent statistics or action space differ from the cache."""
    mine = data_info(cache)
    for key in ("tokenizer", "action_space", "chunk_len"):
        if ckpt.get(key) != mine[key]:
            raise CheckpointMismatchError(
                f"checkpoint {path}: {key} differs from the latent cache {cache.root}: checkpoint has "
                f"{_brief(ckpt.get(key))}, cache has {_brief(mine[key])}"
            )
    a, b = ckpt.get("latent_stats"), mine["latent_stats"]
    if a is None or any(abs(x - y) > 1e-6 * max(1.0, abs(y)) for k in ("mean", "std") for x, y in zip(a[k], b[k])):
        raise CheckpointMismatchError(
            f"checkpoint {path}: latent statistics differ from the cache {cache.root}: "
            f"checkpoint mean[:3]={_brief(a and a['mean'][:3])}, cache mean[:3]={_brief(b['mean'][:3])}"
        )


def _brief(x) -> str:
    if isinstance(x, dict) and x.get("kind"):
        return f"tokenizer {x['kind']} (layout {x.get('layout_version')}, hash {str(x.get('weights_sha256'))[:12]})"
    if isinstance(x, dict) and "weights_sha256" in x:
        return f"tokenizer weights {x['weights_sha256'][:12]} (pool {x.get('pool')}, resolution {x.get('resolution')})"
    return repr(x)


def save_periodic(rt, prefix: str, state: dict, keep: int) -> Path | None:
    """Rank 0 writes ``<prefix>_step<N>.pt`` atomically (stamped with the run's phase and inputs,
    ``Runtime.stamp``) and prunes older ones."""
    if not rt.is_main:
        return None
    state = {**state, **getattr(rt, "stamp", {})}
    path = atomic_save(state, rt.run_dir / f"{prefix}_step{state['step']}.pt")
    prune_checkpoints(rt.run_dir, prefix, keep)
    return path


def resume(rt, prefix: str, models: dict[str, nn.Module], opt=None, sched=None, cache=None) -> tuple[int, dict | None]:
    """Load the newest periodic checkpoint of this phase that loads, if any: returns (step, checkpoint).

    A damaged checkpoint is reported, moved aside (``<name>.damaged``) and the previous one is tried; an
    unsafe one stops the run. The checkpoint must fit the cache (:func:`check_compatible`) and come from
    the inputs this command gives (:func:`check_inputs`). With ``rt.fresh`` nothing is resumed and the
    phase's earlier files are set aside. The run is then accepted (``Runtime.accept``: config saved).
    """
    if getattr(rt, "fresh", False):
        if getattr(rt, "is_main", True):
            set_aside(rt.run_dir, prefix)
        _barrier(rt)
        _accept(rt)
        return 0, None
    path, ckpt, damaged = None, None, []
    for candidate in periodic_checkpoints(rt.run_dir, prefix):
        try:
            ckpt, path = load_checkpoint(candidate), candidate
            break
        except DamagedCheckpointError as e:
            log.warning("%s; resuming from the previous checkpoint instead", e)
            damaged.append(candidate)
    _barrier(rt)  # every rank has read what it needs before rank 0 moves the damaged files
    if getattr(rt, "is_main", True):
        for p in damaged:
            log.warning("moved the damaged checkpoint %s aside to %s", p, move_aside(p, "damaged").name)
    if ckpt is None:
        if damaged:
            log.warning("no intact %s checkpoint left in %s: starting from step 0", prefix, rt.run_dir)
        _accept(rt)
        return 0, None
    if cache is not None:
        check_compatible(ckpt, cache, path)
    check_inputs(rt, ckpt, path)
    plain = {k: unwrap(m) for k, m in models.items()}
    for k, m in plain.items():
        sharding.load_model_state(m, strip_compiled_prefix(ckpt["models"][k]))
    if opt is not None and "optimizer" in ckpt:
        owner = sharding.owner_of(opt, plain)
        if owner is None:
            opt.load_state_dict(ckpt["optimizer"])
        else:
            sharding.load_optimizer_state(owner, opt, ckpt["optimizer"])
    if sched is not None and "scheduler" in ckpt:
        sched.load_state_dict(ckpt["scheduler"])
    ranks, rank = ckpt.get("rng_ranks"), getattr(rt, "rank", 0)
    set_rng_state(ranks[rank] if ranks and len(ranks) == getattr(rt, "world", 1) else ckpt["rng"])
    log.info("resumed from %s at step %d", path, ckpt["step"])
    _accept(rt)
    return int(ckpt["step"]), ckpt


def check_inputs(rt, ckpt: dict, path: str | Path) -> None:
    """Refuse to resume ``ckpt`` when the run was started from other input checkpoints than ``rt.inputs``
    (compared by the content hash of their models; the paths are named)."""
    now = getattr(rt, "inputs", None) or {}
    if not now:
        return
    was = ckpt.get("inputs")
    source = f"checkpoint {path}"
    if was is None:
        was, source = (rt.recorded_inputs() if hasattr(rt, "recorded_inputs") else None), f"the run folder {rt.run_dir}"
    if was is None:
        log.warning("%s does not record the checkpoints it was started from; cannot check that they are %s", path,
                    ", ".join(v["path"] for v in now.values()))
        return
    for key, given in now.items():
        old = was.get(key)
        if old is None or old.get("sha256") != given["sha256"]:
            started = f"{old['path']} (weights {old['sha256'][:12]})" if old else "no recorded checkpoint"
            raise InputMismatchError(
                f"run folder {rt.run_dir} was started from {key} checkpoint {started}, but this command gives "
                f"{given['path']} (weights {given['sha256'][:12]}); resuming {source} would keep the old models. "
                f"Give the original checkpoint, use another run name (--set run=...), or add --fresh to start "
                f"{getattr(rt, 'phase', 'this phase')} over (its earlier files are moved to {rt.run_dir}/superseded/)")
        if old["path"] != given["path"]:
            log.info("%s checkpoint %s has the same weights as %s, which the run started from", key, given["path"],
                     old["path"])


def _barrier(rt) -> None:
    if hasattr(rt, "barrier"):
        rt.barrier()


def _accept(rt) -> None:
    if hasattr(rt, "accept"):
        rt.accept()
