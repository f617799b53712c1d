"""Dataset summary of a conversion: episodes, frames, hours, action statistics and reward events."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from dreamer.minecraft.actions import MinecraftLayout
from dreamer.minecraft.camera import CAMERA_NULL_BIN, dequantize_camera


@dataclass
class ConversionSummary:
    layout: MinecraftLayout
    fps: int = 20
    converted: int = 0  # written by this run
    skipped_existing: int = 0  # already in the output folder (resumed)
    failed: int = 0  # broken recordings skipped with a warning
    missing: int = 0  # index entries whose files are not on disk
    steps: int = 0
    frames: int = 0
    null_steps: int = 0
    gui_frames: int = 0
    reward_events: int = 0
    reward_total: float = 0.0
    reward_values: Counter = field(default_factory=Counter)
    failures: list[dict] = field(default_factory=list)
    counts: list[np.ndarray] = field(default_factory=list)  # per component: (card,) value histogram

    def __post_init__(self):
        if not self.counts:
            self.counts = [np.zeros(c, dtype=np.int64) for c in self.layout.cards]

    @property
    def episodes(self) -> int:
        return self.converted + self.skipped_existing

    def add_episode(self, actions_td: np.ndarray, rewards_t: np.ndarray, extras: dict[str, np.ndarray]) -> None:
        """Count one episode (actions (T, D), rewards (T,), per-frame extras)."""
        T = int(actions_td.shape[0])
        self.steps += T
        self.frames += T + 1
        for d, card in enumerate(self.layout.cards):
            self.counts[d] += np.bincount(actions_td[:, d], minlength=card)[:card]
        if "null_action" in extras:
            self.null_steps += int(np.asarray(extras["null_action"])[:T].sum())
        if "gui_open" in extras:
            self.gui_frames += int(np.asarray(extras["gui_open"]).sum())
        nz = rewards_t[rewards_t != 0]
        self.reward_events += int(nz.size)
        self.reward_total += float(rewards_t.sum())
        self.reward_values.update(float(v) for v in nz)

    def add_failure(self, path: str, error: str) -> None:
        self.failed += 1
        self.failures.append({"path": path, "error": error})

    def action_stats(self) -> dict:
        steps = max(self.steps, 1)
        lay = self.layout
        out: dict = {"key_press_fraction": {k: float(self.counts[i][1] / steps) for i, k in enumerate(lay.keys)}}
        centres = [round(float(c), 4) for c in dequantize_camera(np.arange(len(self.counts[len(lay.keys)])))]
        for j, name in enumerate(("camera_pitch", "camera_yaw")):
            hist = self.counts[len(lay.keys) + j]
            out[name] = {"bin_centres_deg": centres, "histogram": hist.tolist(),
                         "still_fraction": float(hist[CAMERA_NULL_BIN] / steps)}
        base = len(lay.keys) + 2
        out["enums"] = {name: {v: int(self.counts[base + j][i]) for i, v in enumerate(values)}
                        for j, (name, values) in enumerate(lay.enums)}
        return out

    def to_dict(self) -> dict:
        return {
            "action_layout": self.layout.kind,
            "action_space": {"names": list(self.layout.names), "cards": list(self.layout.cards)},
            "episodes": self.episodes, "converted": self.converted, "skipped_existing": self.skipped_existing,
            "failed": self.failed, "missing_files": self.missing,
            "steps": self.steps, "frames": self.frames, "fps": self.fps,
            "hours": self.steps / self.fps / 3600.0,
            "null_action_fraction": self.null_steps / max(self.steps, 1),
            "gui_open_fraction": self.gui_frames / max(self.frames, 1),
            "reward_events": self.reward_events, "reward_total": self.reward_total,
            "reward_values": {str(k): v for k, v in sorted(self.reward_values.items())},
            "actions": self.action_stats(),
            "failures": self.failures,
        }
