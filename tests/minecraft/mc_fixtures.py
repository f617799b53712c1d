"""Writers for MineRL v0.4 and VPT recordings in their exact on-disk formats (used by the tests).

Video frame i is a uniform grey of level 10 + 6·i, so a decoded frame tells which video frame it was
(:func:`frame_ids`); that is how the alignment tests check which frames an episode kept.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

REAL_FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "minecraft"


def grey_frames(n: int, h: int, w: int) -> np.ndarray:
    assert 10 + 6 * (n - 1) <= 255, "too many frames for the grey-level code"
    return np.stack([np.full((h, w, 3), 10 + 6 * i, np.uint8) for i in range(n)])


def frame_ids(frames_nhwc: np.ndarray) -> np.ndarray:
    """Recover the video frame index of each (grey) frame."""
    means = frames_nhwc.reshape(len(frames_nhwc), -1).mean(axis=1)
    return np.round((means - 10) / 6).astype(int)


def write_mp4(path: Path, frames_nhwc: np.ndarray, fps: int = 20, faststart: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"} if faststart else {}) as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames_nhwc.shape[2], frames_nhwc.shape[1], "yuv420p"
        s.options = {"crf": "0", "preset": "ultrafast"}
        for arr in frames_nhwc:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def minerl_arrays(T: int, seed: int = 0, enums: bool = True) -> dict[str, np.ndarray]:
    """A rendered.npz payload of T steps in the v0.4 '$' key style."""
    rng = np.random.default_rng(seed)
    data = {"reward": np.zeros(T, np.float64)}
    data["reward"][T // 2] = 1.0
    for k in ("forward", "back", "left", "right", "jump", "sneak", "sprint", "attack"):
        data[f"action${k}"] = rng.integers(0, 2, T).astype(np.int64)
    data["action$camera"] = rng.uniform(-12, 12, (T, 2)).astype(np.float32)
    if enums:
        data["action$place"] = np.array(["none"] * (T - 1) + ["torch"])
        data["action$craft"] = np.array(["planks"] + ["none"] * (T - 1))
        data["action$equip"] = np.array(["none"] * T)
        data["action$nearbyCraft"] = np.array(["none"] * T)
        data["action$nearbySmelt"] = np.array(["coal"] * T)
    data["observation$inventory$dirt"] = np.arange(T + 1, dtype=np.int64)
    return data


@pytest.fixture
def make_minerl_traj():
    """make(dir, T, video_frames, **overrides) writes recording.mp4, rendered.npz and metadata.json."""

    def make(d: Path, T: int = 20, video_frames: int | None = None, data: dict | None = None,
             metadata: dict | None = None, enums: bool = True) -> Path:
        d.mkdir(parents=True, exist_ok=True)
        n = T + 1 if video_frames is None else video_frames
        write_mp4(d / "recording.mp4", grey_frames(n, 64, 64))
        np.savez_compressed(d / "rendered.npz", **(data if data is not None else minerl_arrays(T, enums=enums)))
        meta = {"success": True, "duration_steps": T, "true_video_frame_count": n, "stream_name": d.name}
        (d / "metadata.json").write_text(json.dumps(meta if metadata is None else metadata))
        return d

    return make


def vpt_line(keys=(), buttons=(), new_buttons=(), dx=0.0, dy=0.0, gui=False, hotbar=0, x=640.0, y=360.0) -> dict:
    return {"mouse": {"x": x, "y": y, "dx": dx, "dy": dy, "scaledX": x - 640, "scaledY": y - 360, "dwheel": 0.0,
                      "buttons": list(buttons), "newButtons": list(new_buttons)},
            "keyboard": {"keys": list(keys), "newKeys": [], "chars": ""},
            "isGuiOpen": gui, "isGuiInventory": gui, "hotbar": hotbar, "yaw": 0.0, "pitch": 0.0,
            "xpos": 0.0, "ypos": 64.0, "zpos": 0.0, "tick": 0, "milli": 0, "inventory": [], "serverTick": 0,
            "serverTickDurationMs": 50.0, "stats": {}}


@pytest.fixture
def make_vpt_pair():
    """make(dir, stem, n_frames, lines) writes <stem>.mp4 (128×72) and <stem>.jsonl."""

    def make(d: Path, stem: str = "Player1-0123456789ab-20220101-120000", n_frames: int = 24,
             lines: list[dict] | None = None, size: tuple[int, int] = (72, 128)) -> Path:
        d.mkdir(parents=True, exist_ok=True)
        lines = [vpt_line(keys=["key.keyboard.w"]) for _ in range(n_frames)] if lines is None else lines
        write_mp4(d / f"{stem}.mp4", grey_frames(n_frames, *size))
        (d / f"{stem}.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
        return d / f"{stem}.mp4"

    return make
