"""A reference tokenizer: a fixed, untrained encoding of Crafter's PRIVILEGED game state (``tokenizer.kind:
crafter_state``).

It never sees pixels. Its latents are read off the state the game records in every episode (the extras of
dreamer/envs/collect.py) and, when acting, off the env's ``info``: what the frame shows, exactly. It tells
whether phases 1-3 can learn at all when the tokenizer loses nothing; it is never what a pixel agent sees.

Layout, version 1 (``LAYOUT_VERSION``): one latent per frame (S = 1), N = 72 tokens of C = 24 channels,
float32 values (0/1 except daylight):

======  ===========  ==============================================================================
token   what         channels
======  ===========  ==============================================================================
0-62    view cells   one-hot of the cell's semantic id (channel = id, 0-18, ``SEMANTIC_NAMES``);
                     token 9·row + col for the screen cell at row = dy + 3 (0 = top), col = dx + 4
                     (0 = left) of the 9 × 7 cells around the player: ``local_view[:, col, row]``, so
                     the player is token 31 (row 3, col 4). Id 0 is "outside the world".
63-70   inventory    token 63 + j holds items 2j and 2j+1 of ``INVENTORY_NAMES`` (the game's order:
                     health, food, drink, energy, sapling, wood, stone, coal, iron, diamond, the three
                     pickaxes and the three swords) as thermometers of the count clipped to 0-9:
                     channel b (0-8) of item 2j and channel 9 + b of item 2j+1 are 1 iff count > b.
71      status       channels 0-3: one-hot facing, left (-1, 0), right (+1, 0), up (0, -1), down (0, +1);
                     channel 4: daylight in [0, 1] (the game's, 1 = noon); channel 5: 1 while sleeping.
======  ===========  ==============================================================================

Every other channel of every token is 0 (channels 19-23 always). A state comes from five arrays, the
episode extras ``local_view`` int16 (T, 9, 7), ``inventory`` int32 (T, 16), ``facing`` int8 (T, 2),
``daylight`` float32 (T,) and ``sleeping`` bool (T,) (see :func:`dreamer.envs.crafter_env.state_arrays`, the
conversion collection and acting share). An episode lacking one is refused, naming the file and the extra:
episodes collected before daylight and sleeping were recorded must be collected again.

Statistics: the cache standardises every channel with the training split's mean and std over all tokens
(docs/design.md §3). A channel that is rarely 1 (a rare material, a large count) would become a huge value
((1 - p) / sqrt(p) for frequency p), and one never seen in training (std 0) a value of 1e6 once it appears,
so this tokenizer asks the cache to floor every std at ``STD_FLOOR`` = 0.25 (``identity()['std_floor']``):
standardised latents then lie within ±4, and a channel that is always 0 stays 0.

``decode`` draws a latent as the game draws the state, with Crafter's own textures (the installed
``crafter`` package's assets): the 9 × 7 cells (argmax id per cell; a creature is drawn on grass, a skeleton
or an arrow on path, since the cell's material under it is not encoded; arrows point up, plants unripe),
dimmed by daylight as the game does (without the game's random night noise), grey when sleeping, and the
inventory below (icon and count). At Crafter's 64 × 64 the drawing equals the real frame to ±1 on every cell
without a creature, in daylight above 0.5 and awake (tests/tokenizer/test_crafter_state.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from dreamer.tokenizer.config import TokenizerConfig

log = logging.getLogger(__name__)

LAYOUT_VERSION = 1
SEMANTIC_NAMES = ("unknown", "water", "grass", "stone", "path", "sand", "tree", "lava", "coal", "iron", "diamond",
                  "table", "furnace", "player", "cow", "zombie", "skeleton", "arrow", "plant")
INVENTORY_NAMES = ("health", "food", "drink", "energy", "sapling", "wood", "stone", "coal", "iron", "diamond",
                   "wood_pickaxe", "stone_pickaxe", "iron_pickaxe", "wood_sword", "stone_sword", "iron_sword")
FACINGS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # left, right, up, down: status channels 0-3
FACING_TEXTURES = ("left", "right", "up", "down")
VIEW = (9, 7)  # (columns, rows) of cells the frame shows
VIEW_TOKENS = VIEW[0] * VIEW[1]  # 63
COUNT_BITS = 9  # thermometer of a count 0..9
ITEMS_PER_TOKEN = 2
INVENTORY_TOKENS = len(INVENTORY_NAMES) // ITEMS_PER_TOKEN  # 8
INVENTORY_TOKEN = VIEW_TOKENS  # the first inventory token (63)
STATUS_TOKEN = VIEW_TOKENS + INVENTORY_TOKENS  # 71
NUM_TOKENS = STATUS_TOKEN + 1  # 72
CHANNELS = 24  # >= 19 ids and 2 x 9 thermometer bits, padded to a multiple of 8
DAYLIGHT, SLEEPING = 4, 5  # status channels
STD_FLOOR = 0.25
EXTRAS = ("local_view", "inventory", "facing", "daylight", "sleeping")
PLAYER_TOKEN = VIEW_TOKENS // 2  # 31: row 3, col 4


def assets_dir() -> Path:
    """Crafter's textures (PNG files) in the installed package."""
    import crafter

    return Path(crafter.__file__).resolve().parent / "assets"


def check_game_layout() -> None:
    """The installed Crafter's semantic ids and inventory items must be the ones this layout documents."""
    from dreamer.envs.crafter_env import crafter_names, semantic_ids

    ids = semantic_ids()
    got = tuple(sorted(ids, key=ids.get))
    if got != SEMANTIC_NAMES or tuple(crafter_names()["inventory"]) != INVENTORY_NAMES:
        raise RuntimeError(f"crafter_state tokenizer: the installed crafter has semantic ids {got} and items "
                           f"{crafter_names()['inventory']}, layout {LAYOUT_VERSION} expects {SEMANTIC_NAMES} and "
                           f"{INVENTORY_NAMES}")


def encode_state(local_view, inventory, facing, daylight, sleeping) -> np.ndarray:
    """The five state arrays of T frames (as the episode extras) → latents float32 (T, N, C)."""
    lv = np.asarray(local_view)
    T = lv.shape[0]
    inv = np.asarray(inventory).reshape(T, -1)
    fac = np.asarray(facing).reshape(T, -1)
    day = np.asarray(daylight, dtype=np.float32).reshape(-1)
    sleep = np.asarray(sleeping).reshape(-1)
    shapes = {"local_view": (lv.shape, (T, *VIEW)), "inventory": (inv.shape, (T, len(INVENTORY_NAMES))),
              "facing": (fac.shape, (T, 2)), "daylight": (day.shape, (T,)), "sleeping": (sleep.shape, (T,))}
    for name, (got, want) in shapes.items():
        if tuple(got) != want:
            raise ValueError(f"crafter_state: {name} has shape {tuple(got)}, expected {want}")
    if lv.size and (lv.min() < 0 or lv.max() >= len(SEMANTIC_NAMES)):
        raise ValueError(f"crafter_state: local_view ids must lie in [0, {len(SEMANTIC_NAMES)}), got "
                         f"{int(lv.min())}..{int(lv.max())}")
    z = np.zeros((T, NUM_TOKENS, CHANNELS), dtype=np.float32)
    ids = lv.transpose(0, 2, 1).reshape(T, VIEW_TOKENS).astype(np.int64)  # screen row-major: [t, 9·row + col]
    z[np.arange(T)[:, None], np.arange(VIEW_TOKENS)[None, :], ids] = 1.0
    counts = np.clip(inv, 0, COUNT_BITS)
    bits = (counts[:, :, None] > np.arange(COUNT_BITS)[None, None, :]).astype(np.float32)  # (T, 16, 9)
    z[:, INVENTORY_TOKEN:STATUS_TOKEN, : ITEMS_PER_TOKEN * COUNT_BITS] = bits.reshape(T, INVENTORY_TOKENS, -1)
    code = {f: i for i, f in enumerate(FACINGS)}
    try:
        face = np.array([code[(int(dx), int(dy))] for dx, dy in fac], dtype=np.int64)
    except KeyError as e:
        raise ValueError(f"crafter_state: facing {e.args[0]} is not one of {list(FACINGS)}") from None
    z[np.arange(T), STATUS_TOKEN, face] = 1.0
    z[:, STATUS_TOKEN, DAYLIGHT] = day
    z[:, STATUS_TOKEN, SLEEPING] = sleep.astype(np.float32)
    return z


def decode_state(z) -> dict[str, np.ndarray]:
    """Raw (not standardised) latents (..., N, C) → the state arrays: local_view int16 (..., 9, 7) (argmax id
    per cell), inventory int32 (..., 16) (thermometer bits above 0.5), facing int8 (..., 2) (argmax), daylight
    float32 (...,) (clamped to [0, 1]) and sleeping bool (...,)."""
    z = np.asarray(z, dtype=np.float32)
    lead = z.shape[:-2]
    if z.shape[-2:] != (NUM_TOKENS, CHANNELS):
        raise ValueError(f"crafter_state: latents must end in ({NUM_TOKENS}, {CHANNELS}), got {z.shape}")
    ids = z[..., :VIEW_TOKENS, : len(SEMANTIC_NAMES)].argmax(-1).reshape(*lead, VIEW[1], VIEW[0])
    bits = z[..., INVENTORY_TOKEN:STATUS_TOKEN, : ITEMS_PER_TOKEN * COUNT_BITS].reshape(*lead, len(INVENTORY_NAMES),
                                                                                        COUNT_BITS)
    status = z[..., STATUS_TOKEN, :]
    return {
        "local_view": np.swapaxes(ids, -1, -2).astype(np.int16),
        "inventory": (bits > 0.5).sum(-1).astype(np.int32),
        "facing": np.asarray(FACINGS, dtype=np.int8)[status[..., : len(FACINGS)].argmax(-1)],
        "daylight": np.clip(status[..., DAYLIGHT], 0.0, 1.0).astype(np.float32),
        "sleeping": status[..., SLEEPING] > 0.5,
    }


class _Textures:
    """Crafter's textures at a size, resized (nearest) as the game does; RGB or RGBA uint8 (h, w, c)."""

    def __init__(self, root: Path):
        self.root, self._orig, self._sized = root, {}, {}

    def get(self, name: str, size: int) -> np.ndarray:
        key = (name, size)
        if key not in self._sized:
            from PIL import Image

            if name not in self._orig:
                self._orig[name] = np.array(Image.open(self.root / f"{name}.png"))
            img = Image.fromarray(self._orig[name]).resize((size, size), resample=Image.NEAREST)
            self._sized[key] = np.array(img)
        return self._sized[key]


def _draw(canvas: np.ndarray, r: int, c: int, tex: np.ndarray) -> None:
    h, w = tex.shape[:2]
    canvas[r : r + h, c : c + w] = tex[..., :3]


def _draw_alpha(canvas: np.ndarray, r: int, c: int, tex: np.ndarray) -> None:
    """Crafter's alpha blending (engine._draw_alpha), truncating to uint8 as the game does."""
    h, w = tex.shape[:2]
    if tex.shape[-1] == 4:
        alpha = tex[..., 3:].astype(np.float32) / 255
        cur = canvas[r : r + h, c : c + w].astype(np.float32) / 255
        tex = (255 * (alpha * (tex[..., :3].astype(np.float32) / 255) + (1 - alpha) * cur)).astype(np.uint8)
    canvas[r : r + h, c : c + w] = tex[..., :3]


def _enhance_colour(canvas: np.ndarray, factor: float) -> np.ndarray:
    from PIL import Image, ImageEnhance

    return np.array(ImageEnhance.Color(Image.fromarray(canvas.astype(np.uint8))).enhance(factor))


def _tint(canvas: np.ndarray, colour, amount: float) -> np.ndarray:
    return (1 - amount) * canvas + amount * np.array(colour)


UNDERLAY = {"skeleton": "path", "arrow": "path"}  # the material drawn under a creature (else grass)


def render_state(state: dict, size: int, textures: _Textures) -> np.ndarray:
    """One state (arrays of :func:`decode_state` without leading dims) → uint8 (size, size, 3), drawn as
    Crafter's ``Env.render`` with a 9 × 9 view: unit = size // 9 pixels per cell, 9 × 7 world cells above
    9 × 2 inventory cells, centred."""
    unit = size // VIEW[0]
    if unit < 1:
        raise ValueError(f"crafter_state.decode: size {size} is too small to draw 9 cells (at least 9 pixels)")
    lv, inv = state["local_view"], state["inventory"]
    facing = FACING_TEXTURES[FACINGS.index(tuple(int(v) for v in state["facing"]))]
    local = np.zeros((VIEW[1] * unit, VIEW[0] * unit, 3), dtype=np.uint8) + 127
    for col in range(VIEW[0]):
        for row in range(VIEW[1]):
            name = SEMANTIC_NAMES[int(lv[col, row])]
            if name == "unknown":  # outside the world: the game leaves the grey background
                continue
            r, c = row * unit, col * unit
            if SEMANTIC_NAMES.index(name) < SEMANTIC_NAMES.index("player"):  # a material
                _draw(local, r, c, textures.get(name, unit))
                continue
            _draw(local, r, c, textures.get(UNDERLAY.get(name, "grass"), unit))
            tex = {"player": "player-sleep" if state["sleeping"] else f"player-{facing}", "arrow": "arrow-up"}
            _draw_alpha(local, r, c, textures.get(tex.get(name, name), unit))
    daylight = float(state["daylight"])
    night = _tint(_enhance_colour(local, 0.4), (0, 16, 64), 0.5)
    lit = daylight * local + (1 - daylight) * night
    if state["sleeping"]:
        lit = _tint(_enhance_colour(lit, 0.0), (0, 0, 16), 0.5)
    items = np.zeros((2 * unit, VIEW[0] * unit, 3), dtype=np.uint8)
    for index, amount in enumerate(int(a) for a in inv):
        if amount < 1:
            continue
        c, r = index % VIEW[0], index // VIEW[0]
        _draw_alpha(items, int(r * unit + 0.1 * unit), int(c * unit + 0.1 * unit),
                    textures.get(INVENTORY_NAMES[index], int(0.8 * unit)))
        _draw_alpha(items, int(r * unit + 0.4 * unit), int(c * unit + 0.4 * unit),
                    textures.get(str(amount) if amount < 10 else "unknown", int(0.6 * unit)))
    view = np.concatenate([lit, items], 0)
    out = np.zeros((size, size, 3), dtype=np.uint8)
    border = (size - unit * VIEW[0]) // 2
    out[border : border + view.shape[0], border : border + view.shape[1]] = view  # truncates, as the game
    return out


class CrafterStateTokenizer(torch.nn.Module):
    """The frozen, untrained encoding of Crafter's privileged state (layout: the module docstring).

    The duck-typed interface of :class:`dreamer.tokenizer.CosmosTokenizerWrapper`: ``S`` (1), ``num_tokens``,
    ``channels``, ``cfg``, ``identity()``, ``latent_steps()``, ``device``, ``encode_episode(ep)``, ``decode``;
    plus ``encode_infos(infos)`` for acting (``reads_info``: the actor passes the env's info, privileged) and
    ``encode_state(...)``. ``encode(frames)`` is refused: there is no pixel path.
    """

    reads_info = True  # acting encodes the env's info, not the frames (dreamer/agent/acting.py)

    def __init__(self, cfg: TokenizerConfig | None = None):
        super().__init__()
        self.cfg = cfg or TokenizerConfig(kind="crafter_state")
        if self.cfg.kind != "crafter_state":
            raise ValueError(f"CrafterStateTokenizer: tokenizer.kind={self.cfg.kind!r}, expected 'crafter_state'")
        check_game_layout()
        self.S, self.num_tokens, self.channels = 1, NUM_TOKENS, CHANNELS
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # carries the device; no weights
        self._textures = _Textures(assets_dir())
        self._identity: dict | None = None
        self.train(False)

    def train(self, mode: bool = True):  # frozen: stays in eval mode whatever the caller asks
        return super().train(False)

    def latent_steps(self, num_frames: int) -> int:
        if num_frames < 1:
            raise ValueError(f"need at least one frame, got {num_frames}")
        return int(num_frames)

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    def identity(self) -> dict:
        """Kind, layout version and the layout itself; ``weights_sha256`` holds a hash of the rest (there are
        no weights; the field keeps the code that names tokenizers by that hash working). Differs from every
        Cosmos identity (which has no ``kind``) and changes with the layout."""
        if self._identity is None:
            ident = {"kind": "crafter_state", "layout_version": LAYOUT_VERSION, "num_tokens": NUM_TOKENS,
                     "channels": CHANNELS, "view": list(VIEW), "semantic_ids": list(SEMANTIC_NAMES),
                     "inventory": list(INVENTORY_NAMES), "count_bits": COUNT_BITS, "facings": [list(f) for f in FACINGS],
                     "temporal_compression": 1, "std_floor": STD_FLOOR}
            ident["weights_sha256"] = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
            self._identity = ident
        return self._identity

    # ---- encoding ----------------------------------------------------------------------------------------
    def encode_state(self, local_view, inventory, facing, daylight, sleeping) -> torch.Tensor:
        """State arrays of T frames → latents (T, N, C) float32 on ``device`` (:func:`encode_state`)."""
        return torch.from_numpy(encode_state(local_view, inventory, facing, daylight, sleeping)).to(self.device)

    def encode_episode(self, ep, path=None) -> torch.Tensor:
        """An Episode's extras → latents (T+1, N, C) float32, one per frame; refuses an episode lacking one of
        ``EXTRAS`` with an EpisodeError naming ``path`` and the extra."""
        from dreamer.data.episode import EpisodeError

        for name in EXTRAS:
            if name not in ep.extras:
                raise EpisodeError(path, f"extras/{name}", "missing: tokenizer.kind=crafter_state encodes the "
                                   f"recorded Crafter state {list(EXTRAS)} (episode extras {sorted(ep.extras)}); "
                                   "collect the episodes again with dreamer.envs.collect")
        try:
            return self.encode_state(*(ep.extras[k] for k in EXTRAS))
        except ValueError as e:
            raise EpisodeError(path, "extras", str(e)) from e

    def encode_infos(self, infos) -> torch.Tensor:
        """The env's ``info`` of E running episodes (privileged: the game state, not the observation) → latents
        (E, N, C) float32, exactly the cache's for the same state (:func:`dreamer.envs.crafter_env.state_arrays`,
        the conversion collection uses)."""
        from dreamer.envs.crafter_env import state_arrays

        s = state_arrays(infos)
        return self.encode_state(*(s[k] for k in EXTRAS))

    def encode(self, frames):
        raise TypeError("tokenizer.kind=crafter_state encodes Crafter's privileged state, not frames: use "
                        "encode_episode(episode) (its recorded extras) or encode_infos(infos) (the env's info)")

    def encode_latent(self, frames, k: int):
        raise TypeError("tokenizer.kind=crafter_state does not encode frames: acting passes the env's infos "
                        "(ChunkActor.act(observations, infos)), encoded with encode_infos")

    # ---- decoding ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, latents_btnc, mean=None, std=None, size: int | None = None) -> torch.Tensor:
        """Latents (B, T, N, C) → uint8 frames (B, T, size, size, 3) drawn from the decoded state (default size
        64, Crafter's frame). With ``mean``/``std`` (C,) the latents are standardised ones, mapped back first."""
        z = torch.as_tensor(latents_btnc).detach().float().cpu()
        if mean is not None:
            z = z * torch.as_tensor(np.asarray(std, dtype=np.float32)) + torch.as_tensor(np.asarray(mean, dtype=np.float32))
        if z.dim() != 4:
            raise ValueError(f"crafter_state.decode: latents must be (B, T, N, C), got {tuple(z.shape)}")
        B, T = z.shape[:2]
        size = int(size or 64)
        states = decode_state(z.numpy())
        out = np.zeros((B, T, size, size, 3), dtype=np.uint8)
        for b in range(B):
            for t in range(T):
                out[b, t] = render_state({k: v[b, t] for k, v in states.items()}, size, self._textures)
        return torch.from_numpy(out).to(self.device)


def check_episode_files(paths) -> None:
    """Refuse, before any encoding, the first episode file that lacks one of ``EXTRAS`` (reads the names only)."""
    from dreamer.data.episode import EpisodeError

    for p in paths:
        with np.load(p, allow_pickle=False) as z:
            have = {k[len("extra__"):] for k in z.files if k.startswith("extra__")}
        missing = [k for k in EXTRAS if k not in have]
        if missing:
            raise EpisodeError(p, f"extras/{missing[0]}", f"missing {missing}: tokenizer.kind=crafter_state encodes the "
                               f"recorded Crafter state {list(EXTRAS)} (the file has {sorted(have)}); collect the "
                               "episodes again (episodes collected before daylight and sleeping were recorded lack them)")
