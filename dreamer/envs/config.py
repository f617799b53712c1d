"""Typed configs for environments and data collection (validated on construction)."""

from __future__ import annotations

from dataclasses import dataclass

POLICIES = ("scripted", "random")


@dataclass
class EnvConfig:
    """Which environment to build and how its frames look.

    env_id: "crafter" or any gymnasium id whose observations are images or that renders ``rgb_array``.
    size: frames are size×size RGB uint8 (Crafter renders natively at that size, others are resized).
    max_steps: time limit; reaching it ends the episode with ``truncated=True``.
    crafter_area / crafter_view: Crafter world size and view grid in tiles (the game's defaults are
        (64, 64) and (9, 9)); a smaller area makes world generation much faster (tests).
    """

    env_id: str = "crafter"  # "crafter" or a gymnasium id with image observations
    size: int = 64  # frames are size x size RGB uint8
    max_steps: int = 1000  # time limit (truncated=True)
    crafter_area: tuple[int, int] = (64, 64)  # Crafter world size in tiles (smaller: faster resets)
    crafter_view: tuple[int, int] = (9, 9)  # Crafter view grid in tiles

    def __post_init__(self):
        if not isinstance(self.env_id, str) or not self.env_id.strip():
            raise ValueError(f"EnvConfig.env_id must be a non-empty string, got {self.env_id!r}")
        if not isinstance(self.size, int) or self.size < 8:
            raise ValueError(f"EnvConfig.size must be an int >= 8, got {self.size!r}")
        if not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"EnvConfig.max_steps must be an int >= 1, got {self.max_steps!r}")
        self.crafter_area = _pair("crafter_area", self.crafter_area, minimum=16)
        self.crafter_view = _pair("crafter_view", self.crafter_view, minimum=3)

    @property
    def is_crafter(self) -> bool:
        return self.env_id.lower() == "crafter"


@dataclass
class CollectConfig:
    """How many episodes to collect and with which behaviour policy.

    policy: "scripted" (Crafter only: reads the game's internal state) or "random" (uniform).
    epsilon: probability of a uniformly random action per step mixed into the scripted policy.
    seed: episode i is reset with seed ``seed + i``.
    workers: processes that play episodes in parallel (episode i goes to worker i mod workers, still
        from seed ``seed + i``).
    """

    num_episodes: int = 10  # episodes to collect
    policy: str = "scripted"  # "scripted" (Crafter only) or "random"
    epsilon: float = 0.2  # random-action probability mixed into the scripted policy
    seed: int = 0  # episode i is reset with seed + i
    workers: int = 1  # processes that play episodes in parallel

    def __post_init__(self):
        if not isinstance(self.num_episodes, int) or self.num_episodes < 0:
            raise ValueError(f"CollectConfig.num_episodes must be an int >= 0, got {self.num_episodes!r}")
        if self.policy not in POLICIES:
            raise ValueError(f"CollectConfig.policy must be one of {POLICIES}, got {self.policy!r}")
        if not 0.0 <= float(self.epsilon) <= 1.0:
            raise ValueError(f"CollectConfig.epsilon must be in [0, 1], got {self.epsilon!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"CollectConfig.seed must be an int >= 0, got {self.seed!r}")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"CollectConfig.workers must be an int >= 1, got {self.workers!r}")
        self.epsilon = float(self.epsilon)


def _pair(name: str, value, minimum: int) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"EnvConfig.{name} must be a pair of ints, got {value!r}") from e
    if a < minimum or b < minimum:
        raise ValueError(f"EnvConfig.{name} must be >= {minimum} in both dims, got {value!r}")
    return a, b
