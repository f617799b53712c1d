"""Do the cached latents line up with the actions? Which action best explains each latent step's change.

    python -m diagnostics.alignment --config configs/crafter_small.yaml

The cache pairs the change from latent k-1 to latent k with the chunk ``actions[k-1]`` (docs/design.md §3). For
every step of every cached episode this measures the change ``mean((z_k - z_{k-1})^2)`` of the standardised
latents and how much of its variance the action explains (eta squared: the between-action share of the variance,
grouped by the first component of the chunk's first sub-step) when the change is paired with ``actions[k-1+d]``
for d = -2 .. 2. In a cache that lines up, d = 0 explains the most: a move changes the view, a noop hardly
anything. A tokenizer whose latents run a step behind their frames (at S = 1, a causal window of two frames:
docs/tokenizer.md, "One frame per latent") peaks at d = -1, and a world model trained on it is handed the next
action instead of the one that caused the change.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)
OFFSETS = (-2, -1, 0, 1, 2)


def eta_squared(values: np.ndarray, groups: np.ndarray) -> float:
    """Share of the variance of ``values`` explained by the group means of ``groups`` (0 .. 1)."""
    total = float(((values - values.mean()) ** 2).sum())
    if total <= 0:
        return 0.0
    between = sum(float((values[groups == g].mean() - values.mean()) ** 2) * int((groups == g).sum())
                  for g in np.unique(groups))
    return between / total


def action_alignment(episodes: list[tuple[np.ndarray, np.ndarray, np.ndarray]], offsets=OFFSETS) -> dict:
    """``episodes``: (standardised latents (L, N, C), actions (L, S, D), action_mask (L, S)) per episode →
    {"eta2": {d: eta squared}, "best_offset": d, "steps": n}. The change into latent k is paired with
    ``actions[k-1+d]`` where that chunk is valid."""
    vals: dict[int, list[float]] = {d: [] for d in offsets}
    acts: dict[int, list[int]] = {d: [] for d in offsets}
    for z, a, m in episodes:
        change = ((z[1:] - z[:-1]) ** 2).mean((1, 2))  # change[k-1]: latent k-1 -> k
        for d in offsets:
            for k in range(1, len(z)):
                j = k - 1 + d
                if 0 <= j < len(a) and bool(m[j, 0]):
                    vals[d].append(float(change[k - 1]))
                    acts[d].append(int(a[j, 0, 0]))
    eta = {d: round(eta_squared(np.asarray(vals[d]), np.asarray(acts[d])), 4) for d in offsets if vals[d]}
    return {"eta2": eta, "best_offset": max(eta, key=eta.get), "steps": len(vals[0])}


def main(argv=None) -> dict:
    """The command line: reads the run's cache (built by phase 1) and logs the figures; writes nothing."""
    from dreamer.data.cache import LatentCache
    from dreamer.pipeline.cli import parse_args
    from dreamer.training.runtime import setup_logging

    cfg, _ = parse_args(__doc__, argv)
    setup_logging()
    cache = LatentCache(cfg.data.cache_dir)
    mean, std = np.asarray(cache.mean, dtype=np.float32), np.asarray(cache.std, dtype=np.float32)
    episodes = []
    for name in cache.train_names + cache.val_names:
        ep = cache.episode(name)
        z = (np.asarray(ep.latents, dtype=np.float32) - mean) / std
        episodes.append((z, np.asarray(ep.actions), np.asarray(ep.action_mask)))
    out = action_alignment(episodes)
    line = ", ".join(f"d {d:+d}: {v:.3f}" for d, v in out["eta2"].items())
    if out["best_offset"] == 0:
        log.info("action alignment of %s: the change into latent k is best explained by actions[k-1] (eta squared "
                 "%s; %d steps)", cache.root, line, out["steps"])
    else:
        log.warning("action alignment of %s: the change into latent k is best explained by actions[k-1%+d], not "
                    "actions[k-1] (eta squared %s): the latents are out of step with the actions (docs/tokenizer.md, "
                    "'One frame per latent')", cache.root, out["best_offset"], line)
    return out


if __name__ == "__main__":
    from dreamer.errors import run_cli

    run_cli(main)
