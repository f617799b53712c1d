"""State probes: does the latent carry the game state an agent needs? (docs/tokenizer.md)

    python -m diagnostics.probe --config configs/crafter_small.yaml [--set ...] [--pixels]

A small network reads one cached latent step (standardised, N tokens × C channels) and predicts the Crafter
state at the last frame that latent covers (frame S·k of latent k), from the episode's extras:
- the player's inventory: 16 counts (health, food, drink, energy, items, tools), each a class 0…9;
- whether each of ``MATERIALS`` is in the 3 × 3 cells two cells away from the player (from the adjacent cell
  to three cells away, one to each side) in each of the four directions; it is scored on the direction the
  player faces, "in front of the player", by balanced accuracy.
It trains on the cache's training episodes and reports held-out accuracy next to the majority answer
(the most common training label, which a probe that learned nothing reaches). ``--pixels`` fits the
same probe on the frames averaged to the token grid's colours instead: the training-free reference.

The probe is built to read what a latent holds, not to be a second agent: one map shared by every token first
(C → 32), then one hidden layer over all tokens; the near-material flags of all four directions are targets
(four times the labels of the faced block alone), each flag's binary cross-entropy weighted by its
negatives / positives, since balanced accuracy is what it is scored on. On crafter_small's latents the state
encoder, which holds the view exactly, reads 0.98 in front (a probe of the flattened latent fitted on the faced
block alone read 0.79 from it).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)
MATERIALS = ("tree", "water", "stone", "cow", "zombie")
COUNT_CLASSES = 10  # Crafter inventories hold 0…9 of each item


def near_flags_around(local_view_t97: np.ndarray) -> np.ndarray:
    """(T, 4, len(MATERIALS)) bool: material m in the 3 × 3 cells centred two cells from the player towards
    direction d (``FACINGS``' order: left, right, up, down).

    ``local_view`` (T, 9, 7) holds the semantic ids around the player, indexed [dx + 4, dy + 3]."""
    from dreamer.envs.crafter_env import semantic_ids
    from dreamer.tokenizer.crafter_state import FACINGS

    ids = np.array([semantic_ids()[m] for m in MATERIALS])
    view = np.asarray(local_view_t97)
    out = np.zeros((len(view), len(FACINGS), len(MATERIALS)), dtype=bool)
    for d, (fx, fy) in enumerate(FACINGS):
        cx, cy = 4 + 2 * fx, 3 + 2 * fy
        block = view[:, max(0, cx - 1) : cx + 2, max(0, cy - 1) : cy + 2].reshape(len(view), -1)
        out[:, d] = (block[:, :, None] == ids).any(1)
    return out


def facing_index(facing_t2: np.ndarray) -> np.ndarray:
    """(T,) int64: the index in ``FACINGS`` of each (dx, dy) facing (down for anything else, the game's start)."""
    from dreamer.tokenizer.crafter_state import FACINGS

    lookup = {f: i for i, f in enumerate(FACINGS)}
    return np.array([lookup.get((int(x), int(y)), 3) for x, y in np.asarray(facing_t2)], dtype=np.int64)


def near_flags(local_view_t97: np.ndarray, facing_t2: np.ndarray) -> np.ndarray:
    """(T, len(MATERIALS)) bool: material m in the 3 × 3 cells centred two cells in front of the player."""
    return near_flags_around(local_view_t97)[np.arange(len(facing_t2)), facing_index(facing_t2)]


def episode_targets(extras: dict, S: int, L: int) -> dict[str, np.ndarray]:
    """Targets of latent steps 0…L−1 (frame min(S·k, T) of each): inventory (L, 16) int, around (L, 4, M) bool,
    facing (L,) int (the direction in front), near (L, M) bool (around at the facing)."""
    missing = [k for k in ("inventory", "local_view", "facing") if k not in extras]
    if missing:
        raise KeyError(f"the episode has no extras {missing}: collect Crafter episodes again (dreamer.envs.collect)")
    frames = np.minimum(np.arange(L) * S, len(extras["inventory"]) - 1)
    inv = np.clip(extras["inventory"][frames], 0, COUNT_CLASSES - 1).astype(np.int64)
    around, facing = near_flags_around(extras["local_view"][frames]), facing_index(extras["facing"][frames])
    return {"inventory": inv, "around": around, "facing": facing, "near": around[np.arange(L), facing]}


TARGETS = ("inventory", "around", "facing", "near")


def pixel_features(frames_thwc: np.ndarray, grid: int) -> torch.Tensor:
    """uint8 frames (T, H, W, 3) averaged to grid × grid colours in [0, 1]: (T, grid·grid, 3), a token per cell."""
    f = torch.from_numpy(np.ascontiguousarray(frames_thwc)).permute(0, 3, 1, 2).float() / 255.0
    return F.adaptive_avg_pool2d(f, grid).flatten(2).transpose(1, 2)


def dataset(cache, names: list[str], pixels: bool = False, pool: int = 1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Inputs (n, N, C) and targets (:func:`episode_targets`) over every latent step of ``names``.

    Inputs are the standardised latents, or with ``pixels`` the frame S·k averaged to the token grid's colours
    (g·g tokens of 3, scaled to [0, 1]). ``pool`` > 1 first averages pool × pool tokens (what a
    coarser token grid of the same tokenizer would hold: 64 tokens with pool 2 give 16)."""
    from dreamer.data.episode import load_episode

    xs, ys = [], {k: [] for k in TARGETS}
    N = cache.episode(names[0]).latents.shape[1]
    if pool > 1 and not pixels and math.isqrt(N) ** 2 != N:
        raise ValueError(f"--pool {pool}: the {N} tokens of this cache are not a square grid (crafter_state?)")
    g = math.isqrt(N) // pool
    for name in names:
        e = cache.episode(name)
        ep = load_episode(cache.manifest["sources"][name]["path"])
        L = len(e)
        t = episode_targets(ep.extras, cache.chunk_len, L)
        if pixels:
            idx = np.minimum(np.arange(L) * cache.chunk_len, len(ep.frames) - 1)
            xs.append(pixel_features(ep.frames[idx], g))
        else:
            z = torch.from_numpy(cache.standardise(np.asarray(e.latents)))  # (L, N, C)
            if pool > 1:
                grid = z.transpose(1, 2).reshape(L, -1, g * pool, g * pool)
                z = F.avg_pool2d(grid, pool).flatten(2).transpose(1, 2)
            xs.append(z)
        for k, rows in ys.items():
            rows.append(torch.from_numpy(t[k]))
    return torch.cat(xs).float(), {k: torch.cat(v) for k, v in ys.items()}


class Probe(nn.Module):
    """x (n, N, C) → inventory logits (n, 16, 10) and near-material logits (n, 4, M), one per direction.

    One map shared by every token (C → ``token_width``), then one hidden layer over all tokens."""

    def __init__(self, tokens: int, channels: int, items: int, hidden: int = 256, token_width: int = 32):
        super().__init__()
        self.items = items
        self.token = nn.Sequential(nn.Linear(channels, token_width), nn.ReLU())
        self.net = nn.Sequential(nn.Linear(tokens * token_width, hidden), nn.ReLU(),
                                 nn.Linear(hidden, items * COUNT_CLASSES + 4 * len(MATERIALS)))

    def forward(self, x_nnc):
        out = self.net(self.token(x_nnc).flatten(1))
        k = self.items * COUNT_CLASSES
        return out[:, :k].view(-1, self.items, COUNT_CLASSES), out[:, k:].view(-1, 4, len(MATERIALS))


def fit_probe(x_train, y_train, epochs: int = 30, batch: int = 512, lr: float = 1e-3, seed: int = 0) -> Probe:
    """AdamW on the inventory's cross-entropy plus the near flags' binary cross-entropies (every direction's, each
    flag's positives weighted by its negatives / positives in training), inputs (n, N, C) normalised per feature by
    the training mean and std."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mu, sd = x_train.mean(0), x_train.std(0)
    # a feature constant over the training set (a one-hot never set there: crafter_state) is left unscaled, so one
    # held-out sample that sets it is not blown up to 1e6; features that vary (every Cosmos one) are unaffected
    sd = torch.where(sd < 1e-6, torch.ones_like(sd), sd)
    probe = Probe(x_train.shape[1], x_train.shape[2], y_train["inventory"].shape[1])
    probe.register_buffer("mu", mu)
    probe.register_buffer("sd", sd)
    around = y_train["around"].float()
    pos = around.mean(0)
    pos_weight = torch.where(pos > 0, (1 - pos) / pos.clamp_min(1e-6), torch.ones_like(pos))  # (4, M)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-4)
    n = len(x_train)
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=g).split(batch):
            inv, near = probe((x_train[idx] - mu) / sd)
            loss = F.cross_entropy(inv.flatten(0, 1), y_train["inventory"][idx].flatten()) + \
                F.binary_cross_entropy_with_logits(near, around[idx], pos_weight=pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return probe


@torch.no_grad()
def score(probe: Probe, x, y, y_train, item_names) -> dict:
    """Held-out accuracy of the probe and of the majority (training) answer, per target and averaged; the near
    flags are read in the direction the player faces."""
    inv, near = probe((x - probe.mu) / probe.sd)
    near = near[torch.arange(len(x)), y["facing"]]  # (n, M): in front
    inv_hit = (inv.argmax(-1) == y["inventory"]).float().mean(0)
    maj_inv = torch.stack([torch.bincount(c, minlength=COUNT_CLASSES).argmax() for c in y_train["inventory"].T])
    maj_inv_hit = (y["inventory"] == maj_inv).float().mean(0)
    near_pred, truth = near > 0, y["near"]
    maj_near = y_train["near"].float().mean(0) > 0.5
    out = {"samples": len(x), "inventory": {}, "near": {}}
    for i, name in enumerate(item_names):
        out["inventory"][name] = {"accuracy": float(inv_hit[i]), "majority": float(maj_inv_hit[i])}
    for m, name in enumerate(MATERIALS):
        pos, neg = truth[:, m], ~truth[:, m]
        recall_pos = float((near_pred[:, m] & pos).sum() / pos.sum().clamp_min(1))
        recall_neg = float((~near_pred[:, m] & neg).sum() / neg.sum().clamp_min(1))
        out["near"][name] = {"accuracy": float((near_pred[:, m] == truth[:, m]).float().mean()),
                             "majority": float((truth[:, m] == maj_near[m]).float().mean()),
                             "balanced_accuracy": (recall_pos + recall_neg) / 2, "base_rate": float(pos.float().mean())}
    out["inventory_mean"] = {k: float(np.mean([v[k] for v in out["inventory"].values()])) for k in ("accuracy", "majority")}
    out["near_mean"] = {k: float(np.mean([v[k] for v in out["near"].values()]))
                        for k in ("accuracy", "majority", "balanced_accuracy")}
    return out


def run_probe(cache, pixels: bool = False, epochs: int = 30, seed: int = 0, pool: int = 1) -> dict:
    """Fit on the cache's training episodes, score on its held-out ones (``pool``: see :func:`dataset`)."""
    from dreamer.envs.crafter_env import crafter_names

    if not cache.val_names:
        raise ValueError(f"latent cache {cache.root} has no held-out episodes (data.val_fraction=0): nothing to probe on")
    x_tr, y_tr = dataset(cache, cache.train_names, pixels, pool)
    x_va, y_va = dataset(cache, cache.val_names, pixels, pool)
    probe = fit_probe(x_tr, y_tr, epochs=epochs, seed=seed)
    out = score(probe, x_va, y_va, y_tr, crafter_names()["inventory"])
    out.update(input="pixels" if pixels else "latents", pool=pool, features=int(x_tr[0].numel()), train_samples=len(x_tr),
               S=cache.chunk_len, tokenizer=cache.tokenizer_identity["weights_sha256"][:12],
               tokenizer_kind=cache.tokenizer_identity.get("kind", "cosmos"))
    return out


def _summary(score_: dict) -> dict:
    """The three figures of a probe's score that the tokenizer is judged by (docs/tokenizer.md)."""
    near = score_["near"]
    return {"inventory": score_["inventory_mean"]["accuracy"], "in_front_balanced": score_["near_mean"]["balanced_accuracy"],
            "creatures_balanced": float(np.mean([near[m]["balanced_accuracy"] for m in ("cow", "zombie")]))}


def tokenizer_probe(encode_window, frames: dict[str, np.ndarray], extras: dict[str, dict], train_names: list[str],
                    val_names: list[str], S: int, m: int, stride: int = 4, epochs: int = 30, seed: int = 0,
                    batch: int = 64) -> dict:
    """Phase 0's figure: the held-out state probe on the fitted latents beside its two references, without a cache.

    Every ``stride``-th latent step k >= m of every episode is encoded as the cache encodes it (the window of
    :func:`dreamer.tokenizer.cosmos.latent_window`, its last latent; ``encode_window`` maps uint8 windows
    (B, T, H, W, 3) of one length to latents (B, T_lat, N, C)); the same probe is fitted on the training episodes'
    steps and scored on the held-out ones for three inputs: ``latents`` (the fitted tokenizer's), ``pixels`` (the
    frame averaged to the token grid's colours, the training-free reference) and ``state`` (the privileged
    crafter_state encoding of the same frame, the ceiling). Returns {input: score (:func:`score`) with its
    ``summary``: inventory accuracy, in-front balanced accuracy, creatures (cow, zombie) balanced accuracy}."""
    from dreamer.envs.crafter_env import crafter_names
    from dreamer.tokenizer.cosmos import latent_steps, latent_window
    from dreamer.tokenizer.crafter_state import EXTRAS, encode_state

    have_state = all(k in next(iter(extras.values())) for k in EXTRAS)
    sets = {}
    for split, names in (("train", train_names), ("val", val_names)):
        xs, ys = {"latents": [], "pixels": [], "state": []}, {k: [] for k in TARGETS}
        for name in names:
            f, ex = frames[name], extras[name]
            L = latent_steps(len(f), S)
            ks = np.arange(m, L, stride)
            t = episode_targets(ex, S, L)
            for key, rows in ys.items():
                rows.append(torch.from_numpy(t[key][ks]))
            by_len: dict[int, list[int]] = {}
            for i, k in enumerate(ks):
                a, b = latent_window(int(k), S, m)
                by_len.setdefault(b - a, []).append(i)
            z = [None] * len(ks)
            for idx in by_len.values():
                for j in range(0, len(idx), batch):
                    part = idx[j : j + batch]
                    win = np.stack([f[slice(*latent_window(int(ks[i]), S, m))] for i in part])
                    with torch.no_grad():  # only the encode: the probes below need gradients
                        out = encode_window(torch.from_numpy(win))[:, -1].float().cpu()  # (B, N, C)
                    for i, row in zip(part, out):
                        z[i] = row
            z = torch.stack(z)
            xs["latents"].append(z)
            fr = np.minimum(ks * S, len(f) - 1)
            xs["pixels"].append(pixel_features(f[fr], math.isqrt(z.shape[1])))
            if have_state:
                xs["state"].append(torch.from_numpy(encode_state(*(np.asarray(ex[k])[fr] for k in EXTRAS))))
        sets[split] = (xs, {k: torch.cat(v) for k, v in ys.items()})
    out = {}
    names = crafter_names()["inventory"]
    (x_tr, y_tr), (x_va, y_va) = sets["train"], sets["val"]
    for key in ("latents", "pixels", "state"):
        if key == "state" and not have_state:
            continue
        tr, va = torch.cat(x_tr[key]).float(), torch.cat(x_va[key]).float()
        probe = fit_probe(tr, y_tr, epochs=epochs, seed=seed)
        out[key] = score(probe, va, y_va, y_tr, names)
        out[key].update(summary=_summary(out[key]), train_samples=len(tr), stride=stride, features=int(tr[0].numel()))
    return out


def main(argv=None) -> dict:
    """The command line: an inspection that reads the run's cache (building it when missing) and writes
    one JSON file; it does not take the run folder's lock, so it may run beside training."""
    from dreamer.atomic import atomic_write_bytes
    from dreamer.pipeline.cli import parse_args
    from dreamer.pipeline.data import prepare_data
    from dreamer.training.runtime import Runtime, pick_device, setup_logging

    def extra(p: argparse.ArgumentParser):
        p.add_argument("--pixels", action="store_true", help="probe the frames' token-grid colours instead")
        p.add_argument("--epochs", type=int, default=30)
        p.add_argument("--pool", type=int, default=1, help="average pool x pool tokens first (e.g. 2: 64 -> 16 tokens)")
        p.add_argument("--out", default=None, help="write the figures here as JSON (default <run dir>/probe_*.json)")
        p.add_argument("--stride", type=int, default=0,
                       help="no cache: encode every STRIDE-th latent of the episodes with the config's tokenizer and "
                            "probe it beside the token-grid colours and the state encoder, as phase 0 ends")

    cfg, args = parse_args(__doc__, argv, extra)
    setup_logging()
    if args.stride > 0:
        return _main_no_cache(cfg, args)
    _, cache = prepare_data(Runtime(cfg=cfg, device=pick_device(cfg.device)))
    out = run_probe(cache, args.pixels, args.epochs, cfg.seed, args.pool)
    suffix = f"_pool{args.pool}" if args.pool > 1 else ""
    path = Path(args.out) if args.out else cfg.run_dir / f"probe_{out['input']}{suffix}.json"
    atomic_write_bytes(path, json.dumps(out, indent=1).encode())
    log.info("state probe on %s (%s): inventory accuracy %.3f (majority %.3f); near-material accuracy %.3f "
             "(majority %.3f, balanced %.3f); written to %s", out["input"], cache.root,
             out["inventory_mean"]["accuracy"], out["inventory_mean"]["majority"], out["near_mean"]["accuracy"],
             out["near_mean"]["majority"], out["near_mean"]["balanced_accuracy"], path)
    return out


def _main_no_cache(cfg, args) -> dict:
    """``--stride``: :func:`tokenizer_probe` on the config's pixel tokenizer and the episodes of data.episodes_dir."""
    from dreamer.atomic import atomic_write_bytes
    from dreamer.data.cache import split_names
    from dreamer.data.episode import list_episodes, load_episode
    from dreamer.tokenizer import CosmosTokenizerWrapper

    tok = CosmosTokenizerWrapper(cfg=cfg.tokenizer)
    paths = list_episodes(Path(cfg.data.episodes_dir))
    eps = {Path(p).stem: load_episode(p) for p in paths}
    train, val = split_names(sorted(eps), cfg.data.val_fraction, cfg.data.split_seed)
    out = tokenizer_probe(tok.encode_clip, {n: e.frames for n, e in eps.items()}, {n: e.extras for n, e in eps.items()},
                          train, val, tok.S, cfg.tokenizer.window_latents, args.stride, args.epochs, cfg.seed)
    path = Path(args.out) if args.out else cfg.run_dir / f"probe_stride{args.stride}.json"
    atomic_write_bytes(path, json.dumps(out, indent=1).encode())
    for k, v in out.items():
        log.info("state probe (held out, every %d-th latent) on %s: inventory %.3f, in front balanced %.3f, "
                 "cow and zombie in front balanced %.3f", args.stride, k, v["summary"]["inventory"],
                 v["summary"]["in_front_balanced"], v["summary"]["creatures_balanced"])
    log.info("written to %s", path)
    return out


if __name__ == "__main__":
    from dreamer.errors import run_cli

    run_cli(main)
