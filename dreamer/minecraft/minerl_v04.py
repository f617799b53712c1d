"""MineRL v0.4 trajectory folders → episodes, without importing ``minerl``.

A trajectory folder holds ``recording.mp4`` (64×64, 20 Hz), ``rendered.npz`` (flat keys joined by
``$``) and ``metadata.json``. With T = len(reward) there are T+1 states; actions are (T,) per key
(a (T+1)-long array, one per state, loses its unused last entry). The video may hold extra
*leading* frames: its decoded frames are aligned to the states from the end, as MineRL's loader
does (the last video frame is the last state), and the first F − (T+1) frames are skipped. A video
with fewer than T+1 frames is an error. Numeric ``observation$…`` arrays of length T+1 (inventory
counts, …) become per-frame extras named ``obs.<path with dots>``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from dreamer.data.episode import Episode
from dreamer.errors import require_dir
from dreamer.minecraft.actions import MINERL_V04, encode_enum
from dreamer.minecraft.camera import quantize_camera
from dreamer.minecraft.paths import MinecraftDataError
from dreamer.minecraft.video import decode_video

log = logging.getLogger(__name__)

FPS = 20
MAX_METADATA_BYTES = 10 * 2**20
_TASK_RE = re.compile(r"^MineRL[A-Za-z0-9]+-v\d+$")


def read_rendered_npz(path: str | os.PathLike, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """All arrays of ``rendered.npz``. Pickled object arrays are refused unless ``allow_pickle``."""
    path = Path(path)
    if not path.is_file():
        raise MinecraftDataError(path, "<file>", "no such file")
    key = "<file>"
    try:
        with np.load(path, allow_pickle=allow_pickle) as z:
            if not hasattr(z, "files"):
                raise MinecraftDataError(path, "<file>", "not an npz archive (a bare .npy array)")
            data = {}
            for key in z.files:
                data[key] = z[key]
    except MinecraftDataError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise MinecraftDataError(path, key, "holds pickled Python objects, refused because unpickling can run "
                                     "code; pass allow_pickle=True (--allow-pickle) only for data you trust") from e
        raise MinecraftDataError(path, key, f"unreadable or truncated npz ({type(e).__name__}: {e})") from e
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError) as e:
        raise MinecraftDataError(path, key, f"unreadable, corrupt or truncated npz ({type(e).__name__}: {e})") from e
    return data


def _steps(arr: np.ndarray, T: int, path: Path, key: str, tail: tuple[int, ...] = ()) -> np.ndarray:
    """Check an action array has T (or T+1, trimmed) rows of shape ``tail``."""
    if arr.ndim != 1 + len(tail) or arr.shape[1:] != tail or arr.shape[0] not in (T, T + 1):
        want = f"({T}{''.join(f', {t}' for t in tail)})"
        raise MinecraftDataError(path, key, f"expected shape {want} to match len(reward) = {T}, got {arr.shape}")
    return arr[:T]


def encode_minerl_actions(data: dict[str, np.ndarray], path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, int]:
    """``rendered.npz`` arrays → (actions int64 (T, 15), rewards float32 (T,), count of unknown enum values)."""
    path = Path(path)
    if "reward" not in data:
        raise MinecraftDataError(path, "reward", f"missing (file has {sorted(data)[:12]})")
    old_style = [k for k in data if k.startswith("action_")]
    for k in MINERL_V04.keys + ("camera",):
        if f"action${k}" not in data:
            hint = f"; found old pre-v0.4 '_' keys such as '{old_style[0]}'" if old_style else ""
            raise MinecraftDataError(path, f"action${k}", f"missing{hint}")
    reward = data["reward"]
    if reward.ndim != 1 or reward.dtype.kind not in "biuf":
        raise MinecraftDataError(path, "reward", f"expected a 1-D numeric array, got {reward.dtype} {reward.shape}")
    if len(reward) == 0:
        raise MinecraftDataError(path, "reward", "empty trajectory (no steps)")
    rewards = reward.astype(np.float32)
    if not np.isfinite(rewards).all():
        raise MinecraftDataError(path, "reward", f"non-finite value at step {int(np.argmin(np.isfinite(rewards)))}")
    T = len(rewards)
    actions = np.empty((T, MINERL_V04.dims), dtype=np.int64)
    for i, k in enumerate(MINERL_V04.keys):
        a = _steps(data[f"action${k}"], T, path, f"action${k}")
        if a.dtype.kind not in "biuf" or not np.isin(a, (0, 1)).all():
            raise MinecraftDataError(path, f"action${k}", "expected 0/1 values")
        actions[:, i] = a.astype(np.int64)
    cam = _steps(data["action$camera"], T, path, "action$camera", (2,))
    if cam.dtype.kind not in "biuf" or not np.isfinite(cam).all():
        raise MinecraftDataError(path, "action$camera", "expected finite [pitch, yaw] degrees")
    actions[:, MINERL_V04.camera_slice] = quantize_camera(cam)
    unknown = 0
    base = len(MINERL_V04.keys) + 2
    for j, (name, values) in enumerate(MINERL_V04.enums):
        key = f"action${name}"
        if key not in data:
            actions[:, base + j] = 0  # task without this enum (Treechop, Navigate): always 'none'
            continue
        a = _steps(data[key], T, path, key)
        if a.dtype.kind == "O" and all(isinstance(x, str) for x in a.tolist()):  # pickled strings (allow_pickle)
            a = a.astype(str)
        if a.dtype.kind not in "US":
            raise MinecraftDataError(path, key, f"expected strings such as {values[:3]}, got dtype {a.dtype}")
        actions[:, base + j], n = encode_enum(a, values)
        unknown += n
    return actions, rewards, unknown


def read_metadata(path: str | os.PathLike) -> dict:
    """``metadata.json`` as a dict ({} with a warning when the file is absent)."""
    path = Path(path)
    if not path.is_file():
        log.warning("%s: no metadata.json; treating the trajectory as unsuccessful (truncated)", path.parent)
        return {}
    if path.stat().st_size > MAX_METADATA_BYTES:
        raise MinecraftDataError(path, "<file>", f"larger than {MAX_METADATA_BYTES} bytes; not a MineRL metadata file")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MinecraftDataError(path, "<file>", f"invalid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise MinecraftDataError(path, "<file>", f"expected a JSON object, got {type(meta).__name__}")
    return meta


def task_of(traj_dir: Path) -> str:
    """The MineRL environment name from the parent folder (``MineRLTreechop-v0/<stream>``), else 'unknown'."""
    parent = traj_dir.resolve().parent.name
    return parent if _TASK_RE.match(parent) else "unknown"


def find_minerl_trajectories(root: str | os.PathLike) -> list[Path]:
    """Trajectory folders (those holding ``rendered.npz`` or ``recording.mp4``) at or below ``root``, sorted."""
    root = require_dir(root, "MineRL data folder")
    found = {p.parent for name in ("rendered.npz", "recording.mp4") for p in root.rglob(name)}
    return sorted(found)


def read_minerl_trajectory(traj_dir: str | os.PathLike, size: int = 64, mode: str = "squash",
                           task: str | None = None, allow_pickle: bool = False) -> Episode:
    """One MineRL v0.4 trajectory folder → a validated :class:`Episode` in the ``minerl_v04`` space."""
    traj_dir = Path(traj_dir)
    npz_path, video_path = traj_dir / "rendered.npz", traj_dir / "recording.mp4"
    data = read_rendered_npz(npz_path, allow_pickle)
    actions, rewards, unknown = encode_minerl_actions(data, npz_path)
    metadata = read_metadata(traj_dir / "metadata.json")
    video = decode_video(video_path, size, mode)
    T, F = len(rewards), len(video.frames)
    if F < T + 1:
        raise MinecraftDataError(video_path, "frames", f"decoded {F} frames but rendered.npz describes {T + 1} states "
                                 "(len(reward) + 1): truncated video or the wrong trajectory")
    skip = F - (T + 1)
    true_count = metadata.get("true_video_frame_count")
    if isinstance(true_count, int) and true_count != F:
        log.warning("%s: metadata true_video_frame_count = %d but %d frames decode; aligning to the decoded frames",
                    video_path, true_count, F)
    if unknown:
        log.warning("%s: %d enum action values outside the Obtain* lists were mapped to 'none'", npz_path, unknown)
    extras = {}
    for key, arr in data.items():
        if key.startswith("observation$") and arr.dtype.kind in "biuf" and arr.ndim >= 1 and len(arr) == T + 1:
            extras["obs." + key[len("observation$"):].replace("$", ".")] = arr
    success = bool(metadata.get("success", False))
    task = task or task_of(traj_dir)
    small_meta = {k: v for k, v in metadata.items() if isinstance(v, (str, int, float, bool)) and len(str(v)) < 500}
    meta = {
        "env_id": f"minecraft/{task}", "source": "minerl_v04", "task": task, "fps": FPS,
        "trajectory": traj_dir.name, "original_resolution": [video.height, video.width],
        "video_fps": video.fps, "decoded_frames": F, "header_frames": video.header_frames,
        "skipped_leading_frames": skip, "unknown_enum_values": unknown,
        "action_layout": MINERL_V04.describe(), "minerl_metadata": small_meta,
    }
    ep = Episode(frames=video.frames[skip:], actions=actions, rewards=rewards, terminated=success,
                 truncated=not success, action_space=MINERL_V04.space, extras=extras, meta=meta)
    return ep.validate(traj_dir)
