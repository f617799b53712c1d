"""A scripted Crafter policy that reads the game's internal state from ``info`` (agents never do).

It follows the tech tree (wood → table → wood pickaxe/sword → stone → stone pickaxe/sword →
furnace → coal, iron → iron pickaxe/sword → diamond), keeps food/drink/energy up (cows, water, sleep
inside a shelter walled with stone), fights adjacent zombies and skeletons, plants and later eats a
sapling, and mixes in uniformly random actions with probability ``epsilon``. Two random actions are
redrawn: a move into lava (instant death) and "sleep" outside a walled shelter (zombies hit a sleeper
for 7 damage). Call ``reset(seed)`` at every episode start.
"""

from __future__ import annotations

import numpy as np

from dreamer.envs.crafter_env import _constants, crafter_names
from dreamer.envs.crafter_nav import CREATURES, DIRS, IDS, MOVE_ACTION, WALKABLE, GridView
from dreamer.envs.crafter_shelter import find_shelter, shelter_gaps, shelter_ok
from dreamer.envs.policies import POLICY_STREAM

A = {name: i for i, name in enumerate(crafter_names()["actions"])}
ENEMIES = frozenset((IDS["zombie"], IDS["skeleton"]))
MINABLE_BY = {"tree": None, "stone": "wood_pickaxe", "coal": "wood_pickaxe", "iron": "stone_pickaxe",
              "diamond": "iron_pickaxe"}
WOOD_HOARD = 9  # wood gathered before placing a table, to craft the next tools away from trees
NIGHT = 0.45  # daylight below which zombies spawn in numbers: time to be walled in
TOOLS = ("wood_pickaxe", "wood_sword", "stone_pickaxe", "stone_sword", "iron_pickaxe", "iron_sword")


class ScriptedCrafterPolicy:
    """``policy(obs, info) -> action``; ``info`` must come from :class:`CrafterEnv`."""

    def __init__(self, epsilon: float = 0.2, seed: int = 0):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.epsilon = float(epsilon)
        c = _constants()
        self.place_cost = {k: v["uses"] for k, v in c.place.items()}
        self.place_where = {k: frozenset(IDS[m] for m in v["where"]) for k, v in c.place.items()}
        self.make_info = c.make
        self.max_energy = c.items["energy"]["max"]
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(None if seed is None else [int(seed), POLICY_STREAM])
        self.need: str | None = None
        self.shelter: frozenset | None = None
        self.sealed = False  # standing inside a fully walled shelter
        self.skip_until: dict[str, int] = {}  # goal → step before which it is not searched again
        self.dig: frozenset = frozenset()  # ids the BFS may dig through (stone, once we own a pickaxe)
        self.skeletons: set = set()
        self.avoid: frozenset = frozenset()  # cells near skeletons (arrows), never walked through
        self.step = 0

    def __call__(self, obs, info) -> int:
        self.step = int(info.get("step", self.step + 1))
        view = GridView(info["semantic"], info["player_pos"], info["player_facing"])
        if self.shelter is None or view.pos not in self.shelter:
            self.sealed = False
        if self.rng.random() < self.epsilon:
            return self._random_action(view)
        return int(self.expert(view, info))

    def _random_action(self, view: GridView) -> int:
        while True:
            a = int(self.rng.integers(len(A)))
            d = next((d for d, m in MOVE_ACTION.items() if m == a), None)
            if a == A["sleep"] and not self.sealed:
                continue  # a random nap outside a walled shelter is often fatal (zombies hit sleepers for 7)
            if d is None or view.at((view.pos[0] + d[0], view.pos[1] + d[1])) != IDS["lava"]:
                return a

    # ---------------------------------------------------------------- decisions
    def expert(self, v: GridView, info: dict) -> int:
        inv, ach = info["inventory"], info["achievements"]
        self.dig = frozenset({IDS["stone"]}) if inv["wood_pickaxe"] else frozenset()
        self.skeletons = v.cells({IDS["skeleton"]})
        self.avoid = frozenset((sx + dx, sy + dy) for sx, sy in self.skeletons
                               for dx in range(-3, 4) for dy in range(-3 + abs(dx), 4 - abs(dx)))
        self._update_need(inv, info["daylight"], info["sleeping"])
        if info["sleeping"]:
            return A["noop"]
        for d in DIRS:  # fight anything hostile next to us
            if v.at((v.pos[0] + d[0], v.pos[1] + d[1])) in ENEMIES:
                return A["do"] if v.facing == d else MOVE_ACTION[d]
        targets = [("zombie", 2)]  # meet a closing zombie face to face; hunt archers until one is beaten
        if not ach["defeat_skeleton"] and (inv["wood_sword"] or inv["stone_sword"]):
            targets.append(("skeleton", 4))
        for name, radius in targets:
            if self.need != "shelter" and self._close(v, name, radius):
                act = self._face_and(name, v, A["do"])
                if act is not None:
                    return act
        for act in self._plan(v, inv, ach, info):
            if act is not None:
                return act
        return self._wander(v)

    def _update_need(self, inv: dict, daylight: float, sleeping: bool) -> None:
        night = daylight < NIGHT
        hungry = min(inv["food"], inv["drink"]) == 0  # starving costs less than a night among zombies
        if self.need == "shelter" and not sleeping:
            done = not night and inv["energy"] > 2 and inv["health"] > 6
            if done or hungry:
                self.need, self.shelter = None, None
        elif self.need == "drink" and inv["drink"] >= 9 or self.need == "food" and inv["food"] >= 7:
            self.need = None
        if self.need is None:
            if not hungry and (night or inv["energy"] <= 2 or inv["health"] <= 5):
                self.need = "shelter"  # wall in, sleep if tired, wait for daylight / health
            elif inv["drink"] <= 4:
                self.need = "drink"
            elif inv["food"] <= 4:
                self.need = "food"

    def _plan(self, v: GridView, inv: dict, ach: dict, info: dict):
        """Candidate actions in priority order; the first that is not None is taken (lazily)."""
        if self.need == "shelter":
            yield self._sleep(v, inv)
        if self.need == "drink" or (inv["drink"] < 9 and v.nearby({IDS["water"]})):
            yield self._face_and("water", v, A["do"])
        if self.need == "food" or (not ach["eat_cow"] or inv["food"] <= 6) and self._close(v, "cow", 5):
            yield self._face_and("cow", v, A["do"])
        ripe = {(int(x), int(y)) for x, y, r in info["plants"] if r}
        if ripe and inv["food"] < 9:
            yield self._face_cells("ripe_plant", v, ripe, A["do"])
        missing = [t for t in TOOLS if inv[t] == 0]
        for tool in ("wood_pickaxe", "wood_sword"):
            if tool in missing:
                yield self._make(v, inv, tool)
        # a sapling and a plant early, since plants take long to ripen; replant if it was eaten
        if not ach["place_plant"] or (not ach["eat_plant"] and len(info["plants"]) == 0):
            yield self._place(v, inv, "plant") if inv["sapling"] else self._sapling(v)
        if inv["wood"] < 5 and self._close(v, "tree", 3):
            yield self._collect(v, inv, "tree")
        if inv["coal"] < 2 and self._close(v, "coal", 3):
            yield self._collect(v, inv, "coal")
        if not ach["collect_drink"]:
            yield self._face_and("water", v, A["do"])
        if inv["stone"] < 1 or (inv["stone"] < 9 and inv["wood_pickaxe"] and self._close(v, "stone", 4)):
            yield self._collect(v, inv, "stone")
        if not ach["place_stone"]:
            yield self._place(v, inv, "stone")
        for tool in ("stone_pickaxe", "stone_sword"):
            if tool in missing:
                yield self._make(v, inv, tool)
        if not ach["place_furnace"]:  # next to a table, where the iron tools will need it
            yield self._furnace(v, inv)
        if not ach["eat_plant"] and inv["stone"] >= 3:
            yield self._protect_plants(v, info["plants"])
        if inv["coal"] < 2 and ("iron_pickaxe" in missing or "iron_sword" in missing):
            yield self._collect(v, inv, "coal")
        if inv["iron"] < 1 and ("iron_pickaxe" in missing or "iron_sword" in missing):
            yield self._collect(v, inv, "iron")
        for tool in ("iron_pickaxe", "iron_sword"):
            if tool in missing:
                yield self._make(v, inv, tool)
        if not ach["eat_cow"]:
            yield self._face_and("cow", v, A["do"])
        if not ach["defeat_zombie"] and self._close(v, "zombie", 10):
            yield self._face_and("zombie", v, A["do"])
        yield self._collect(v, inv, "diamond")
        if inv["wood"] < 6:
            yield self._collect(v, inv, "tree")
        if inv["stone"] < 9:
            yield self._collect(v, inv, "stone")

    # ---------------------------------------------------------------- skills
    def _close(self, v: GridView, name: str, radius: int) -> bool:
        x, y = v.pos
        win = v.sem[max(0, x - radius): x + radius + 1, max(0, y - radius): y + radius + 1]
        return bool((win == IDS[name]).any())

    def _face_cells(self, key: str, v: GridView, cells: set, action: int):
        """Walk to face one of ``cells`` and take ``action``; None if unreachable (then not retried for a while)."""
        if self.skip_until.get(key, -1) > self.step:
            return None
        avoid = frozenset() if key == "skeleton" else self.avoid
        r = v.bfs_face(cells, dig=self.dig, avoid=avoid)
        if r is None:
            self.skip_until[key] = self.step + 20
            return None
        return action if r[0] == "here" else v.step_towards(r[1], A["do"])

    def _face_and(self, name: str, v: GridView, action: int):
        return self._face_cells(name, v, v.cells({IDS[name]}), action)

    def _collect(self, v: GridView, inv: dict, material: str):
        tool = MINABLE_BY[material]
        if tool is not None and not inv[tool]:
            return None
        return self._face_and(material, v, A["do"])

    def _sapling(self, v: GridView):
        if v.at(v.front()) == IDS["grass"]:
            return A["do"]  # 10% chance of a sapling per hit
        return self._face_and("grass", v, A["do"])

    def _place(self, v: GridView, inv: dict, item: str):
        if any(inv[k] < n for k, n in self.place_cost[item].items()):
            return None
        where = self.place_where[item]
        if v.at(v.front()) in where:
            return A[f"place_{item}"]
        cells = {c for c in v.cells(where) if abs(c[0] - v.pos[0]) + abs(c[1] - v.pos[1]) <= 8}
        return self._face_cells(f"place_{item}", v, cells, A[f"place_{item}"])

    def _furnace(self, v: GridView, inv: dict):
        if any(inv[k] < n for k, n in self.place_cost["furnace"].items()):
            return None
        table = {IDS["table"]}
        if v.nearby(table):
            return self._place(v, inv, "furnace")
        near = v.bfs_stand(lambda c: v.nearby(table, c), max_states=400)
        return None if near is None else v.step_towards(near[1], A["do"])

    def _protect_plants(self, v: GridView, plants: np.ndarray):
        """Wall growing plants in with stone: creatures next to a plant destroy it."""
        gaps = set()
        for x, y, _ in plants:
            if abs(x - v.pos[0]) + abs(y - v.pos[1]) <= 20:
                gaps |= {(x + dx, y + dy) for dx, dy in DIRS if v.at((x + dx, y + dy)) in WALKABLE}
        if not gaps:
            return None
        if v.front() in gaps and v.front() != v.pos:
            return A["place_stone"]
        return self._face_cells("protect", v, gaps, A["place_stone"])

    def _make(self, v: GridView, inv: dict, tool: str):
        info = self.make_info[tool]
        for k, n in info["uses"].items():  # gather ingredients first
            if inv[k] < n:
                src = {"wood": "tree"}.get(k, k)
                return self._collect(v, inv, src) if src in MINABLE_BY else None
        stations = [IDS[s] for s in info["nearby"]]
        if all(v.nearby({s}) for s in stations):
            return A[f"make_{tool}"]
        # stations needed here: what they cost on top of the tool itself
        lacking = [s for s in info["nearby"] if not v.nearby({IDS[s]})]
        need = dict(info["uses"])
        for station in lacking:
            for k, n in self.place_cost[station].items():
                need[k] = need.get(k, 0) + n
        affordable = all(inv[k] >= n for k, n in need.items())
        # walk to existing stations if close (or if we cannot build them), else build them here
        for budget in ((200,) if affordable else (200, 4000)):
            near = v.bfs_stand(lambda c: all(v.nearby({s}, c) for s in stations), max_states=budget)
            if near is not None:
                return v.step_towards(near[1], A["do"]) if near[0] == "move" else A[f"make_{tool}"]
        for k, n in need.items():
            if inv[k] < n:
                return self._collect(v, inv, {"wood": "tree"}.get(k, k))
        if "table" in lacking and inv["wood"] < WOOD_HOARD:  # stock up while trees are near
            act = self._collect(v, inv, "tree")
            if act is not None and self._close(v, "tree", 6):
                return act
        return self._place(v, inv, lacking[0])

    def _sleep(self, v: GridView, inv: dict):
        if self.shelter is None or not shelter_ok(v, self.shelter, inv["stone"], self.dig):
            self.shelter = None
            if self.skip_until.get("shelter", -1) <= self.step:
                self.shelter = find_shelter(v, inv["stone"], self.dig, self.avoid, self.skeletons)
                self.skip_until["shelter"] = self.step + (10 if self.shelter is None else 0)
        rest = A["sleep"] if inv["energy"] < self.max_energy else A["noop"]
        if self.shelter is None:  # nowhere to wall in: fetch stone first unless exhausted
            if inv["energy"] > 0 and inv["stone"] < 9:
                act = self._collect(v, inv, "stone")
                if act is not None:
                    return act
            return rest if inv["energy"] <= 2 else None
        room = self.shelter
        stone_cells = {c for c in room if v.at(c) == IDS["stone"] and c != v.pos}
        if stone_cells:
            return self._face_cells("dig", v, stone_cells, A["do"])
        if v.pos not in room:
            r = v.bfs_stand(lambda c: c in room, dig=self.dig)
            if r is None:
                self.shelter = None
                return rest if inv["energy"] <= 2 else None
            return v.step_towards(r[1], A["do"])
        gaps = shelter_gaps(v, room)
        self.sealed = not gaps
        if not gaps:
            return rest
        r = v.bfs(lambda c, f: c in room and (c[0] + f[0], c[1] + f[1]) in gaps)
        if r is None:
            self.shelter = None
            return rest if inv["energy"] <= 2 else None
        if r[0] == "move":
            return MOVE_ACTION[r[1]]
        return A["do"] if v.at(v.front()) in CREATURES else A["place_stone"]

    def _wander(self, v: GridView) -> int:
        options = [d for d in DIRS if v.at((v.pos[0] + d[0], v.pos[1] + d[1])) in WALKABLE]
        if not options:
            return A["noop"]
        return MOVE_ACTION[options[int(self.rng.integers(len(options)))]]
