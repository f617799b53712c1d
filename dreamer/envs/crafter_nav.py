"""Grid helpers for the scripted Crafter policy: a view of the semantic map and a facing-aware BFS.

Coordinates are Crafter's world [x, y]; moves: left (-1, 0), right (+1, 0), up (0, -1), down (0, +1).
A move towards a walkable free tile moves the player (and turns it); towards anything else it only
turns it, except lava, which the player walks into and dies: the BFS never moves towards lava.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from dreamer.envs.crafter_env import crafter_names, semantic_ids

DIRS = ((-1, 0), (1, 0), (0, -1), (0, 1))
_ACTIONS = {name: i for i, name in enumerate(crafter_names()["actions"])}
MOVE_ACTION = {DIRS[0]: _ACTIONS["move_left"], DIRS[1]: _ACTIONS["move_right"],
               DIRS[2]: _ACTIONS["move_up"], DIRS[3]: _ACTIONS["move_down"]}
IDS = semantic_ids()
WALKABLE = frozenset(IDS[m] for m in ("grass", "sand", "path"))
CREATURES = frozenset(IDS[m] for m in ("cow", "zombie", "skeleton", "arrow"))


class GridView:
    """One step's semantic map (ids, see ``semantic_ids``) plus the player's position and facing."""

    def __init__(self, semantic: np.ndarray, pos, facing):
        self.w, self.h = semantic.shape
        self.sem = semantic
        self.flat = semantic.reshape(-1).tolist()  # index x * h + y
        self.pos = (int(pos[0]), int(pos[1]))
        self.facing = (int(facing[0]), int(facing[1]))

    def at(self, c) -> int:
        x, y = c
        return self.flat[x * self.h + y] if 0 <= x < self.w and 0 <= y < self.h else 0

    def front(self) -> tuple[int, int]:
        return (self.pos[0] + self.facing[0], self.pos[1] + self.facing[1])

    def cells(self, ids) -> set[tuple[int, int]]:
        """All cells whose id is in ``ids``."""
        mask = np.isin(self.sem, list(ids))
        return {(int(x), int(y)) for x, y in np.argwhere(mask)}

    def nearby(self, ids, c=None, radius: int = 1) -> bool:
        """Whether an id of ``ids`` lies in the (2r+1)² square around ``c`` (Crafter's crafting test)."""
        x, y = self.pos if c is None else c
        at = self.at
        return any(at((i, j)) in ids for i in range(x - radius, x + radius + 1) for j in range(y - radius, y + radius + 1))

    def walkable(self, c) -> bool:
        return c == self.pos or self.at(c) in WALKABLE

    def bfs(self, goal, max_states: int = 20000, dig=frozenset(), avoid=frozenset()):
        """Shortest move sequence to a state (cell, facing) satisfying ``goal(cell, facing)``.

        Cells with an id in ``dig`` count as walkable (the caller digs them out, see ``step_towards``);
        cells in ``avoid`` are never entered.
        Returns ("here", cell) if the current state satisfies it, ("move", first_dir, cell) with the first
        move's direction otherwise, or None if no reachable state does.
        """
        passable = WALKABLE | dig
        start = (self.pos, self.facing)
        if goal(*start):
            return ("here", self.pos)
        lava = IDS["lava"]
        seen = {start}
        queue = deque([(self.pos, self.facing, None)])
        while queue and len(seen) < max_states:
            c, _, first = queue.popleft()
            for d in DIRS:
                n = (c[0] + d[0], c[1] + d[1])
                mid = self.at(n)
                if mid == lava or n in avoid:
                    continue
                state = (n, d) if (mid in passable and n != self.pos) or (n == self.pos) else (c, d)
                if state in seen:
                    continue
                seen.add(state)
                act = d if first is None else first
                if goal(*state):
                    return ("move", act, state[0])
                queue.append((state[0], state[1], act))
        return None

    def bfs_face(self, targets: set, **kw):
        """Reach a state facing one of ``targets`` (cells)."""
        if not targets:
            return None
        return self.bfs(lambda c, f: (c[0] + f[0], c[1] + f[1]) in targets, **kw)

    def bfs_stand(self, pred, **kw):
        """Reach a cell satisfying ``pred(cell)`` (any facing)."""
        return self.bfs(lambda c, f: pred(c), **kw)

    def step_towards(self, d, dig_action: int) -> int:
        """The action that makes progress in direction ``d``: a move, or ``dig_action`` when facing a
        non-walkable cell the BFS planned to dig through."""
        n = (self.pos[0] + d[0], self.pos[1] + d[1])
        if self.facing == d and self.at(n) not in WALKABLE and self.at(n) not in CREATURES:
            return dig_action
        return MOVE_ACTION[d]

    def distances(self, radius: int, dig=frozenset(), avoid=frozenset()) -> dict:
        """Walking distance (moves, ignoring turns) from the player to every cell within ``radius``."""
        passable = WALKABLE | dig
        dist = {self.pos: 0}
        queue = deque([self.pos])
        while queue:
            c = queue.popleft()
            if dist[c] >= radius:
                continue
            for d in DIRS:
                n = (c[0] + d[0], c[1] + d[1])
                if n not in dist and n not in avoid and self.at(n) in passable:
                    dist[n] = dist[c] + 1
                    queue.append(n)
        return dist
