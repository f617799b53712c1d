"""Where the scripted Crafter policy walls itself in for the night.

A shelter is a 2×2 room or a 1×2 corridor of walkable (or diggable stone) cells. Zombies attack from
the 4-neighbourhood only, so the room is safe once no walkable cell touches it. The player can face
(and wall with stone) only those outside cells that lie straight past another room cell: every outside
cell of a 2×2 room qualifies, only the two end cells of a corridor do (its sides must already be
blocked).
"""

from __future__ import annotations

from dreamer.envs.crafter_nav import CREATURES, DIRS, IDS, WALKABLE, GridView

OPEN = WALKABLE | CREATURES  # outside cells a zombie could stand on next to a sleeping player
SHAPES = (((0, 0), (1, 0)), ((0, 0), (0, 1)), ((0, 0), (1, 0), (0, 1), (1, 1)))


def shelter_gaps(v: GridView, room) -> set:
    """Outside neighbours of ``room`` that are still open to zombies."""
    out = {(c[0] + d[0], c[1] + d[1]) for c in room for d in DIRS} - set(room)
    return {o for o in out if v.at(o) in OPEN and o != v.pos}


def shelter_ok(v: GridView, room, stone: int, dig: frozenset) -> bool:
    """Cells usable (walkable, or stone we can dig) and enough stone to close every gap."""
    stone_id = IDS["stone"]
    if not all(v.walkable(c) or (v.at(c) == stone_id and stone_id in dig) for c in room):
        return False
    return len(shelter_gaps(v, room)) <= stone + sum(v.at(c) == stone_id for c in room)


def corridor_sealable(v: GridView, room) -> bool:
    """In a 1×2 corridor only the two end cells can be faced from inside."""
    a, b = sorted(room)
    d = (b[0] - a[0], b[1] - a[1])
    ends = {(a[0] - d[0], a[1] - d[1]), (b[0] + d[0], b[1] + d[1])}
    return shelter_gaps(v, room) <= ends


def find_shelter(v: GridView, stone: int, dig: frozenset, avoid: frozenset, skeletons: set):
    """The cheapest room within 16 steps (walk + 3 per stone to place or dig), away from lava and
    skeletons; None if there is none."""
    best, best_cost = None, None
    dist = v.distances(16, dig=dig, avoid=avoid)
    lava, stone_id = IDS["lava"], IDS["stone"]
    for (x, y), steps in dist.items():
        if any(abs(x - sx) + abs(y - sy) <= 6 for sx, sy in skeletons):
            continue
        for shape in SHAPES:
            room = frozenset((x + dx, y + dy) for dx, dy in shape)
            if not shelter_ok(v, room, stone, dig) or any(v.nearby({lava}, c) for c in room):
                continue
            if len(room) == 2 and not corridor_sealable(v, room):
                continue
            cost = steps + 3 * len(shelter_gaps(v, room)) + 3 * sum(v.at(c) == stone_id for c in room)
            if best_cost is None or cost < best_cost:
                best, best_cost = room, cost
    return best
