"""The Minecraft action spaces in the pipeline's MultiDiscrete form (docs/design.md §1 and §7).

Two layouts, one per data source (they differ in what the player could do, so they are not mixed):

- ``MINERL_V04`` (MineRL v0.4 dataset, D = 15): 8 binary keys ``forward back left right jump sneak
  sprint attack``, ``camera_pitch`` and ``camera_yaw`` (11 μ-law bins each, bin 5 = still), then
  the Obtain* enums ``place`` (7) ``equip`` (8) ``craft`` (5) ``nearbyCraft`` (8) ``nearbySmelt``
  (3), each with ``none`` = 0. Treechop/Navigate data simply leave absent enums at ``none``.
- ``VPT`` (OpenAI contractor recordings, D = 23): 21 binary keys ``forward back left right jump
  sneak sprint attack use pickItem inventory drop hotbar.1 … hotbar.9``, then the two camera axes.

A layout converts between a step's MineRL-style action dict ({key: 0/1, "camera": [pitch, yaw]
degrees, enum: str}) and its MultiDiscrete vector; ``from_env_action(to_env_action(v)) == v``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dreamer.data.episode import ActionSpace
from dreamer.minecraft.camera import CAMERA_BINS, CAMERA_NULL_BIN, dequantize_camera, quantize_camera

CAMERA_COMPONENTS = ("camera_pitch", "camera_yaw")

MINERL_KEYS = ("forward", "back", "left", "right", "jump", "sneak", "sprint", "attack")
# Obtain* enums of MineRL v0.4 (minerl/herobraine/env_specs/obtain_specs.py), "none" first.
MINERL_ENUMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("place", ("none", "dirt", "stone", "cobblestone", "crafting_table", "furnace", "torch")),
    ("equip", ("none", "air", "wooden_axe", "wooden_pickaxe", "stone_axe", "stone_pickaxe", "iron_axe",
               "iron_pickaxe")),
    ("craft", ("none", "torch", "stick", "planks", "crafting_table")),
    ("nearbyCraft", ("none", "wooden_axe", "wooden_pickaxe", "stone_axe", "stone_pickaxe", "iron_axe",
                     "iron_pickaxe", "furnace")),
    ("nearbySmelt", ("none", "iron_ingot", "coal")),
)

VPT_KEYS = MINERL_KEYS + ("use", "pickItem", "inventory", "drop") + tuple(f"hotbar.{i}" for i in range(1, 10))
# VPT jsonl keyboard names → action keys (docs/design.md §7); other keys (ESC, f, …) are ignored.
VPT_KEYBOARD = {
    "key.keyboard.w": "forward", "key.keyboard.s": "back", "key.keyboard.a": "left", "key.keyboard.d": "right",
    "key.keyboard.space": "jump", "key.keyboard.left.shift": "sneak", "key.keyboard.left.control": "sprint",
    "key.keyboard.e": "inventory", "key.keyboard.q": "drop",
    **{f"key.keyboard.{i}": f"hotbar.{i}" for i in range(1, 10)},
}
VPT_MOUSE_BUTTONS = {0: "attack", 1: "use", 2: "pickItem"}


@dataclass(frozen=True)
class MinecraftLayout:
    """Component order of one Minecraft MultiDiscrete action space."""

    kind: str
    keys: tuple[str, ...]
    enums: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return self.keys + CAMERA_COMPONENTS + tuple(n for n, _ in self.enums)

    @property
    def cards(self) -> tuple[int, ...]:
        return (2,) * len(self.keys) + (CAMERA_BINS, CAMERA_BINS) + tuple(len(v) for _, v in self.enums)

    @property
    def space(self) -> ActionSpace:
        return ActionSpace(self.names, self.cards)

    @property
    def dims(self) -> int:
        return len(self.names)

    @property
    def camera_slice(self) -> slice:
        return slice(len(self.keys), len(self.keys) + 2)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"'{name}' is not a component of the {self.kind} action space {self.names}") from None

    def noop(self) -> np.ndarray:
        """(D,) int64: no key, camera still, every enum 'none'."""
        v = np.zeros(self.dims, dtype=np.int64)
        v[self.camera_slice] = CAMERA_NULL_BIN
        return v

    def is_null(self, actions_td: np.ndarray) -> np.ndarray:
        """(T, D) → bool (T,): True where the step equals the no-op after quantisation."""
        return (np.asarray(actions_td) == self.noop()[None, :]).all(axis=1)

    def to_env_action(self, vec: np.ndarray) -> dict:
        """(D,) MultiDiscrete vector → MineRL-style action dict (camera at its bin centre)."""
        vec = np.asarray(vec, dtype=np.int64)
        if vec.shape != (self.dims,):
            raise ValueError(f"{self.kind} action must have shape ({self.dims},), got {vec.shape}")
        out: dict = {k: int(vec[i]) for i, k in enumerate(self.keys)}
        out["camera"] = dequantize_camera(vec[self.camera_slice]).astype(np.float32)
        base = len(self.keys) + 2
        for j, (name, values) in enumerate(self.enums):
            out[name] = values[int(vec[base + j])]
        return out

    def from_env_action(self, action: dict) -> np.ndarray:
        """MineRL-style action dict → (D,) vector; missing entries are no-ops, unknown enum values 'none'."""
        vec = self.noop()
        for i, k in enumerate(self.keys):
            vec[i] = 1 if int(np.asarray(action.get(k, 0))) else 0
        if "camera" in action:
            vec[self.camera_slice] = quantize_camera(np.asarray(action["camera"], dtype=np.float64).reshape(2))
        base = len(self.keys) + 2
        for j, (name, values) in enumerate(self.enums):
            value = str(action.get(name, "none"))
            vec[base + j] = values.index(value) if value in values else 0
        return vec

    def describe(self) -> dict:
        """JSON-able description stored in episode metadata."""
        return {"kind": self.kind, "keys": list(self.keys), "camera": list(CAMERA_COMPONENTS),
                "camera_bins": CAMERA_BINS, "enums": {n: list(v) for n, v in self.enums}}


MINERL_V04 = MinecraftLayout("minerl_v04", MINERL_KEYS, MINERL_ENUMS)
VPT = MinecraftLayout("vpt", VPT_KEYS)
LAYOUTS = {MINERL_V04.kind: MINERL_V04, VPT.kind: VPT}


def layout_for(kind: str) -> MinecraftLayout:
    """The layout named ``kind`` ('minerl_v04' or 'vpt'; 'minerl' is accepted for the former)."""
    kind = "minerl_v04" if kind == "minerl" else kind
    if kind not in LAYOUTS:
        raise KeyError(f"unknown Minecraft action layout '{kind}', expected one of {sorted(LAYOUTS)}")
    return LAYOUTS[kind]


def encode_enum(values: np.ndarray, choices: tuple[str, ...]) -> tuple[np.ndarray, int]:
    """String array (T,) → int64 indices into ``choices`` and the number of unknown values (mapped to 'none')."""
    strs = np.char.decode(values, "utf-8") if values.dtype.kind == "S" else values.astype(str)
    lookup = {c: i for i, c in enumerate(choices)}
    out = np.fromiter((lookup.get(s, -1) for s in strs.tolist()), dtype=np.int64, count=len(strs))
    unknown = int((out < 0).sum())
    out[out < 0] = 0
    return out, unknown
