"""Training clips from the latent cache.

``ClipSampler.batch(step)`` draws B clips of T latent steps uniformly over all (episode, start)
pairs (:class:`UniformClipDraw`). The draw depends only on (seed, rank, step), so a resumed run sees
exactly the batches it would have seen, and distributed ranks see different clips without coordinating.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from dreamer.data.cache import LatentCache
from dreamer.errors import ConfigError

log = logging.getLogger(__name__)


class UniformClipDraw:
    """A uniform draw over every (item, start) pair, ``starts[i]`` starts for item i; the one clip draw of
    the project (latent clips here, frame clips in :class:`dreamer.tokenizer.fit.FrameClipSampler`).

    ``draw(step)`` depends only on (seed, rank, step): a resumed run repeats its batches, and distributed
    ranks draw different clips without coordinating.
    """

    def __init__(self, starts: np.ndarray, batch_size: int, seed: int = 0, rank: int = 0):
        self._cum = np.cumsum(np.asarray(starts, dtype=np.int64))  # clip index -> (item, start)
        self.batch_size, self.seed, self.rank = batch_size, seed, rank

    @property
    def total(self) -> int:
        return int(self._cum[-1])

    def draw(self, step: int) -> list[tuple[int, int]]:
        """(item index, start index) of each clip of batch ``step`` for this rank."""
        rng = np.random.default_rng([self.seed, self.rank, step])
        idx = rng.integers(0, self.total, size=self.batch_size)
        item = np.searchsorted(self._cum, idx, side="right")
        first = np.concatenate([[0], self._cum[:-1]])
        return [(int(e), int(i - first[e])) for e, i in zip(item, idx)]


class ClipSampler:
    def __init__(self, cache: LatentCache, names: list[str], clip_len: int, batch_size: int, seed: int = 0,
                 rank: int = 0, device: str | torch.device = "cpu"):
        self.cache, self.clip_len, self.batch_size = cache, clip_len, batch_size
        self.seed, self.rank, self.device = seed, rank, torch.device(device)
        lengths = {n: len(cache.episode(n)) for n in names}
        self.names = [n for n in names if lengths[n] >= clip_len]
        short = [n for n in names if lengths[n] < clip_len]
        if short:
            listed = ", ".join(f"{cache.manifest['sources'][n]['path']} ({lengths[n]} latent steps, "
                               f"{cache.manifest['sources'][n].get('num_steps', '?')} env steps)" for n in short[:5])
            log.warning("%d of %d episodes are shorter than data.clip_len=%d latent steps and are skipped: %s%s",
                        len(short), len(names), clip_len, listed, f" and {len(short) - 5} more" if len(short) > 5 else "")
        if not self.names:
            raise ConfigError(f"no episode in {cache.root} has data.clip_len={clip_len} latent steps "
                             f"(longest: {max(lengths.values(), default=0)}); lower data.clip_len")
        starts = np.array([lengths[n] - clip_len + 1 for n in self.names], dtype=np.int64)
        self._draw = UniformClipDraw(starts, batch_size, seed, rank)

    @property
    def num_clips(self) -> int:
        return self._draw.total

    def draw(self, step: int) -> list[tuple[str, int]]:
        """The (episode, start) pairs of batch ``step`` for this rank."""
        return [(self.names[e], s) for e, s in self._draw.draw(step)]

    def batch(self, step: int) -> dict:
        return self.collate(self.draw(step))

    def collate(self, picks: list[tuple[str, int]]) -> dict:
        """Batch dict: latents (B,T,N,C) standardised float32, actions (B,T,S,D), action_mask (B,T,S),
        rewards (B,T), continues (B,T), and ``provenance`` [(episode, start)]."""
        T = self.clip_len
        cols: dict[str, list] = {k: [] for k in ("latents", "actions", "action_mask", "rewards", "continues")}
        for name, s in picks:
            e = self.cache.episode(name)
            cols["latents"].append(np.asarray(e.latents[s : s + T], dtype=np.float32))
            cols["actions"].append(np.asarray(e.actions[s : s + T]))
            cols["action_mask"].append(np.asarray(e.action_mask[s : s + T]))
            cols["rewards"].append(np.asarray(e.rewards[s : s + T]))
            cols["continues"].append(np.asarray(e.continues[s : s + T]))
        out = {k: torch.from_numpy(np.stack(v)).to(self.device) for k, v in cols.items()}
        out["latents"] = self.cache.standardise(out["latents"])
        out["provenance"] = list(picks)
        return out
