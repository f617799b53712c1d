"""Minecraft data without ``minerl``: MineRL v0.4 and VPT readers, the action spaces, the converter.

See ``docs/minecraft.md``. The converter (CLI and ``convert(ConvertConfig)``) lives in
``dreamer.minecraft.convert``, not imported here so that ``python -m`` runs it cleanly.
"""

from dreamer.minecraft.actions import MINERL_V04, VPT, MinecraftLayout, layout_for
from dreamer.minecraft.camera import (
    CAMERA_BINS,
    CAMERA_NULL_BIN,
    dequantize_camera,
    joint_camera_class,
    mu_law_decode,
    mu_law_encode,
    quantize_camera,
)
from dreamer.minecraft.live_env import MineRLGymnasiumEnv, MineRLUnavailableError, make_minerl_env, minerl_available
from dreamer.minecraft.minerl_v04 import find_minerl_trajectories, read_minerl_trajectory, read_rendered_npz
from dreamer.minecraft.paths import MinecraftDataError, safe_filename, safe_join
from dreamer.minecraft.stats import ConversionSummary
from dreamer.minecraft.vpt import read_jsonl, read_vpt_recording, vpt_actions
from dreamer.minecraft.vpt_index import VptIndex, VptRecording, find_vpt_recordings, parse_relpath, read_vpt_index

__all__ = [
    "CAMERA_BINS", "CAMERA_NULL_BIN", "MINERL_V04", "VPT", "ConversionSummary",
    "MineRLGymnasiumEnv", "MineRLUnavailableError", "MinecraftDataError", "MinecraftLayout", "VptIndex",
    "VptRecording", "dequantize_camera", "find_minerl_trajectories", "find_vpt_recordings",
    "joint_camera_class", "layout_for", "make_minerl_env", "minerl_available", "mu_law_decode", "mu_law_encode",
    "parse_relpath", "quantize_camera", "read_jsonl", "read_minerl_trajectory", "read_rendered_npz",
    "read_vpt_index", "read_vpt_recording", "safe_filename", "safe_join", "vpt_actions",
]
