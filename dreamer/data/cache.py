"""The latent cache (docs/design.md §3): every episode encoded once by the frozen tokenizer.

Layout of ``<cache_dir>``::

    manifest.json                       tokenizer identity, sources + hashes, split, statistics
    episodes/<name>/latents.npy         float16 (L, N, C)  raw pooled latents
                    actions.npy         int64   (L, S, D)  actions[k] = a[S·k : S·k+S]
                    action_mask.npy     bool    (L, S)     False for padded / ignored sub-steps
                    rewards.npy         float32 (L,)       rewards[k] = sum r[S(k-1) : S·k], rewards[0] = 0
                    continues.npy       float32 (L,)       0 where latent k is terminal
                    source.json         the episode's content hash and the tokenizer hash

Each episode folder is written to a temporary folder and renamed, and the manifest is written last,
atomically: an interrupted build resumes by skipping episodes that are already complete, after removing
the half-built folders its killed writers left (:func:`dreamer.atomic.remove_stale_temps`). A cache
built by another tokenizer is refused; an episode whose source changed is re-encoded.

The cache checks what it serves. The manifest records each array file's size and modification time, taken
after a full check (readable, shapes and dtypes that agree, finite latents); opening the cache checks again,
in full, only the entries whose files changed since (:func:`find_damage`), so a batch never pays for it.
A damaged entry is refused by :class:`LatentCache` naming the file and the cause; :func:`heal` (called by
:func:`dreamer.pipeline.data.prepare_data`) moves it aside to ``<cache_dir>/damaged/`` and the build
re-encodes it from its episode file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dreamer.atomic import atomic_dir, atomic_write_bytes, remove_stale_temps
from dreamer.data.episode import ActionSpace, Episode, EpisodeError, load_episode
from dreamer.errors import PathKindError, UserError

log = logging.getLogger(__name__)
ARRAYS = ("latents", "actions", "action_mask", "rewards", "continues")


class CacheMismatchError(UserError, RuntimeError):
    """The cache on disk was built with another tokenizer or action space than the one asked for."""


class DamagedCacheError(UserError, RuntimeError):
    """Cache entries that cannot be served (missing, unreadable, of the wrong shape or dtype, non-finite latents),
    or a damaged entry whose episode file cannot rebuild it; the message names the files."""


def file_sha256(path: str | os.PathLike, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def align_episode(ep: Episode, S: int) -> dict[str, np.ndarray]:
    """Actions, mask, rewards and continues per latent step (everything but the latents).

    With L = 1 + ceil(T/S) latent steps for T actions (T+1 frames):
    actions[k] = a[S·k : S·k+S] (padded sub-steps masked; the last row fully masked),
    rewards[k] = sum of r[S(k-1) : S·k], rewards[0] = 0, continues[k] = 0 only for a terminal last latent.
    Sub-steps whose action the game ignored (``extras['ignore_action']``) are masked too.
    """
    T, D = ep.actions.shape
    L = 1 + -(-T // S)
    actions = np.zeros((L, S, D), dtype=np.int64)
    mask = np.zeros((L, S), dtype=bool)
    flat_a = actions.reshape(L * S, D)
    flat_m = mask.reshape(L * S)
    flat_a[:T] = ep.actions
    flat_m[:T] = True
    ignore = ep.extras.get("ignore_action")
    if ignore is not None:
        flat_m[:T] &= ~np.asarray(ignore[:T], dtype=bool)
    rewards = np.zeros(L, dtype=np.float32)
    padded_r = np.zeros((L - 1) * S, dtype=np.float64)
    padded_r[:T] = ep.rewards
    rewards[1:] = padded_r.reshape(L - 1, S).sum(1)
    continues = np.ones(L, dtype=np.float32)
    if ep.terminated:
        continues[-1] = 0.0
    return {"actions": actions, "action_mask": mask, "rewards": rewards, "continues": continues}


def _write_episode_dir(target: Path, arrays: dict[str, np.ndarray], source: dict) -> None:
    with atomic_dir(target) as tmp:
        for k, v in arrays.items():
            np.save(tmp / f"{k}.npy", v)
        (tmp / "source.json").write_text(json.dumps(source))


def split_names(names: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split by episode, deterministic in the names and the seed (not in the order of discovery)."""
    order = sorted(names, key=lambda n: hashlib.sha256(f"{seed}:{n}".encode()).hexdigest())
    n_val = round(len(names) * val_fraction)
    if val_fraction > 0 and len(names) >= 2:
        n_val = max(1, n_val)
    val = sorted(order[:n_val])
    return sorted(order[n_val:]), val


def build_cache(
    episode_paths: list[Path],
    tokenizer,
    cache_dir: str | os.PathLike,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    shard: tuple[int, int] = (0, 1),
    write_manifest: bool = True,
    frame_size: int | None = None,
) -> Path:
    """Encode every episode once (resumable, atomic) and write the manifest with statistics.

    ``shard=(rank, world)`` encodes only every world-th episode (distributed builds); the manifest is
    written by the caller that passes ``write_manifest=True`` once all shards are done. ``frame_size``
    refuses episodes whose frames are not frame_size x frame_size.
    """
    cache_dir = Path(cache_dir)
    (cache_dir / "episodes").mkdir(parents=True, exist_ok=True)
    if shard[0] == 0:  # leftovers of killed builds (a live writer's, even another run's, are kept)
        remove_stale_temps(cache_dir / "episodes")
        remove_stale_temps(cache_dir)
    ident = tokenizer.identity()
    manifest_path = cache_dir / "manifest.json"
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if old.get("tokenizer") != ident:
            raise CacheMismatchError(
                f"latent cache {cache_dir} was built with tokenizer {_short(old.get('tokenizer'))}, "
                f"but the config asks for {_short(ident)}. Delete the folder or set data.cache_dir to a new path."
            )
    names = [Path(p).stem for p in episode_paths]
    if len(set(names)) != len(names):
        raise EpisodeError(Path(episode_paths[0]).parent, "<file names>", "episode file names must be unique (an "
                           "episode is cached under its file name)")
    todo = list(zip(names, episode_paths))[shard[0] :: shard[1]]
    for name, path in tqdm(todo, desc="encode episodes", unit="ep", disable=True if len(todo) < 2 else None):
        src_hash = file_sha256(path)
        target = cache_dir / "episodes" / name
        src_file = target / "source.json"
        if src_file.is_file():
            old_src = json.loads(src_file.read_text())
            if old_src.get("sha256") == src_hash and old_src.get("tokenizer") == ident["weights_sha256"]:
                continue
            log.info("episode %s changed since it was cached: re-encoding", name)
        ep = load_episode(path, frame_size)
        arrays = align_episode(ep, tokenizer.S)
        z = tokenizer.encode_episode(ep, path)  # (L, N, C): the frames (Cosmos) or the recorded state
        if z.shape[0] != arrays["actions"].shape[0]:
            raise AssertionError(f"{path}: {z.shape[0]} latents but {arrays['actions'].shape[0]} action chunks")
        if not torch.isfinite(z).all():
            raise ValueError(f"{path}: the tokenizer produced non-finite latents")
        arrays["latents"] = z.cpu().numpy().astype(np.float16)
        source = {"path": str(Path(path).resolve()), "sha256": src_hash, "tokenizer": ident["weights_sha256"],
                  "num_steps": ep.num_steps, "action_space": ep.action_space.to_dict(), "meta": ep.meta}
        _write_episode_dir(target, arrays, source)
    if write_manifest:
        write_manifest_file(cache_dir, names, ident, val_fraction, split_seed)
    return cache_dir


def _short(ident: dict | None) -> str:
    if not ident:
        return "<none>"
    if ident.get("kind"):
        return f"({ident['kind']} layout {ident.get('layout_version')}, hash {ident.get('weights_sha256', '?')[:12]})"
    return f"(weights {ident.get('weights_sha256', '?')[:12]}, pool {ident.get('pool')}, res {ident.get('resolution')})"


def write_manifest_file(cache_dir: Path, names: list[str], ident: dict, val_fraction: float, split_seed: int) -> dict:
    """Collect per-episode sources, check they agree, compute train statistics, write the manifest."""
    sources, spaces = {}, set()
    for name in names:
        d = cache_dir / "episodes" / name
        if not (d / "source.json").is_file():
            raise RuntimeError(f"latent cache {cache_dir}: episode {name} was not encoded")
        sources[name] = json.loads((d / "source.json").read_text())
        spaces.add(json.dumps(sources[name]["action_space"], sort_keys=True))
    if len(spaces) != 1:
        raise CacheMismatchError(f"latent cache {cache_dir}: the episodes of one cache must share one action space, "
                                 f"found {sorted(spaces)}; keep each kind of episode under its own data.episodes_dir")
    shapes = {np.load(cache_dir / "episodes" / n / "latents.npy", mmap_mode="r").shape[1:] for n in names[:1]}
    latent_shape = list(shapes.pop()) if shapes else None
    damage = {}
    for name in names:  # the full check once, before the files are recorded as good
        cause = entry_damage(cache_dir / "episodes" / name, latent_shape)
        if cause:
            damage[name] = cause
    if damage:
        raise DamagedCacheError(_damage_message(cache_dir, damage))
    train, val = split_names(names, val_fraction, split_seed)
    # Per-channel statistics over every latent token of the training split (float64 accumulation).
    total, sq, count = 0.0, 0.0, 0
    for name in train:
        z = np.load(cache_dir / "episodes" / name / "latents.npy", mmap_mode="r").astype(np.float64)
        total = total + z.sum(axis=(0, 1))
        sq = sq + (z**2).sum(axis=(0, 1))
        count += z.shape[0] * z.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean**2, 1e-12))
    if ident.get("std_floor"):  # a tokenizer of rare binary channels (crafter_state) bounds what they become
        std = np.maximum(std, float(ident["std_floor"]))
    manifest = {
        "version": 1,
        "tokenizer": ident,
        "action_space": json.loads(spaces.pop()),
        "chunk_len": ident["temporal_compression"],
        "sources": sources,
        "split": {"train": train, "val": val, "val_fraction": val_fraction, "seed": split_seed},
        "counts": {"episodes": len(names), "latent_steps": int(sum(
            np.load(cache_dir / "episodes" / n / "rewards.npy", mmap_mode="r").shape[0] for n in names)),
            "env_steps": int(sum(s["num_steps"] for s in sources.values()))},
        "stats": {"mean": mean.tolist(), "std": std.tolist()},
        "latent_shape": latent_shape,  # (N, C) of every entry
        "files": {n: file_record(cache_dir / "episodes" / n) for n in names},  # [size, mtime_ns] once checked
    }
    atomic_write_bytes(cache_dir / "manifest.json", json.dumps(manifest, indent=1).encode())
    return manifest


def file_record(entry: Path) -> dict[str, list[int] | None]:
    """[size, mtime_ns] of each array file of a cache entry (None for a missing one)."""
    out: dict[str, list[int] | None] = {}
    for k in ARRAYS:
        try:
            st = (entry / f"{k}.npy").stat()
            out[k] = [st.st_size, st.st_mtime_ns]
        except OSError:
            out[k] = None
    return out


def entry_damage(entry: Path, latent_shape: list[int] | None) -> str | None:
    """Why a cache entry cannot be served, or None: a file missing or unreadable, shapes or dtypes that do not
    agree (latents (L, N, C) float16 with the cache's N, C; actions (L, S, D); the rest (L, S) / (L,)), or
    non-finite latents (a full read of the latents)."""
    arrays = {}
    for k in ARRAYS:
        f = entry / f"{k}.npy"
        if not f.is_file():
            return f"{f}: {'is a folder' if f.is_dir() else 'missing'}"
        try:
            arrays[k] = np.load(f, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            return f"{f}: unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    z = arrays["latents"]
    L = z.shape[0] if z.ndim else -1
    want = {"latents": (np.float16, 3), "actions": (np.int64, 3), "action_mask": (np.bool_, 2),
            "rewards": (np.float32, 1), "continues": (np.float32, 1)}
    for k, (dtype, ndim) in want.items():
        a = arrays[k]
        if a.dtype != dtype or a.ndim != ndim or a.shape[0] != L:
            return (f"{entry / f'{k}.npy'}: {a.dtype} {a.shape}, expected {np.dtype(dtype)} with {ndim} dims and "
                    f"{L} steps (as latents.npy)")
    if latent_shape is not None and list(z.shape[1:]) != list(latent_shape):
        return f"{entry / 'latents.npy'}: tokens x channels {tuple(z.shape[1:])}, the cache's are {tuple(latent_shape)}"
    if arrays["actions"].shape[1] != arrays["action_mask"].shape[1]:
        return f"{entry / 'actions.npy'}: {arrays['actions'].shape[1]} sub-steps, action_mask.npy has " \
               f"{arrays['action_mask'].shape[1]}"
    finite = np.isfinite(np.asarray(z, dtype=np.float32)).reshape(L, -1).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        return f"{entry / 'latents.npy'}: non-finite latents at {bad.size} of {L} steps (first at step {bad[0]})"
    return None


def find_damage(root: Path, manifest: dict, names: list[str] | None = None) -> tuple[dict[str, str], list[str]]:
    """({entry: cause} of the entries that cannot be served, [entries checked in full because their files changed
    since the manifest recorded them, or were never recorded, and found good])."""
    records, damage, rechecked = manifest.get("files") or {}, {}, []
    for name in names if names is not None else sorted(manifest["sources"]):
        entry = root / "episodes" / name
        now = file_record(entry)
        if records.get(name) == now:
            continue  # unchanged since its full check
        cause = entry_damage(entry, manifest.get("latent_shape"))
        if cause:
            damage[name] = cause
        else:
            rechecked.append(name)
    return damage, rechecked


def _damage_message(root: Path, damage: dict[str, str]) -> str:
    shown = "; ".join(list(damage.values())[:4]) + (f"; and {len(damage) - 4} more" if len(damage) > 4 else "")
    return (f"latent cache {root}: {len(damage)} damaged entr{'y' if len(damage) == 1 else 'ies'}: {shown}. The cache "
            "is derived data: any phase script (or python -m dreamer.pipeline.data --config …) moves damaged "
            "entries aside and re-encodes them from their episode files")


def heal(cache_dir: str | os.PathLike) -> dict[str, str]:
    """Move every damaged entry of the cache at ``cache_dir`` aside (to ``damaged/<entry>-<time>``), so that
    :func:`build_cache` re-encodes it; returns {entry: cause}. Entries not yet in the manifest (a build that
    stopped before writing it) are checked in full too. Call it on one process (rank 0) only."""
    cache_dir = Path(cache_dir)
    manifest_path, episodes = cache_dir / "manifest.json", cache_dir / "episodes"
    if not episodes.is_dir():
        return {}
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"sources": {}}
    listed = sorted(manifest["sources"])
    damage, _ = find_damage(cache_dir, manifest, listed)
    for d in sorted(episodes.iterdir()):  # built, not yet in a manifest
        unlisted = d.is_dir() and not d.name.startswith(".") and d.name not in manifest["sources"]
        if unlisted and (d / "source.json").is_file():
            cause = entry_damage(d, manifest.get("latent_shape"))
            if cause:
                damage[d.name] = cause
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name, cause in damage.items():
        if not (episodes / name).exists():  # nothing left to move: the build encodes it anew
            log.warning("latent cache: %s; re-encoding it from its episode file", cause)
            continue
        target = cache_dir / "damaged" / f"{name}-{stamp}"
        if target.exists():
            target = target.with_name(f"{target.name}-{os.getpid()}")
        target.parent.mkdir(exist_ok=True)
        os.replace(episodes / name, target)
        log.warning("latent cache: %s; entry moved aside to %s, re-encoding it from its episode file", cause, target)
    return damage


@dataclass
class CachedEpisode:
    name: str
    latents: np.ndarray  # float16 (L, N, C), raw (memory-mapped)
    actions: np.ndarray  # int64 (L, S, D)
    action_mask: np.ndarray  # bool (L, S)
    rewards: np.ndarray  # float32 (L,)
    continues: np.ndarray  # float32 (L,)
    source: str

    def __len__(self) -> int:
        return int(self.latents.shape[0])


class LatentCache:
    """Read side of the cache: memory-mapped episodes, statistics and the split."""

    def __init__(self, root: str | os.PathLike, expect_tokenizer: dict | None = None):
        self.root = Path(root)
        path = self.root / "manifest.json"
        if not path.is_file():
            raise PathKindError(f"no latent cache at {self.root} (missing manifest.json); build it first (python -m "
                                "dreamer.pipeline.data --config …, or any phase script)")
        self.manifest = json.loads(path.read_text())
        if expect_tokenizer is not None and self.manifest["tokenizer"] != expect_tokenizer:
            raise CacheMismatchError(
                f"latent cache {self.root} was built with tokenizer {_short(self.manifest['tokenizer'])}, "
                f"expected {_short(expect_tokenizer)}"
            )
        self.names: list[str] = sorted(self.manifest["sources"])
        damage, self.rechecked = find_damage(self.root, self.manifest, self.names)
        if damage:
            raise DamagedCacheError(_damage_message(self.root, damage))
        self.train_names: list[str] = self.manifest["split"]["train"]
        self.val_names: list[str] = self.manifest["split"]["val"]
        self.mean = np.asarray(self.manifest["stats"]["mean"], dtype=np.float32)  # (C,)
        self.std = np.asarray(self.manifest["stats"]["std"], dtype=np.float32)  # (C,)
        self.chunk_len = int(self.manifest["chunk_len"])
        self.action_space = ActionSpace.from_dict(self.manifest["action_space"])
        self._episodes: dict[str, CachedEpisode] = {}

    @property
    def tokenizer_identity(self) -> dict:
        return self.manifest["tokenizer"]

    def episode(self, name: str) -> CachedEpisode:
        if name not in self._episodes:
            d = self.root / "episodes" / name
            arrays = {k: np.load(d / f"{k}.npy", mmap_mode="r") for k in ARRAYS}
            self._episodes[name] = CachedEpisode(name=name, source=self.manifest["sources"][name]["path"], **arrays)
        return self._episodes[name]

    def standardise(self, latents: np.ndarray | torch.Tensor):
        if isinstance(latents, torch.Tensor):
            mean = torch.as_tensor(self.mean, device=latents.device)
            std = torch.as_tensor(self.std, device=latents.device)
            return (latents.float() - mean) / std
        return (np.asarray(latents, dtype=np.float32) - self.mean) / self.std

    def stats(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}
