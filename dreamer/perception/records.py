"""Question-answer records about Crafter episodes, aligned with latent steps.

A record is one JSON object per line::

    {"episode": "ep_0003", "step": 12, "frame": 96, "kind": "inventory",
     "prompt": "How many wood does the player have?", "answer": "3"}

``step`` is a latent step k; the question is about the state at frame min(S·k, T), the last frame
latent k covers (docs/design.md §2–3; S = the cache's chunk length), so the world tokens of steps ≤ k
hold everything needed to answer it. Three kinds of question:

- ``inventory``: the count of one inventory entry (health/food/drink/energy levels, materials, tools);
- ``achievement``: which achievement counters went up during the chunk that led to latent k, i.e.
  between frames min(S·(k−1), T) and min(S·k, T) (names sorted and joined by ", "; "nothing" if none);
- ``death``: whether the player is about to die: "yes" if the episode ended in a terminal state
  (death, for Crafter) within ``death_horizon`` latent steps after k (the terminal step included).

Answers like "nothing" and "no" dominate; ``nothing_keep`` / ``no_keep`` subsample them.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamer.atomic import atomic_write_bytes

VITALS = ("health", "food", "drink", "energy")
KINDS = ("inventory", "achievement", "death")


@dataclass
class QAConfig:
    chunk_len: int = 8  # S, latent step k covers frames up to S·k
    inventory_per_step: int = 1  # inventory questions per latent step (distinct items)
    death_horizon: int = 2  # latent steps before a terminal state that count as "about to die"
    nothing_keep: float = 0.25  # fraction of "nothing" achievement answers kept
    no_keep: float = 0.25  # fraction of "no" death answers kept
    kinds: tuple[str, ...] = KINDS
    seed: int = 0

    def __post_init__(self):
        if self.chunk_len < 1:
            raise ValueError(f"QAConfig.chunk_len must be >= 1, got {self.chunk_len}")
        if self.death_horizon < 0:
            raise ValueError(f"QAConfig.death_horizon must be >= 0, got {self.death_horizon}")
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"QAConfig.kinds: unknown kinds {sorted(unknown)} (known: {KINDS})")


def num_latent_steps(num_env_steps: int, chunk_len: int) -> int:
    """L = 1 + ceil(T / S): latent 0 is frame 0 alone, latent k covers frames S(k-1)+1 … S·k."""
    return 1 + math.ceil(num_env_steps / chunk_len)


def latent_frame(k: int, num_env_steps: int, chunk_len: int) -> int:
    """The last frame latent step k covers: min(S·k, T) (the tail chunk is padded with the last frame)."""
    return min(chunk_len * k, num_env_steps)


def inventory_question(item: str) -> str:
    if item in VITALS:
        return f"What is the player's {item} level?"
    return f"How many {item.replace('_', ' ')} does the player have?"


ACHIEVEMENT_QUESTION = "What did the player just achieve?"
DEATH_QUESTION = "Is the player about to die?"


def _names(episode: Any, meta_key: str, extra_key: str, array: np.ndarray, where: str) -> list[str]:
    names = episode.meta.get(meta_key)
    if names is None:
        raise ValueError(f"{where}: meta['{meta_key}'] is missing "
                         f"(needed to name the columns of extras['{extra_key}'])")
    if len(names) != array.shape[1]:
        raise ValueError(f"{where}: meta['{meta_key}'] has {len(names)} names for {array.shape[1]} columns "
                         f"of extras['{extra_key}']")
    return [str(n) for n in names]


def _extra(episode: Any, key: str, where: str) -> np.ndarray:
    if key not in episode.extras:
        raise ValueError(f"{where}: extras['{key}'] is missing (have {sorted(episode.extras)})")
    x = np.asarray(episode.extras[key])
    t1 = episode.frames.shape[0] if getattr(episode, "frames", None) is not None else len(episode.rewards) + 1
    if x.ndim != 2 or x.shape[0] != t1:
        raise ValueError(f"{where}: extras['{key}'] must be (T+1={t1}, K), got {x.shape}")
    return x


def make_qa_records(episode: Any, name: str, cfg: QAConfig | None = None) -> list[dict]:
    """Records for one episode object (fields as ``dreamer.data.episode.Episode``), about latent steps 0…L-1."""
    cfg = cfg or QAConfig()
    where = f"episode '{name}'"
    T = len(episode.rewards)
    inv = _extra(episode, "inventory", where)
    ach = _extra(episode, "achievements", where)
    inv_names = _names(episode, "inventory_names", "inventory", inv, where)
    ach_names = _names(episode, "achievement_names", "achievements", ach, where)
    S, L = cfg.chunk_len, num_latent_steps(T, cfg.chunk_len)
    rng = np.random.default_rng([cfg.seed, zlib.crc32(name.encode())])
    records: list[dict] = []

    def add(k: int, kind: str, prompt: str, answer: str) -> None:
        records.append({"episode": name, "step": k, "frame": latent_frame(k, T, S), "kind": kind,
                        "prompt": prompt, "answer": answer})

    for k in range(L):
        f = latent_frame(k, T, S)
        if "inventory" in cfg.kinds:
            n_items = min(cfg.inventory_per_step, len(inv_names))
            for i in rng.choice(len(inv_names), size=n_items, replace=False):
                add(k, "inventory", inventory_question(inv_names[i]), str(int(inv[f, i])))
        if "achievement" in cfg.kinds and k > 0:
            f_prev = latent_frame(k - 1, T, S)
            gained = sorted(ach_names[j] for j in np.nonzero(ach[f] > ach[f_prev])[0])
            answer = ", ".join(gained) if gained else "nothing"
            if gained or rng.random() < cfg.nothing_keep:
                add(k, "achievement", ACHIEVEMENT_QUESTION, answer)
        if "death" in cfg.kinds:
            dying = bool(episode.terminated) and (L - 1 - k) <= cfg.death_horizon
            if dying or rng.random() < cfg.no_keep:
                add(k, "death", DEATH_QUESTION, "yes" if dying else "no")
    return records


REQUIRED_KEYS = ("episode", "step", "prompt", "answer")


def write_records(path: str | os.PathLike, records: Iterable[dict]) -> Path:
    """Write JSONL atomically (temporary file, then rename)."""
    return atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in records).encode())


def read_records(path: str | os.PathLike) -> list[dict]:
    """Read JSONL records; a bad line raises ValueError naming the file and line."""
    out = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not JSON ({e})") from e
            missing = [k for k in REQUIRED_KEYS if k not in r]
            if missing:
                raise ValueError(f"{path}:{lineno}: record lacks {missing}")
            if not isinstance(r["step"], int) or r["step"] < 0:
                raise ValueError(f"{path}:{lineno}: 'step' must be a non-negative int, got {r['step']!r}")
            out.append(r)
    return out
