"""A gymnasium adapter for Crafter (the ``crafter`` package speaks the old 4-tuple gym API).

Observations are the game's own RGB rendering, uint8 (size, size, 3); 17 discrete actions.
``terminated`` means the player died, ``truncated`` that ``max_steps`` was reached.

Seeding: ``reset(seed=s)`` reseeds ``self.np_random``, from which the world seed is drawn, so the
same seed gives the same world and first observation; ``reset()`` without a seed draws a fresh
world from the running generator. The same seed and the same actions give the same episode: Crafter keeps each
chunk's creatures in a Python set and its balancing despawns the i-th of them, so in memory order (one evaluation
of the same BC on the same seed gave episodes of 212, 225 and 170 steps, the frames parting at step 23); the adapter
gives Crafter's world sets that iterate in insertion order (:class:`InsertionOrderSet`).

``info`` after reset and every step (read by evaluation, collection and the scripted policy; an
agent must only see the observation):
  inventory (dict name → int), achievements (dict name → cumulative count), sleeping (bool),
  ignores_action (bool: the game will ignore the next action because the player sleeps),
  player_pos (int (2,) array, world [x, y]), player_facing (int (2,) array), daylight (float),
  semantic (world-size int array of ids, see SEMANTIC_IDS), plants (int (K, 3): x, y, ripe), step;
  and on the step the player dies, death_cause ("lava", the empty needs such as "food+drink", or "attacked").
"""

from __future__ import annotations

from typing import ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

CRAFTER_FPS = 10  # Crafter has no clock; 10 steps/s is our playback convention for videos
MAX_WORLD_SEED = 2**31 - 1


def _constants():
    import crafter.constants as c  # imported lazily: loading crafter parses its YAML data

    return c


def crafter_names() -> dict[str, tuple[str, ...]]:
    """Names in the game's order: actions (17), inventory items (16), achievements (22), materials."""
    c = _constants()
    return {
        "actions": tuple(c.actions),
        "inventory": tuple(c.items),
        "achievements": tuple(c.achievements),
        "materials": tuple(c.materials),
    }


def semantic_ids() -> dict[str, int]:
    """Ids in ``info['semantic']``: 0 = outside/unknown, then materials, then creatures (as Crafter)."""
    mats = ["unknown", *_constants().materials]
    ids = {name: i for i, name in enumerate(mats)}
    for i, name in enumerate(("player", "cow", "zombie", "skeleton", "arrow", "plant")):
        ids[name] = len(mats) + i
    return ids


def local_view(semantic: np.ndarray, pos, half: tuple[int, int] = (4, 3)) -> np.ndarray:
    """Semantic ids (2·hx+1, 2·hy+1) of the world cells around ``pos`` = (x, y), indexed [dx, dy];
    0 (unknown) outside the world. The default is the 9 × 7 cells a 64×64 Crafter frame shows."""
    hx, hy = half
    out = np.zeros((2 * hx + 1, 2 * hy + 1), dtype=semantic.dtype)
    x, y = int(pos[0]), int(pos[1])
    W, H = semantic.shape
    x0, x1, y0, y1 = max(0, x - hx), min(W, x + hx + 1), max(0, y - hy), min(H, y + hy + 1)
    out[x0 - (x - hx) : x1 - (x - hx), y0 - (y - hy) : y1 - (y - hy)] = semantic[x0:x1, y0:y1]
    return out


STATE_KEYS = ("semantic", "player_pos", "inventory", "player_facing", "daylight", "sleeping")


def state_arrays(infos) -> dict[str, np.ndarray]:
    """The privileged game state of each ``info`` (reset or step, see the module docstring), as the episode
    extras store it (dreamer/envs/collect.py): local_view int16 (T, 9, 7), inventory int32 (T, 16) in
    ``crafter_names()["inventory"]`` order, facing int8 (T, 2), daylight float32 (T,), sleeping bool (T,).

    The one conversion collection and acting share, so a state encoded from the env's info equals the one
    encoded from a recorded episode. A ValueError names the first key an info lacks (not a Crafter info)."""
    infos = list(infos)
    for i, info in enumerate(infos):
        missing = [k for k in STATE_KEYS if k not in info]
        if missing:
            raise ValueError(f"info {i} has no {missing} (keys {sorted(info)}): the Crafter state needs the info "
                             "of dreamer.envs.crafter_env.CrafterEnv")
    inv = crafter_names()["inventory"]
    return {
        "local_view": np.stack([local_view(i["semantic"], i["player_pos"]) for i in infos]).astype(np.int16),
        "inventory": np.array([[i["inventory"][k] for k in inv] for i in infos], dtype=np.int32).reshape(-1, len(inv)),
        "facing": np.array([i["player_facing"] for i in infos], dtype=np.int8).reshape(-1, 2),
        "daylight": np.array([i["daylight"] for i in infos], dtype=np.float32),
        "sleeping": np.array([i["sleeping"] for i in infos], dtype=bool),
    }


class InsertionOrderSet(dict):
    """The part of ``set`` that Crafter's world uses (built from an iterable, add, remove, ``in``, iteration, len),
    iterating in insertion order instead of memory order, so that which creature Crafter's balancing despawns
    depends on the seed alone. Installed as the name ``set`` of ``crafter.engine`` (:func:`_ordered_crafter_sets`)."""

    def __init__(self, items=()):
        super().__init__((x, None) for x in items)

    def add(self, item) -> None:
        self[item] = None

    def remove(self, item) -> None:
        del self[item]


def _ordered_crafter_sets() -> None:
    """Crafter's ``engine.World`` builds its chunk sets (and ``nearby``'s material ids) with the builtin ``set``:
    give that module :class:`InsertionOrderSet` under the name instead (once; other modules keep the builtin)."""
    import crafter.engine

    crafter.engine.set = InsertionOrderSet


class CrafterEnv(gym.Env):
    """Crafter as a gymnasium env. ``world`` and ``player`` expose the game state (scripted policy,
    tests); agents must use observations only."""

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "render_fps": CRAFTER_FPS}

    def __init__(
        self,
        size: int = 64,
        max_steps: int = 1000,
        area: tuple[int, int] = (64, 64),
        view: tuple[int, int] = (9, 9),
        render_mode: str | None = "rgb_array",
        seed: int | None = None,
    ):
        import crafter

        _ordered_crafter_sets()  # before the world below makes its first chunk sets
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"CrafterEnv: render_mode must be None or 'rgb_array', got {render_mode!r}")
        if max_steps < 1:
            raise ValueError(f"CrafterEnv: max_steps must be >= 1, got {max_steps}")
        self.render_mode = render_mode
        self.size, self.max_steps = int(size), int(max_steps)
        # length=None: the time limit is ours (truncation), the game never ends an episode itself.
        self._env = crafter.Env(area=tuple(area), view=tuple(view), size=(self.size, self.size), length=None, seed=0)
        self.observation_space = spaces.Box(0, 255, (self.size, self.size, 3), np.uint8)
        self.action_space = spaces.Discrete(len(_constants().actions))
        self._ids = semantic_ids()
        expected = {name: self._ids[name] for name in ("player", "cow", "zombie", "skeleton", "arrow", "plant")}
        got = {k.__name__.lower(): v for k, v in self._env._sem_view._obj_ids.items()}
        if got != expected:  # guards against a crafter version with a different semantic layout
            raise RuntimeError(f"CrafterEnv: unexpected crafter semantic ids {got}, expected {expected}")
        self._first_seed = seed
        self._obs: np.ndarray | None = None
        self._steps = 0
        self._done = True

    def __setstate__(self, state: dict) -> None:
        """Unpickled (an env reset in a worker process and handed back): this process's Crafter gets the ordered
        sets too, for the worlds it builds on later resets."""
        _ordered_crafter_sets()
        self.__dict__.update(state)

    # -- game state (for the scripted policy and tests, not for agents) --
    @property
    def world(self):
        return self._env._world

    @property
    def player(self):
        return self._env._player

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None and self._first_seed is not None:
            seed, self._first_seed = self._first_seed, None
        super().reset(seed=seed)
        world_seed = int(self.np_random.integers(0, MAX_WORLD_SEED))
        # crafter.Env.reset seeds the world with hash((self._seed, self._episode)): set both.
        self._env._seed, self._env._episode = world_seed, 0
        self._obs = np.asarray(self._env.reset(), dtype=np.uint8)
        self._steps, self._done = 0, False
        return self._obs.copy(), self._info(self._env._sem_view())

    def step(self, action):
        if self._obs is None or self._done:
            raise RuntimeError("CrafterEnv.step called before reset() or after the episode ended")
        try:  # ints, numpy scalars and one-element arrays (a (1,) row of the MultiDiscrete view)
            index = int(np.asarray(action).reshape(()))
        except (TypeError, ValueError):
            index = -1
        if not 0 <= index < self.action_space.n:
            raise ValueError(f"CrafterEnv.step: action {action!r} outside Discrete({self.action_space.n})")
        obs, reward, _, cinfo = self._env.step(index)
        self._steps += 1
        self._obs = np.asarray(obs, dtype=np.uint8)
        terminated = bool(self.player.health <= 0)
        truncated = bool(not terminated and self._steps >= self.max_steps)
        self._done = terminated or truncated
        info = self._info(cinfo["semantic"])
        if terminated:
            info["death_cause"] = self._death_cause()
        return self._obs.copy(), float(reward), terminated, truncated, info

    def render(self):
        if self.render_mode != "rgb_array" or self._obs is None:
            return None
        return self._obs.copy()

    def close(self):
        self._obs, self._done = None, True

    def _death_cause(self) -> str:
        """Why the player died: "lava", the needs at zero ("food", "drink", "energy", joined by "+": health
        drains while one is empty), else "attacked" (zombies, skeletons' arrows)."""
        if self.world[self.player.pos][0] == "lava":
            return "lava"
        empty = [k for k in ("food", "drink", "energy") if self.player.inventory[k] <= 0]
        return "+".join(empty) if empty else "attacked"

    def _info(self, semantic: np.ndarray) -> dict:
        p = self.player
        plants = [(*o.pos, int(o.ripe)) for o in self.world.objects if type(o).__name__ == "Plant"]
        max_energy = _constants().items["energy"]["max"]
        return {
            "inventory": dict(p.inventory),
            "achievements": dict(p.achievements),
            "sleeping": bool(p.sleeping),
            "ignores_action": bool(p.sleeping and p.inventory["energy"] < max_energy),
            "player_pos": np.array(p.pos, dtype=np.int64),
            "player_facing": np.array(p.facing, dtype=np.int64),
            "daylight": float(self.world.daylight),
            "semantic": np.asarray(semantic),
            "plants": np.array(plants, dtype=np.int64).reshape(-1, 3),
            "step": self._steps,
        }
