"""Keyboard maps for an action space, and readable action names (the play page, video captions).

A :class:`KeyMap` binds browser key names (``KeyboardEvent.key``, lower-cased; ``" "`` is space) to
one component value each. The action of a set of held keys starts from the no-op and sets each held
key's component (a later key wins on the same component), so Minecraft keys combine (forward + jump
+ camera) while Crafter's single component takes the last key.

Layouts: Crafter (its 17 named actions, WASD / arrows to move), Minecraft (MineRL v0.4 and VPT:
WASD, space jump, shift sneak, r sprint, j attack, k use, arrows turn the camera, digits pick the
hotbar), and any other discrete space (digits and letters over the component values).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from dreamer.data.episode import ActionSpace

CRAFTER_KEYS = {  # action name -> keys (the first is the one shown)
    "noop": ("n",), "move_left": ("a", "arrowleft"), "move_right": ("d", "arrowright"), "move_up": ("w", "arrowup"),
    "move_down": ("s", "arrowdown"), "do": (" ",), "sleep": ("tab",), "place_stone": ("r",), "place_table": ("t",),
    "place_furnace": ("f",), "place_plant": ("p",), "make_wood_pickaxe": ("1",), "make_stone_pickaxe": ("2",),
    "make_iron_pickaxe": ("3",), "make_wood_sword": ("4",), "make_stone_sword": ("5",), "make_iron_sword": ("6",),
}
MINECRAFT_KEYS = {  # component -> key; binary components take value 1
    "forward": "w", "back": "s", "left": "a", "right": "d", "jump": " ", "sneak": "shift", "sprint": "r",
    "attack": "j", "use": "k", "pickItem": "p", "inventory": "e", "drop": "q", **{f"hotbar.{i}": str(i) for i in range(1, 10)},
}
CAMERA_STEP = 3  # bins away from the still bin per arrow key (about 3 degrees per tick)
CAMERA_KEYS = (("arrowup", "camera_pitch", -1, "look up"), ("arrowdown", "camera_pitch", 1, "look down"),
               ("arrowleft", "camera_yaw", -1, "turn left"), ("arrowright", "camera_yaw", 1, "turn right"))
GENERIC_POOL = "1234567890qwertyuiopasdfghjklzxcvbnm"


@dataclass(frozen=True)
class Binding:
    key: str
    component: int
    value: int
    label: str


@dataclass
class KeyMap:
    kind: str  # "crafter" | "minerl_v04" | "vpt" | "discrete"
    names: tuple[str, ...]  # component names
    cards: tuple[int, ...]
    noop: tuple[int, ...]
    bindings: list[Binding]
    value_names: dict[int, tuple[str, ...]]  # component -> names of its values, where known

    def action_for(self, keys: Sequence[str]) -> np.ndarray:
        """The (D,) int64 action of the held ``keys`` (in pressing order); unknown keys are ignored."""
        action = np.array(self.noop, dtype=np.int64)
        by_key = {b.key: b for b in self.bindings}
        for k in keys:
            b = by_key.get(str(k).lower())
            if b is not None:
                action[b.component] = b.value
        return action

    def describe(self, action_d) -> str:
        """A readable name: Crafter's action name, or the components that differ from the no-op."""
        a = [int(x) for x in np.asarray(action_d).reshape(-1)]
        if len(a) != len(self.cards):
            raise ValueError(f"action {a} has {len(a)} components, the action space has {len(self.cards)}")
        if self.kind == "crafter":
            return self.value_names[0][a[0]]
        parts = []
        for d, (v, v0) in enumerate(zip(a, self.noop)):
            if v == v0:
                continue
            if self.cards[d] == 2 and v0 == 0:
                parts.append(self.names[d])
            elif d in self.value_names:
                parts.append(f"{self.names[d]}:{self.value_names[d][v]}")
            else:
                parts.append(f"{self.names[d]}={v}")
        return "+".join(parts) if parts else "noop"

    def to_json(self) -> dict:
        return {"kind": self.kind, "names": list(self.names), "cards": list(self.cards), "noop": list(self.noop),
                "bindings": [asdict(b) for b in self.bindings]}


def _crafter(space: ActionSpace) -> KeyMap:
    from dreamer.envs.crafter_env import crafter_names

    actions = crafter_names()["actions"]
    bindings = [Binding(k, 0, actions.index(name), name) for name, keys in CRAFTER_KEYS.items() for k in keys]
    return KeyMap("crafter", space.names, space.cards, (0,), bindings, {0: tuple(actions)})


def _minecraft(space: ActionSpace, kind: str) -> KeyMap:
    from dreamer.minecraft.actions import layout_for
    from dreamer.minecraft.camera import CAMERA_NULL_BIN

    layout = layout_for(kind)
    bindings = [Binding(MINECRAFT_KEYS[n], i, 1, n) for i, n in enumerate(layout.keys) if n in MINECRAFT_KEYS]
    for key, comp, sign, label in CAMERA_KEYS:
        bindings.append(Binding(key, layout.index(comp), CAMERA_NULL_BIN + sign * CAMERA_STEP, label))
    base = len(layout.keys) + 2
    values = {base + j: vals for j, (_, vals) in enumerate(layout.enums)}
    return KeyMap(kind, space.names, space.cards, tuple(int(x) for x in layout.noop()), bindings, values)


def _generic(space: ActionSpace) -> KeyMap:
    """One component: key "0" is value 0, "1" value 1, … then letters. Several: each key sets one
    component to a non-zero value, in order, while keys last."""
    single = space.dims == 1
    pool, bindings = iter(GENERIC_POOL[9] + GENERIC_POOL[:9] + GENERIC_POOL[10:] if single else GENERIC_POOL), []
    for d, (name, card) in enumerate(zip(space.names, space.cards)):
        for v in range(0 if single else 1, card):
            key = next(pool, None)
            if key is None:
                break
            bindings.append(Binding(key, d, v, f"{name}={v}"))
    return KeyMap("discrete", space.names, space.cards, (0,) * space.dims, bindings, {})


def keymap_for(space: ActionSpace, env_id: str = "") -> KeyMap:
    """The key map of a cache's action space (``env_id`` from the run's config tells Crafter apart)."""
    from dreamer.minecraft.actions import LAYOUTS

    if env_id.lower().startswith("crafter") and space.cards == (17,):
        return _crafter(space)
    for kind, layout in LAYOUTS.items():
        if space.names == layout.names and space.cards == layout.cards:
            return _minecraft(space, kind)
    return _generic(space)
