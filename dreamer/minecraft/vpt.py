"""VPT contractor recordings (``<name>.mp4`` + ``<name>.jsonl``) → episodes.

Per jsonl line (one per video frame, 20 Hz): keys from ``keyboard.keys`` and mouse buttons
0/1/2 → attack/use/pickItem; camera degrees = [dy, dx]·0.15, then μ-law bins. Two fixes from VPT's
own loader: an attack button "stuck down" from the first tick is ignored until it is pressed again,
and a change of the ``hotbar`` field (scroll wheel, which the recorder does not log as a key) sets
that ``hotbar.N`` key.

Alignment: line t is the action taken while frame t is shown, so a_t = line t leads from frame t
to frame t+1. Video and lines are paired from the start; with n = min(frames, lines) the episode
keeps frames[:n] and lines[:n−1] (the last line has no next frame). A count mismatch larger than
``max_mismatch`` is an error (a damaged pair), a smaller one a warning.

Null actions and GUI frames are kept, because the world model needs unbroken time; per-frame
extras ``null_action`` (entry t: a_t is a no-op after quantisation, as the VPT paper filters) and
``gui_open`` let behaviour cloning mask them. On GUI frames a cursor is drawn at the mouse
position, since the recordings do not show it and camera actions move it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np

from dreamer.data.episode import Episode
from dreamer.minecraft.actions import VPT, VPT_KEYBOARD, VPT_MOUSE_BUTTONS
from dreamer.minecraft.camera import VPT_DEGREES_PER_PIXEL, quantize_camera
from dreamer.minecraft.paths import MinecraftDataError
from dreamer.minecraft.video import MINEREC_SCREEN_HEIGHT, decode_video, draw_cursor
from dreamer.minecraft.vpt_index import VptRecording

log = logging.getLogger(__name__)

FPS = 20
MAX_JSONL_BYTES = 512 * 2**20


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """One JSON object per non-blank line; a bad line is an error naming its number."""
    path = Path(path)
    if not path.is_file():
        raise MinecraftDataError(path, "<file>", "no such actions file")
    if path.stat().st_size > MAX_JSONL_BYTES:
        raise MinecraftDataError(path, "<file>", f"larger than {MAX_JSONL_BYTES} bytes; not a VPT actions file")
    lines = []
    with open(path, encoding="utf-8", errors="strict") as fh:
        try:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise MinecraftDataError(path, f"line {n}", f"invalid JSON, truncated or corrupt file ({e})") from e
                if not isinstance(obj, dict):
                    raise MinecraftDataError(path, f"line {n}", f"expected a JSON object, got {type(obj).__name__}")
                lines.append(obj)
        except UnicodeDecodeError as e:
            raise MinecraftDataError(path, f"line {len(lines) + 1}", f"not UTF-8 text ({e})") from e
    if not lines:
        raise MinecraftDataError(path, "<file>", "empty actions file")
    return lines


def _get(obj: dict, path: Path, n: int, *keys: str, kind: type | tuple = object, default=None):
    """obj[k0][k1]… checked against ``kind``; a missing key returns ``default`` if given, else errors."""
    cur = obj
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            if default is not None:
                return default
            raise MinecraftDataError(path, f"line {n}: {'.'.join(keys)}", "missing")
        cur = cur[k]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(cur, kinds) or (isinstance(cur, bool) and bool not in kinds and object not in kinds):
        raise MinecraftDataError(path, f"line {n}: {'.'.join(keys)}", f"unexpected value {repr(cur)[:80]}")
    return cur


def vpt_actions(lines: list[dict], path: str | os.PathLike) -> dict[str, np.ndarray]:
    """jsonl objects → ``actions`` int64 (N, 23), ``gui_open`` bool (N,), ``cursor`` float (N, 2) [x, y]."""
    path = Path(path)
    N = len(lines)
    actions = np.tile(VPT.noop(), (N, 1))
    camera = np.zeros((N, 2), dtype=np.float64)
    gui = np.zeros(N, dtype=bool)
    cursor = np.zeros((N, 2), dtype=np.float64)
    key_index = {k: i for i, k in enumerate(VPT.keys)}
    attack_stuck, last_hotbar = False, 0
    for t, obj in enumerate(lines):
        n = t + 1  # line number (blank lines aside)
        keys = _get(obj, path, n, "keyboard", "keys", kind=list)
        buttons = _get(obj, path, n, "mouse", "buttons", kind=list)
        new_buttons = _get(obj, path, n, "mouse", "newButtons", kind=list, default=[])
        dx = _get(obj, path, n, "mouse", "dx", kind=(int, float))
        dy = _get(obj, path, n, "mouse", "dy", kind=(int, float))
        if not (math.isfinite(dx) and math.isfinite(dy)):
            raise MinecraftDataError(path, f"line {n}: mouse.dx/dy", f"non-finite value ({dx}, {dy})")
        if t == 0:
            attack_stuck = new_buttons == [0]
        elif attack_stuck and 0 in new_buttons:
            attack_stuck = False
        for k in keys:
            if isinstance(k, str) and k in VPT_KEYBOARD:
                actions[t, key_index[VPT_KEYBOARD[k]]] = 1
        for b in buttons:
            if b == 0 and attack_stuck:
                continue
            if isinstance(b, int) and b in VPT_MOUSE_BUTTONS:
                actions[t, key_index[VPT_MOUSE_BUTTONS[b]]] = 1
        hotbar = _get(obj, path, n, "hotbar", kind=int, default=last_hotbar)
        if not 0 <= hotbar <= 8:
            raise MinecraftDataError(path, f"line {n}: hotbar", f"expected 0..8, got {hotbar}")
        if hotbar != last_hotbar:
            actions[t, key_index[f"hotbar.{hotbar + 1}"]] = 1
        last_hotbar = hotbar
        camera[t] = (dy * VPT_DEGREES_PER_PIXEL, dx * VPT_DEGREES_PER_PIXEL)
        gui[t] = bool(_get(obj, path, n, "isGuiOpen", kind=(bool, int), default=False))
        if gui[t]:
            cursor[t] = (_get(obj, path, n, "mouse", "x", kind=(int, float), default=0.0),
                         _get(obj, path, n, "mouse", "y", kind=(int, float), default=0.0))
    actions[:, VPT.camera_slice] = quantize_camera(camera)
    return {"actions": actions, "gui_open": gui, "cursor": cursor}


def read_vpt_recording(rec: VptRecording, size: int = 64, mode: str = "squash", draw_gui_cursor: bool = True,
                       max_mismatch: int = 20) -> Episode:
    """One contractor recording → a validated :class:`Episode` in the ``vpt`` space (rewards are 0)."""
    lines = read_jsonl(rec.actions)
    parsed = vpt_actions(lines, rec.actions)
    gui, cursor = parsed["gui_open"], parsed["cursor"]

    def overlay(i: int, rgb: np.ndarray) -> None:
        draw_cursor(rgb, cursor[i, 0], cursor[i, 1], MINEREC_SCREEN_HEIGHT)

    video = decode_video(rec.video, size, mode, overlay if draw_gui_cursor else None, gui)
    F, N = len(video.frames), len(lines)
    if abs(F - N) > max_mismatch:
        raise MinecraftDataError(rec.video, "frames", f"decoded {F} frames but {rec.actions.name} has {N} action "
                                 f"lines (more than {max_mismatch} apart): truncated or mismatched recording")
    if F != N:
        log.warning("%s: %d frames vs %d action lines; keeping the first %d of each", rec.video, F, N, min(F, N))
    n = min(F, N)
    if n < 2:
        raise MinecraftDataError(rec.video, "frames", f"only {n} aligned frame(s); an episode needs at least 2")
    T = n - 1
    actions = parsed["actions"][:T]
    null = np.zeros(n, dtype=bool)
    null[:T] = VPT.is_null(actions)
    meta = {
        "env_id": "minecraft/vpt", "source": "vpt", "task": rec.version or "unknown", "fps": FPS,
        "recording": rec.stem, "relpath": rec.relpath, "alias": rec.alias, "session": rec.session,
        "date": rec.date, "time": rec.time, "original_resolution": [video.height, video.width],
        "video_fps": video.fps, "decoded_frames": F, "action_lines": N, "header_frames": video.header_frames,
        "gui_cursor_drawn": bool(draw_gui_cursor), "action_layout": VPT.describe(),
    }
    ep = Episode(frames=video.frames[:n], actions=actions, rewards=np.zeros(T, dtype=np.float32),
                 terminated=False, truncated=True, action_space=VPT.space,
                 extras={"null_action": null, "gui_open": gui[:n].copy()}, meta=meta)
    return ep.validate(rec.video)
