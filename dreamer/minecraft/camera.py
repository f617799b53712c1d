"""Camera discretisation as in VPT (docs/design.md §7).

Per axis: clip degrees to ±10, μ-law with μ = 10 (x/10 → sign(x)·ln(1+μ|x|)/ln(1+μ), then ×10),
bin = round((x + 10) / 2). That gives 11 bins per axis; bin 5 is "no motion". The inverse maps a bin
to its centre: x = 2·bin − 10, then the inverse μ-law x/10 → sign(x)·((1+μ)^|x| − 1)/μ, ×10.
``quantize_camera(dequantize_camera(b)) == b`` holds exactly for every bin; rounding ties follow
NumPy's round-half-to-even, as VPT's own quantiser does.
"""

from __future__ import annotations

import numpy as np

CAMERA_MAXVAL = 10.0  # degrees per 50 ms tick, larger moves are clipped
CAMERA_BINSIZE = 2.0
CAMERA_MU = 10.0
CAMERA_BINS = round(2 * CAMERA_MAXVAL / CAMERA_BINSIZE) + 1  # 11 per axis
CAMERA_NULL_BIN = CAMERA_BINS // 2  # 5: no motion
VPT_DEGREES_PER_PIXEL = 360.0 / 2400.0  # 0.15: VPT mouse (dx, dy) in pixels → camera degrees


def mu_law_encode(x: np.ndarray, mu: float = CAMERA_MU, maxval: float = CAMERA_MAXVAL) -> np.ndarray:
    """Degrees in [-maxval, maxval] → μ-law companded degrees in the same range."""
    v = np.asarray(x, dtype=np.float64) / maxval
    return np.sign(v) * np.log1p(mu * np.abs(v)) / np.log1p(mu) * maxval


def mu_law_decode(y: np.ndarray, mu: float = CAMERA_MU, maxval: float = CAMERA_MAXVAL) -> np.ndarray:
    """Exact inverse of :func:`mu_law_encode`."""
    v = np.asarray(y, dtype=np.float64) / maxval
    return np.sign(v) * np.expm1(np.abs(v) * np.log1p(mu)) / mu * maxval


def quantize_camera(degrees: np.ndarray) -> np.ndarray:
    """Camera degrees (any shape, e.g. (T, 2) [pitch, yaw]) → int64 bins in [0, 11)."""
    x = np.asarray(degrees, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("camera degrees contain NaN or inf")
    x = mu_law_encode(np.clip(x, -CAMERA_MAXVAL, CAMERA_MAXVAL))
    return np.round((x + CAMERA_MAXVAL) / CAMERA_BINSIZE).astype(np.int64)


def dequantize_camera(bins: np.ndarray) -> np.ndarray:
    """Bins (any shape) → the degrees at each bin's centre (float64); bin 5 → 0."""
    b = np.asarray(bins)
    if b.size and ((b < 0).any() or (b >= CAMERA_BINS).any()):
        raise ValueError(f"camera bins must lie in [0, {CAMERA_BINS}), got {b.min()}..{b.max()}")
    return mu_law_decode(b.astype(np.float64) * CAMERA_BINSIZE - CAMERA_MAXVAL)


def joint_camera_class(pitch_bin: np.ndarray, yaw_bin: np.ndarray) -> np.ndarray:
    """The 121-way joint camera class pitch·11 + yaw (VPT's single camera head)."""
    return np.asarray(pitch_bin, dtype=np.int64) * CAMERA_BINS + np.asarray(yaw_bin, dtype=np.int64)
