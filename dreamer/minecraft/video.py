"""Video decoding through PyAV, resizing to the pipeline's resolution, and the GUI cursor overlay.

The header frame count is never trusted (the real MineRL fixture declares 1,195 frames and decodes
1,162, because an edit list hides 33): frames are counted as they are decoded.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from dreamer.minecraft.paths import MinecraftDataError

log = logging.getLogger(__name__)

RESIZE_MODES = ("squash", "crop")


@dataclass
class DecodedVideo:
    frames: np.ndarray  # uint8 (F, size, size, 3), or (F, H, W, 3) when size == 0
    width: int  # original resolution
    height: int
    fps: float
    header_frames: int  # what the container claims (0 when unknown); not trusted


def resize_frame(rgb_hw3: np.ndarray, size: int, mode: str = "squash") -> np.ndarray:
    """RGB uint8 (H, W, 3) → (size, size, 3) with area interpolation; size 0 keeps the frame.

    ``squash`` scales the whole frame (VPT's choice for 640×360 → square); ``crop`` takes the
    central square first, keeping the aspect ratio.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got '{mode}'")
    if size == 0:
        return np.ascontiguousarray(rgb_hw3)
    h, w = rgb_hw3.shape[:2]
    if mode == "crop" and h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        rgb_hw3 = rgb_hw3[top:top + s, left:left + s]
    if rgb_hw3.shape[:2] == (size, size):
        return np.ascontiguousarray(rgb_hw3)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb_hw3), format="rgb24")
    return frame.reformat(width=size, height=size, format="rgb24", interpolation="AREA").to_ndarray()


def decode_video(
    path: str | os.PathLike,
    size: int,
    mode: str = "squash",
    overlay: Callable[[int, np.ndarray], None] | None = None,
    overlay_mask: np.ndarray | None = None,
) -> DecodedVideo:
    """Decode every frame of ``path`` to RGB and resize it.

    ``overlay(i, frame_hw3)`` draws in place on the full-resolution frame ``i`` before resizing; it is
    called only where ``overlay_mask[i]`` is True. Any open or decode failure (missing, truncated or
    corrupt file) raises :class:`MinecraftDataError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise MinecraftDataError(path, "video", "no such file")
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MinecraftDataError(path, "video", f"cannot open ({type(e).__name__}: {e})") from e
    frames: list[np.ndarray] = []
    with container:
        if not container.streams.video:
            raise MinecraftDataError(path, "video", "file has no video stream (truncated, or not a video)")
        stream = container.streams.video[0]
        # The default (slice) threading on purpose: frame threading hides decode errors of truncated files.
        width, height = stream.codec_context.width, stream.codec_context.height
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        header = int(stream.frames or 0)
        try:
            for i, frame in enumerate(container.decode(stream)):
                if overlay is not None and overlay_mask is not None and i < len(overlay_mask) and overlay_mask[i]:
                    rgb = frame.to_ndarray(format="rgb24")
                    overlay(i, rgb)
                    frames.append(resize_frame(rgb, size, mode))
                elif size and mode == "squash":
                    frames.append(frame.reformat(width=size, height=size, format="rgb24",
                                                 interpolation="AREA").to_ndarray())
                else:
                    frames.append(resize_frame(frame.to_ndarray(format="rgb24"), size, mode))
        except (av.FFmpegError, OSError, ValueError) as e:
            raise MinecraftDataError(path, "video", f"decoding failed after {len(frames)} frames "
                                     f"(corrupt or truncated file; {type(e).__name__}: {e})") from e
    if not frames:
        raise MinecraftDataError(path, "video", "no frame could be decoded (empty, corrupt or truncated file)")
    if header and header != len(frames):
        log.debug("%s: header declares %d frames, decoded %d (using the decoded count)", path, header, len(frames))
    return DecodedVideo(np.stack(frames), width, height, fps, header)


# A 16×16 arrow cursor (VPT overlays its own cursor bitmap on GUI frames; this is a drawn stand-in).
_CURSOR_ROWS = (
    "X...............", "XX..............", "XWX.............", "XWWX............",
    "XWWWX...........", "XWWWWX..........", "XWWWWWX.........", "XWWWWWWX........",
    "XWWWWWWWX.......", "XWWWWWWWWX......", "XWWWWWXXXXX.....", "XWWXWWX.........",
    "XWX.XWWX........", "XX...XWWX.......", "X....XWWX.......", "......XX........",
)
_CURSOR = np.array([[{"X": 1, "W": 2}.get(c, 0) for c in row] for row in _CURSOR_ROWS], dtype=np.uint8)
MINEREC_SCREEN_HEIGHT = 720  # VPT mouse x/y are in a 1280×720 window; scale by frame height / 720


def draw_cursor(rgb_hw3: np.ndarray, x: float, y: float, screen_height: int = MINEREC_SCREEN_HEIGHT) -> None:
    """Draw the arrow cursor in place with its tip at screen position (x, y), scaled to the frame."""
    if not (math.isfinite(x) and math.isfinite(y)):
        return
    h, w = rgb_hw3.shape[:2]
    scale = h / screen_height
    px, py = int(x * scale), int(y * scale)
    side = max(3, round(16 * h / 360))  # 16 px on VPT's 640×360 frames
    idx = np.minimum((np.arange(side) * 16) // side, 15)
    cursor = _CURSOR[np.ix_(idx, idx)]
    y0, x0 = max(py, 0), max(px, 0)
    y1, x1 = min(py + side, h), min(px + side, w)
    if y0 >= y1 or x0 >= x1:
        return
    patch = cursor[y0 - py:y1 - py, x0 - px:x1 - px]
    region = rgb_hw3[y0:y1, x0:x1]
    region[patch == 1] = 0
    region[patch == 2] = 255
