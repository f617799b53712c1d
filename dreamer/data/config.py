"""Where episodes and the latent cache live, and how training clips are cut."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DataConfig:
    episodes_dir: str = "data/crafter_tiny/episodes"  # episode .npz files (collected or converted)
    cache_dir: str = "data/crafter_tiny/cache"  # latent cache built from episodes_dir
    val_fraction: float = 0.1  # episodes held out (by episode, never by clip)
    clip_len: int = 16  # latent steps per training clip
    split_seed: int = 0  # seed of the train / held-out split (by episode name)
    collect: bool = True  # collect episodes with the env/collect settings when episodes_dir is empty

    def __post_init__(self):
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.clip_len < 2:
            raise ValueError(f"data.clip_len must be >= 2, got {self.clip_len}")
