"""Episodes on disk (docs/design.md §1): one compressed ``.npz`` file per episode.

An episode of T environment steps holds

- ``frames``  uint8  (T+1, H, W, 3): observations o_0 … o_T
- ``actions`` int64  (T, D): a_t is taken at o_t and leads to o_{t+1}
- ``rewards`` float32 (T,): r_t is received on the step o_t → o_{t+1}
- ``terminated`` / ``truncated``: how the episode ended
- ``extras``: optional per-frame arrays, leading dim T+1 (e.g. Crafter inventory)
- ``meta``: JSON-able dict (env id, fps, source, …) and the action space

Every reader error is an :class:`EpisodeError` naming the file and the field.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dreamer.atomic import atomic_open
from dreamer.errors import UserError, require_dir

FORMAT_VERSION = 1


class EpisodeError(UserError, ValueError):
    """A malformed episode file; the message names the file and the field."""

    def __init__(self, path: str | os.PathLike | None, field_name: str, problem: str):
        self.path, self.field, self.problem = str(path), field_name, problem
        super().__init__(f"{path}: field '{field_name}': {problem}")


@dataclass(frozen=True)
class ActionSpace:
    """A MultiDiscrete view of an action space: D components with cardinalities ``cards``."""

    names: tuple[str, ...]
    cards: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "cards", tuple(int(c) for c in self.cards))
        if len(self.names) != len(self.cards) or not self.cards:
            raise ValueError(f"action space needs one name per cardinality, got {self.names} / {self.cards}")
        if any(c < 1 for c in self.cards):
            raise ValueError(f"action cardinalities must be >= 1, got {self.cards}")

    @property
    def dims(self) -> int:
        return len(self.cards)

    def to_dict(self) -> dict:
        return {"names": list(self.names), "cards": list(self.cards)}

    @classmethod
    def from_dict(cls, d: dict) -> ActionSpace:
        return cls(tuple(d["names"]), tuple(d["cards"]))


@dataclass
class Episode:
    frames: np.ndarray  # uint8 (T+1, H, W, 3)
    actions: np.ndarray  # int64 (T, D)
    rewards: np.ndarray  # float32 (T,)
    terminated: bool
    truncated: bool
    action_space: ActionSpace
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # each (T+1, ...)
    meta: dict = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        """T, the number of environment steps (frames has T+1 entries)."""
        return int(self.actions.shape[0])

    def validate(self, path: str | os.PathLike | None = None) -> Episode:
        """Check dtypes, shapes, alignment and values; raise EpisodeError naming the field."""
        f, a, r = self.frames, self.actions, self.rewards
        if not isinstance(f, np.ndarray) or f.dtype != np.uint8:
            raise EpisodeError(path, "frames", f"expected uint8 array, got {getattr(f, 'dtype', type(f))}")
        if f.ndim != 4 or f.shape[-1] != 3:
            raise EpisodeError(path, "frames", f"expected shape (T+1, H, W, 3), got {f.shape}")
        if f.shape[0] < 1:
            raise EpisodeError(path, "frames", "episode has no frames")
        if not isinstance(a, np.ndarray) or a.dtype != np.int64:
            raise EpisodeError(path, "actions", f"expected int64 array, got {getattr(a, 'dtype', type(a))}")
        if a.ndim != 2 or a.shape[1] != self.action_space.dims:
            raise EpisodeError(path, "actions", f"expected shape (T, {self.action_space.dims}), got {a.shape}")
        if f.shape[0] != a.shape[0] + 1:
            raise EpisodeError(
                path, "frames", f"expected T+1 = {a.shape[0] + 1} frames for {a.shape[0]} actions, got {f.shape[0]}"
            )
        cards = np.asarray(self.action_space.cards)
        if a.size and ((a < 0).any() or (a >= cards[None, :]).any()):
            bad = np.argwhere((a < 0) | (a >= cards[None, :]))[0]
            raise EpisodeError(
                path, "actions", f"value {a[tuple(bad)]} at step {bad[0]} outside [0, {cards[bad[1]]}) "
                f"of component '{self.action_space.names[bad[1]]}'"
            )
        if not isinstance(r, np.ndarray) or r.dtype != np.float32:
            raise EpisodeError(path, "rewards", f"expected float32 array, got {getattr(r, 'dtype', type(r))}")
        if r.shape != (a.shape[0],):
            raise EpisodeError(path, "rewards", f"expected shape ({a.shape[0]},), got {r.shape}")
        if not np.isfinite(r).all():
            raise EpisodeError(path, "rewards", f"non-finite value at step {int(np.argmin(np.isfinite(r)))}")
        for name, x in self.extras.items():
            if not isinstance(x, np.ndarray) or x.shape[:1] != (f.shape[0],):
                raise EpisodeError(path, f"extras/{name}", f"expected leading dim {f.shape[0]}, got {np.shape(x)}")
        return self


def save_episode(path: str | os.PathLike, ep: Episode) -> Path:
    """Validate and write ``ep`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    ep.validate(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(ep.meta, action_space=ep.action_space.to_dict(), format_version=FORMAT_VERSION)
    arrays = {
        "frames": ep.frames,
        "actions": ep.actions,
        "rewards": ep.rewards,
        "terminated": np.asarray(bool(ep.terminated)),
        "truncated": np.asarray(bool(ep.truncated)),
        "meta": np.asarray(json.dumps(meta)),
    }
    arrays.update({f"extra__{k}": v for k, v in ep.extras.items()})
    with atomic_open(path) as fh:
        np.savez_compressed(fh, **arrays)
    return path


def load_episode(path: str | os.PathLike, frame_size: int | None = None) -> Episode:
    """Read and validate an episode file; every problem raises EpisodeError naming the field.

    ``frame_size``: when given, frames must be frame_size x frame_size (the configured ``env.size``).
    """
    path = Path(path)
    if not path.is_file():
        raise EpisodeError(path, "<file>", "is a folder, not an episode file" if path.is_dir() else "no such file")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:2] != b"PK":  # an .npz is a zip archive; anything else would be blamed on numpy's pickle fallback
        what = ("empty (0 bytes)" if not head else "a text file" if all(32 <= c < 127 or c in (9, 10, 13) for c in head)
                else f"a file that starts with {head!r}")
        raise EpisodeError(path, "<file>", f"not an episode: an .npz (zip archive) was expected, this is {what}")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise EpisodeError(path, "<file>", f"unreadable or truncated npz ({type(e).__name__}: {e})") from e
    for key in ("frames", "actions", "rewards", "terminated", "truncated", "meta"):
        if key not in data:
            raise EpisodeError(path, key, f"missing (file has {sorted(data)})")
    try:
        meta = json.loads(str(data["meta"]))
        space = ActionSpace.from_dict(meta.pop("action_space"))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise EpisodeError(path, "meta", f"bad metadata or action_space ({e})") from e
    meta.pop("format_version", None)
    ep = Episode(
        frames=data["frames"],
        actions=data["actions"],
        rewards=data["rewards"],
        terminated=bool(data["terminated"]),
        truncated=bool(data["truncated"]),
        action_space=space,
        extras={k[len("extra__"):]: v for k, v in data.items() if k.startswith("extra__")},
        meta=meta,
    )
    ep.validate(path)
    if frame_size is not None and ep.frames.shape[1:3] != (frame_size, frame_size):
        raise EpisodeError(path, "frames", f"frames are {ep.frames.shape[1]}x{ep.frames.shape[2]}, the config expects "
                           f"{frame_size}x{frame_size} (env.size); convert or collect at that size")
    return ep


def list_episodes(root: str | os.PathLike) -> list[Path]:
    """Episode files below ``root`` in a stable (sorted) order."""
    root = require_dir(root, "episode folder")
    return sorted(p for p in root.rglob("*.npz") if not p.name.startswith("."))
